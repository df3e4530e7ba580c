"""Which language a text is in, offline.

Uses ``py3langid`` (a maintained fork of langid.py, Lui & Baldwin 2012): a naive
Bayes model over byte n-grams for 97 languages, shipped inside the package as a
numpy file (no pickle, no download).  Its accuracy on this project's held-out UDHR
paragraphs is measured by the tests and stated in docs/limits.md.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _model() -> Any:
    """The identifier over every language, read from its file once (about a second)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@lru_cache(maxsize=64)
def _identifier(candidates: tuple[str, ...] | None) -> Any:
    """An identifier restricted to ``candidates``: a shallow copy of the loaded model whose
    restriction replaces (never changes) the model's arrays, so no file is read again."""
    base = _model()
    if not candidates:
        return base
    known = set(base.nb_classes)
    usable = [c for c in candidates if c in known]
    if not usable:
        return base
    identifier = copy.copy(base)
    identifier.set_languages(usable)
    return identifier


def supported_languages() -> list[str]:
    """Codes the identifier knows."""
    return sorted(_identifier(None).nb_classes)


def detect_language(text: str, candidates: Iterable[str] | None = None) -> tuple[str | None, float]:
    """``(code, probability)`` of ``text``'s language, or ``(None, 0.0)`` for empty text.

    ``candidates`` restricts the answer to those codes (those the identifier knows),
    which helps on short texts when the possible languages are known.
    """
    if not text or not text.strip():
        return None, 0.0
    key = tuple(sorted(set(candidates))) if candidates else None
    with _LOCK:  # building an identifier is not thread-safe; classifying is cheap
        identifier = _identifier(key)
        code, probability = identifier.classify(text)
    return str(code), float(probability)


MIN_LINE_WORDS = 5
MIN_LINE_CHARS = 15
"""A line is judged on its own when it has this many words or characters."""


def identified_as(text: str, target: str) -> bool:
    """Whether ``text`` as a whole is identified as ``target`` (among every language)."""
    code, _ = detect_language(text)
    return code == target


def passes_lines(text: str, target: str) -> bool:
    """Every line long enough to judge is identified as ``target`` (the whole text when
    no line is long enough); empty text fails: the Language Confusion Benchmark's
    line-level pass."""
    lines = [line.strip() for line in text.splitlines()]
    judged = [
        line for line in lines if len(line.split()) >= MIN_LINE_WORDS or len(line) >= MIN_LINE_CHARS
    ]
    if not judged:
        judged = [text.strip()] if text.strip() else []
    return bool(judged) and all(identified_as(line, target) for line in judged)
