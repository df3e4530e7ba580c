"""The vocabulary head of many greedy rows at a third of its price, with the same tokens.

With a class generating at once, the decode loop's batch holds twenty rows and more, and
on a CPU the vocabulary head becomes the dearest product of a step: Gemma 3's head is a
262,144 x 640 matrix, 168M of the model's 268M parameters.  Twenty float32 rows take
about 120 ms there, against 30 ms for the two rows of one pair, so the head alone
decides whether a class waits three times one pair or four.

A greedy row does not need every score, only the largest after its guards and
repetition penalty.  So the head is computed in two passes:

1. **Approximate scores** from a bfloat16 copy of the head (on CPUs with bfloat16
   instructions, about 45 ms for twenty rows), each with a proven error bound: the
   inputs' rounding (``2u`` with ``u = 2**-8``), float32 accumulation and the result's
   rounding, through ``|h . w| <= |h| |w|`` (the head's rows all have nearly the same
   norm, so the largest is used).
2. **Exact float32 scores** for the tokens that can still win: every token whose upper
   bound reaches the row's best lower bound, and every token the repetition penalty may
   change (the tokens read so far).  The rest of the row keeps its approximate score.

The row's token is then chosen as usual (:func:`~langneurons.decoding.choose_tokens`)
and checked: when its exact score (after guards and penalty) reaches the best lower
bound among the tokens the row has not read, no token outside the exact set can beat
it (guards only lower scores, and the penalty touches only tokens read, all exact).
A row that fails the check (its likely tokens all banned, say) is computed again with
the whole float32 head.  The token is therefore the one the float32 head gives, up to
the float rounding any differently sized product has.

Where the copy does not pay (fewer than :data:`FAST_ROWS` rows, a GPU, a head in
another precision, logit soft-capping, sampled rows, or a CPU without fast bfloat16
products: the first eligible pass times both ways once per model), the float32 head is
used as before.  The copy costs half the head's memory (335 MB for Gemma 3 270M), made
on first use only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .models import LoadedModel

FAST_ROWS = 8
"""Fewest rows a pass needs for the two-pass head (fewer gain nothing measurable)."""

MOST_EXACT = 4096
"""Most tokens per row computed exactly before the whole head is cheaper."""

_UNIT = 2.0**-8  # bfloat16's unit roundoff
_ACCUMULATE = 2.0**-24  # float32's


@dataclass
class HeadScores:
    """One forward pass's scores at the last position: ``matrix`` ``[rows, vocab]``
    (float32) and, when they were bounded, ``floor`` ``[rows]``: a greedy token whose
    score reaches it is exactly the float32 head's choice (see the module's text).
    ``hidden`` keeps the rows' final hidden states for recomputing a row that fails."""

    matrix: torch.Tensor
    hidden: torch.Tensor
    floor: torch.Tensor | None = None


@dataclass
class _Copy:
    weight: torch.Tensor  # bfloat16 [vocab, hidden]
    norm: float  # the largest row norm of the float32 head, rounded up
    fast: bool | None = None  # None until timed once


_LOCK = threading.Lock()


def _head_weight(lm: LoadedModel) -> torch.Tensor | None:
    """The float32 CPU weight of a plain linear head, or None when the head is another
    kind (bias, soft-capping, another device or precision)."""
    head = lm.model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is not None or weight is None:
        return None
    config = lm.model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text_config, "final_logit_softcapping", None):
        return None
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2:
        return None
    return weight


def _copy(lm: LoadedModel, weight: torch.Tensor) -> _Copy:
    with _LOCK:
        found: _Copy | None = lm.__dict__.get("_greedy_head")
        if found is None:
            weight = weight.detach()
            norm = float(weight.norm(dim=1).max()) * (1 + 1e-3)
            found = lm.__dict__["_greedy_head"] = _Copy(weight.to(torch.bfloat16), norm)
        return found


def exact_scores(lm: LoadedModel, hidden: torch.Tensor) -> HeadScores:
    """Every score from the model's own head (rows contiguous: choosing a token reads a
    whole row, and the CPU head gives them transposed)."""
    return HeadScores(lm.logits(hidden).contiguous(), hidden)


def bounded_scores(
    weight: torch.Tensor,
    copy: torch.Tensor,
    norm: float,
    hidden: torch.Tensor,
    keep: Sequence[Iterable[int]],
) -> HeadScores | None:
    """The two-pass scores of ``hidden`` ``[rows, d]`` for the float32 head ``weight``,
    from its bfloat16 ``copy`` whose rows have norms at most ``norm``; ``keep[i]`` are
    tokens row ``i`` needs exactly whatever their score (those a penalty may change).
    None where the bounds leave too many tokens to compute exactly."""
    width = hidden.shape[1]
    approx = torch.nn.functional.linear(hidden.to(torch.bfloat16), copy).float()
    low, high = torch.aminmax(approx, dim=1)
    gamma = width * _ACCUMULATE / (1 - width * _ACCUMULATE)
    scale = (2 * _UNIT + _UNIT**2 + 2 * gamma * (1 + _UNIT) ** 2) * (1 + 1e-3)
    largest = torch.maximum(low.abs(), high.abs())
    error = scale * hidden.norm(dim=1) * norm + _UNIT / (1 - _UNIT) * largest * (1 + 1e-3)
    kept = [sorted(found) or [0] for found in keep]
    index = _padded(kept)
    # The kept tokens are computed exactly below; the floor comes from the others, so a
    # penalised favourite does not raise it above what an unpenalised token can reach.
    approx.scatter_(1, index, -float("inf"))
    floor = approx.max(dim=1).values - error  # some unkept token scores at least this
    likely = (approx >= (floor - error)[:, None]).nonzero()
    if not bool(torch.isfinite(floor).all()) or len(likely) > MOST_EXACT * len(kept):
        return None  # no useful bound (a flat or broken row): every score instead
    for row, token in likely.tolist():
        kept[row].append(token)
    index = _padded(kept)
    exact = torch.einsum("nkd,nd->nk", weight[index], hidden)
    approx.scatter_(1, index, exact)  # padding repeats a token: the same value again
    return HeadScores(approx, hidden, floor)


def _padded(lists: list[list[int]]) -> torch.Tensor:
    """``lists`` as one index matrix, each row padded with its own first token."""
    longest = max(len(found) for found in lists)
    return torch.tensor([found + [found[0]] * (longest - len(found)) for found in lists])


def head_scores(
    lm: LoadedModel, hidden: torch.Tensor, keep: Sequence[Iterable[int]] | None
) -> HeadScores:
    """Scores for choosing the next tokens of ``hidden``'s rows: bounded (see the
    module's text) when ``keep`` is given (every row greedy; ``keep[i]`` the tokens row
    ``i`` has read) and the two-pass head pays here, every score otherwise."""
    if keep is None or hidden.shape[0] < FAST_ROWS or hidden.dim() != 2:
        return exact_scores(lm, hidden)
    weight = _head_weight(lm)
    if weight is None or hidden.device.type != "cpu" or hidden.dtype != torch.float32:
        return exact_scores(lm, hidden)
    copy = _copy(lm, weight)
    if copy.fast is False:
        return exact_scores(lm, hidden)
    if copy.fast is None:  # time both ways once, on this machine's own products
        start = time.perf_counter()
        bounded = bounded_scores(weight, copy.weight, copy.norm, hidden, keep)
        middle = time.perf_counter()
        exact = exact_scores(lm, hidden)
        if bounded is None:
            return exact  # no verdict from a row without bounds
        copy.fast = time.perf_counter() - middle > 1.25 * (middle - start)
        if not copy.fast:
            with _LOCK:  # keep the verdict, not the copy's memory
                lm.__dict__["_greedy_head"] = _Copy(copy.weight[:0], copy.norm, False)
            return exact
        return bounded
    bounded = bounded_scores(weight, copy.weight, copy.norm, hidden, keep)
    return bounded if bounded is not None else exact_scores(lm, hidden)


def unproven(
    logits: torch.Tensor, floor: torch.Tensor | None, tokens: Sequence[int | BaseException]
) -> list[int]:
    """Rows of ``logits`` (bounded scores, already guarded and penalised by the choice)
    whose chosen token (``tokens``; an exception is no choice) the bounds ``floor`` do
    not prove: the rows to choose again from every score."""
    if floor is None:
        return []
    rows = [k for k, token in enumerate(tokens) if not isinstance(token, BaseException)]
    if not rows:
        return []
    index = torch.tensor(rows)
    chosen = torch.tensor([int(tokens[k]) for k in rows])  # type: ignore[arg-type]
    ok = logits[index, chosen] >= floor.to(logits.device)[index]
    return [k for k, good in zip(rows, ok.tolist(), strict=True) if not good]
