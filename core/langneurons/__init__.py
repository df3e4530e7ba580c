"""LangNeurons: find, see and switch the language-specific neurons of language models.

The package is a library: importing it loads no model and touches no file.  The
main entry points live in submodules and are re-exported lazily here:

- :func:`langneurons.models.load_model` loads the embedded default or any causal LM;
- :func:`langneurons.corpus.load_corpus` reads the embedded UDHR or a folder of texts;
- :func:`langneurons.pipeline.compute` collects statistics, selects neurons, writes a run;
- :func:`langneurons.selection.lape_select` is the LAPE rule on counts alone.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "langneurons.models",
    "LoadedModel": "langneurons.models",
    "load_corpus": "langneurons.corpus",
    "Corpus": "langneurons.corpus",
    "compute": "langneurons.pipeline",
    "ComputeResult": "langneurons.pipeline",
    "lape_select": "langneurons.selection",
    "LapeConfig": "langneurons.selection",
    "Statistics": "langneurons.stats",
    "read_run": "langneurons.results",
    "LangNeuronsError": "langneurons.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langneurons' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
