"""The selected neurons as files other tools read: JSON, CSV and the reference ``.pth``.

The same bytes are written by ``langneurons compute`` into a run folder
(``neurons.json``, ``activation_mask.pth``) and offered for download by the dashboard,
so a file from either opens anywhere the other does.

>>> import torch
>>> from langneurons.selection import Selection
>>> selection = Selection("lape", ["en", "fr"], [[torch.tensor([3])], [torch.tensor([1, 3])]], {})
>>> print(neurons_csv(selection), end="")
language,layer,neuron
en,0,3
fr,0,1
fr,0,3
"""

from __future__ import annotations

import json
from typing import Any

from .results import corpus_label, mask_bytes
from .selection import Selection
from .stats import Statistics
from .tables import neurons_table

__all__ = ["mask_bytes", "neurons_csv", "neurons_document", "neurons_json"]


def neurons_document(selection: Selection, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """``neurons.json``: method, settings, thresholds, and per language its neurons per
    layer; with a run's ``meta``, also the model and corpus they were found with."""
    document = selection.to_json()
    if meta is not None:
        document["model"] = meta.get("model", {})
        document["corpus"] = corpus_label(meta)
    return document


def neurons_json(selection: Selection, meta: dict[str, Any] | None = None) -> str:
    """:func:`neurons_document` as indented JSON text."""
    return json.dumps(neurons_document(selection, meta), indent=2, ensure_ascii=False) + "\n"


def neurons_csv(selection: Selection, statistics: Statistics | None = None) -> str:
    """One ``language,layer,neuron`` row per selected neuron and language (with the
    statistics, also the detector's score and each language's activation probability:
    :func:`langneurons.tables.neurons_table`)."""
    return str(neurons_table(selection, statistics).to_csv(index=False, lineterminator="\n"))
