"""Which language a text is in, offline.

Uses ``py3langid`` (a maintained fork of langid.py, Lui & Baldwin 2012): a naive
Bayes model over byte n-grams for 97 languages, shipped inside the package as a
numpy file (no pickle, no download).  Its accuracy on this project's held-out UDHR
paragraphs is measured by the tests and stated in docs/limits.md.
"""

from __future__ import annotations

import copy
import re
import string
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


LINE_MIN_TOKENS = 5
"""A line is judged when it has this many tokens (words; for Chinese and Japanese, the
estimate of :func:`line_tokens`): the Language Confusion Benchmark's cut."""
LINE_MIN_PROBABILITY = 0.3
"""A line counts as identified only above this probability (the benchmark's threshold on
fastText's score); below it, as an unknown language."""

_DROPPED = str.maketrans("", "", string.punctuation + "،")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]+")
_PIECES = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]+|[^\W_]+|\S"
)


def normalize_lines(text: str) -> list[str]:
    """The benchmark's normalisation, then its lines: the text up to a new ``Q:`` turn,
    stripped, without ASCII punctuation or the Arabic comma, a dash as a space, split at
    line breaks."""
    text = text.split("\nQ:")[0].strip().translate(_DROPPED).replace("\u2014", " ")
    return text.split("\n")


def line_tokens(line: str, target: str) -> int:
    """How many tokens the benchmark counts in ``line``: words between spaces; for
    Chinese and Japanese (written without spaces) an estimate of a word segmenter's
    count: each run of ideographs or kana counts one token per two characters, each
    other word or sign one (the cut at five agrees with jieba's and MeCab's counts on
    99.5% of the benchmark's Japanese and Chinese lines; docs/steering.md)."""
    if target not in ("ja", "zh"):
        return len(line.split())
    pieces = _PIECES.findall(line)
    count = sum(-(-len(p) // 2) if _CJK.fullmatch(p) else 1 for p in pieces)
    return count + (line.count(" ") if target == "zh" else 0)


def line_verdict(text: str, target: str) -> bool | None:
    """The Language Confusion Benchmark's line-level check of one response (Marchisio et
    al. 2024): normalised and split into lines, lines under :data:`LINE_MIN_TOKENS`
    tokens ignored; ``True`` when every remaining line is identified as ``target``
    (above :data:`LINE_MIN_PROBABILITY`), ``False`` when one is not, ``None`` when no
    line is long enough to judge (the benchmark skips such a response)."""
    judged = [
        line for line in normalize_lines(text) if line_tokens(line, target) >= LINE_MIN_TOKENS
    ]
    if not judged:
        return None
    for line in judged:
        code, probability = detect_language(line)
        if code != target or probability <= LINE_MIN_PROBABILITY:
            return False
    return True


def line_pass_rate(texts: Iterable[str], target: str) -> float:
    """Share of the judged responses whose every line is in ``target``: the benchmark's
    line-level pass rate (responses with no line to judge are left out; 1.0 when none
    is judged, as the benchmark's code gives)."""
    verdicts = [v for v in (line_verdict(t, target) for t in texts) if v is not None]
    return sum(verdicts) / len(verdicts) if verdicts else 1.0
