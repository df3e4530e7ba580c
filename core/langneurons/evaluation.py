"""Measuring what an intervention changes: held-out NLL and the ablation matrix.

The mean negative log-likelihood per token (natural log) of a language's held-out
text is computed from the body's hidden states with the vocabulary head applied in
chunks of positions, so memory stays bounded even for Gemma's 262k-token vocabulary.

The *ablation matrix* is the paper's main measurement: each language's held-out NLL,
unmodified and with each language's neurons deactivated in turn (rows: the language
whose neurons are off; columns: the language evaluated).  Its diagonal dominating is
the finding that language neurons matter for their language.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .atomic import write_json_file
from .corpus import DEFAULT_EVAL_FRACTION, Corpus, bos_windows, text_ids
from .errors import CorpusError, LangNeuronsError
from .interventions import Intervention, apply, deactivate, language_neurons
from .models import LoadedModel
from .paths import cache_dir
from .progress import ProgressCallback, emit

DEFAULT_EVAL_SEQ_LEN = 256
MIN_EVAL_TOKENS = 8


def eval_windows(
    lm: LoadedModel, text: str, seq_len: int, max_tokens: int | None, language: str = ""
) -> list[torch.Tensor]:
    """``[BOS] + tokens`` windows of held-out text (each window predicts its own tokens)."""
    ids = text_ids(lm.tokenizer, text, max_tokens)
    if len(ids) < MIN_EVAL_TOKENS:
        raise CorpusError(
            f"Language {language!r} has only {len(ids)} held-out tokens; at least "
            f"{MIN_EVAL_TOKENS} are needed to measure NLL. Raise --eval-fraction or add text."
        )
    return bos_windows(ids, getattr(lm.tokenizer, "bos_token_id", None), seq_len)


def mean_nll(
    lm: LoadedModel,
    windows: Sequence[torch.Tensor],
    *,
    intervention: Intervention | None = None,
    batch_size: int = 4,
    chunk_positions: int = 128,
) -> float:
    """Mean NLL per predicted token over ``windows``, optionally under ``intervention``.

    Without a BOS token the first token of each window is context only.
    """
    total, count = 0.0, 0
    by_length: dict[int, list[torch.Tensor]] = {}
    for window in windows:
        by_length.setdefault(len(window), []).append(window)
    device = lm.input_device
    with apply(lm, intervention), torch.inference_mode():
        for length, group in sorted(by_length.items()):
            if length < 2:
                continue
            for start in range(0, len(group), batch_size):
                batch = torch.stack(group[start : start + batch_size]).to(device)
                hidden = lm.body(input_ids=batch, use_cache=False).last_hidden_state
                inputs = hidden[:, :-1].reshape(-1, hidden.shape[-1])
                targets = batch[:, 1:].reshape(-1).to(hidden.device)
                for c in range(0, inputs.shape[0], chunk_positions):
                    logits = lm.logits(inputs[c : c + chunk_positions])
                    # Under a device map the head may sit on another device than the body.
                    chunk_targets = targets[c : c + chunk_positions].to(logits.device)
                    total += float(F.cross_entropy(logits, chunk_targets, reduction="sum"))
                count += targets.numel()
    return total / count if count else math.nan


SCALES = ("nll", "perplexity", "increase")
NLL_UNIT = "mean negative log-likelihood per token (natural log)"


@dataclass
class AblationMatrix:
    """Held-out NLL per token of each language, unmodified (``base[B]``) and with each
    language's neurons deactivated (``deactivated[A][B]``: A's neurons off, B evaluated).

    ``info`` carries what produced it (unit, run folder, held-out source).  The JSON
    document (:meth:`to_json`) is ``{"languages", "base", "deactivated", ...info}``.
    """

    languages: list[str]
    base: dict[str, float]
    deactivated: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)

    def grid(self, scale: str = "nll") -> list[list[float]]:
        """Rows (neurons off) x columns (evaluated) as NLL, perplexity, or the increase
        of NLL over the unmodified model."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}.")
        rows = []
        for off in self.languages:
            row = []
            for code in self.languages:
                value = self.deactivated[off][code]
                if scale == "perplexity":
                    value = math.exp(value)
                elif scale == "increase":
                    value -= self.base[code]
                row.append(value)
            rows.append(row)
        return rows

    def to_frame(self, scale: str = "nll") -> Any:
        """The matrix as a DataFrame: rows ``deactivated`` (the language whose neurons are
        off), columns ``evaluated``, values as :meth:`grid`; an ``unmodified`` first row
        holds the base NLL (perplexity; 0 for the increase)."""
        import pandas as pd

        grid = self.grid(scale)
        base = [
            math.exp(self.base[c]) if scale == "perplexity" else self.base[c]
            for c in self.languages
        ]
        if scale == "increase":
            base = [0.0] * len(self.languages)
        frame = pd.DataFrame(
            [base, *grid], index=["unmodified", *self.languages], columns=list(self.languages)
        )
        frame.index.name, frame.columns.name = "deactivated", "evaluated"
        return frame

    def diagonal_ratio(self) -> float:
        """Mean NLL increase on the diagonal over the mean off the diagonal: how much more
        a language's own neurons matter to it than to the others (``nan`` below 2 languages)."""
        increase = self.grid("increase")
        k = len(self.languages)
        if k < 2:
            return math.nan
        diagonal = sum(increase[i][i] for i in range(k)) / k
        off = sum(increase[i][j] for i in range(k) for j in range(k) if i != j) / (k * k - k)
        return diagonal / off if off else math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "languages": list(self.languages),
            "base": dict(self.base),
            "deactivated": {k: dict(v) for k, v in self.deactivated.items()},
            **self.info,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> AblationMatrix:
        """Read the JSON document back (``langneurons ablation --out`` writes one),
        checked field by field: ``languages`` distinct codes, ``base`` a finite NLL per
        language, ``deactivated`` a finite NLL per pair.  A ``ResultsError`` names the
        field that is wrong."""
        from .corpus import parse_languages
        from .errors import LangNeuronsError, ResultsError

        def numbers(value: Any, field: str) -> dict[str, float]:
            if not isinstance(value, Mapping) or set(value) != set(codes):
                raise ResultsError(
                    f"The ablation matrix's {field} is not one NLL per language "
                    f"({', '.join(codes)}); write it again with `langneurons ablation --out`."
                )
            for code, number in value.items():
                if isinstance(number, bool) or not isinstance(number, int | float):
                    raise ResultsError(f"The ablation matrix's {field}[{code!r}] is not a number.")
                if not math.isfinite(number):
                    raise ResultsError(f"The ablation matrix's {field}[{code!r}] is not finite.")
            return {code: float(value[code]) for code in codes}

        if not isinstance(document, Mapping):
            raise ResultsError("The ablation matrix is not a JSON object.")
        try:
            codes = parse_languages(list(document.get("languages") or []))
        except (LangNeuronsError, TypeError, AttributeError) as exc:
            raise ResultsError(f"The ablation matrix's 'languages' are wrong: {exc}") from exc
        deactivated = document.get("deactivated")
        if not isinstance(deactivated, Mapping) or set(deactivated) != set(codes):
            raise ResultsError(
                "The ablation matrix's 'deactivated' is not one row per language; write it "
                "again with `langneurons ablation --out`."
            )
        info = {k: v for k, v in document.items() if k not in ("languages", "base", "deactivated")}
        return cls(
            codes,
            numbers(document.get("base"), "'base'"),
            {code: numbers(deactivated[code], f"'deactivated'[{code!r}]") for code in codes},
            info,
        )


def ablation_matrix(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    mask_languages: Sequence[str],
    corpus: Corpus | Mapping[str, str],
    *,
    languages: Sequence[str] | None = None,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seq_len: int = DEFAULT_EVAL_SEQ_LEN,
    max_tokens: int | None = None,
    batch_size: int = 4,
    progress: ProgressCallback | None = None,
) -> AblationMatrix:
    """Held-out NLL of each language, unmodified and with each language's neurons off.

    ``corpus`` is a :class:`Corpus` (its held-out part under ``eval_fraction`` is used) or
    the held-out texts themselves, by language (as read from a streamed dataset).

    >>> from langneurons import compute
    >>> from langneurons.corpus import load_corpus
    >>> from langneurons.tiny import tiny_model
    >>> lm = tiny_model()
    >>> chosen = compute(lm, ["en", "fr"], max_tokens=200).selection
    >>> corpus = load_corpus("udhr", ["en", "fr"])
    >>> matrix = ablation_matrix(lm, chosen.masks, chosen.languages, corpus, max_tokens=40)
    >>> matrix.to_frame().index.tolist()
    ['unmodified', 'en', 'fr']
    """
    codes = list(languages or mask_languages)
    texts = (
        {code: corpus.evaluate_text(code, eval_fraction) for code in codes}
        if isinstance(corpus, Corpus)
        else corpus
    )
    windows = {code: eval_windows(lm, texts[code], seq_len, max_tokens, code) for code in codes}
    steps = len(codes) * (len(codes) + 1)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        emit(progress, "evaluate", message, done=done, total=steps)

    base = {}
    for code in codes:
        base[code] = mean_nll(lm, windows[code], batch_size=batch_size)
        tick(f"base {code}: {base[code]:.3f}")
    deactivated: dict[str, dict[str, float]] = {}
    for off in codes:
        off_neurons = deactivate(language_neurons(masks, mask_languages, [off]), off)
        row = {}
        for code in codes:
            row[code] = mean_nll(lm, windows[code], intervention=off_neurons, batch_size=batch_size)
            tick(f"{off} off, {code}: {row[code]:.3f}")
        deactivated[off] = row
    return AblationMatrix(codes, base, deactivated, {"unit": NLL_UNIT})


def cached_ablation_matrix(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    mask_languages: Sequence[str],
    corpus: Corpus,
    *,
    languages: Sequence[str] | None = None,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seq_len: int = DEFAULT_EVAL_SEQ_LEN,
    max_tokens: int | None = None,
    progress: ProgressCallback | None = None,
) -> AblationMatrix:
    """:func:`ablation_matrix`, stored as JSON in the cache keyed by everything it depends
    on (weights, dtype, the neuron sets, the held-out texts and the settings)."""
    codes = list(languages or mask_languages)
    digest = hashlib.sha256()
    digest.update(f"{lm.fingerprint}|{lm.dtype}|{seq_len}|{max_tokens}|{codes}".encode())
    for code in codes:
        digest.update(corpus.evaluate_text(code, eval_fraction).encode())
    for code, per_layer in zip(mask_languages, masks, strict=True):
        digest.update(code.encode())
        for idx in per_layer:
            digest.update(len(idx).to_bytes(4, "little"))
            digest.update(torch.as_tensor(idx, dtype=torch.int64).numpy().tobytes())
    path = cache_dir() / "ablation" / f"{digest.hexdigest()[:32]}.json"
    if path.is_file():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(document, dict) and document.get("languages") == codes:
                emit(progress, "cache", "Ablation matrix found in the cache")
                return AblationMatrix.from_json(document)
        except (OSError, ValueError, RecursionError, LangNeuronsError):
            pass  # unreadable or damaged: recompute and overwrite
    matrix = ablation_matrix(
        lm,
        masks,
        mask_languages,
        corpus,
        languages=codes,
        eval_fraction=eval_fraction,
        seq_len=seq_len,
        max_tokens=max_tokens,
        progress=progress,
    )
    try:
        write_json_file(path, matrix.to_json(), indent=None)
    except OSError as exc:  # the matrix is kept; the next call computes it again
        emit(
            progress,
            "cache",
            f"Cannot cache the ablation matrix in {str(path.parent)!r} "
            f"({exc.strerror or exc}); this result is kept, but not saved for next time.",
        )
    return matrix
