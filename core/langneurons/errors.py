"""Errors that carry a message a user can act on.

Every error raised on bad input derives from :class:`LangNeuronsError`; the CLI
prints its message (what was wrong and what to do) without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LangNeuronsError(Exception):
    """Base class: bad input or an unusable resource, with a message that says what to do."""


class ModelLoadError(LangNeuronsError):
    """The model could not be found or loaded."""


class UnsupportedModelError(LangNeuronsError):
    """The model's family has no adapter naming where its neurons live."""


class CorpusError(LangNeuronsError):
    """A corpus, a language code or a text is unusable."""


class CacheError(LangNeuronsError):
    """A cache entry could not be read or written."""


class ResultsError(LangNeuronsError):
    """An output folder is missing, incomplete or inconsistent."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
