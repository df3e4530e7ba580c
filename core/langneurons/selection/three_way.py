"""Language-specific, language-related and general neurons (Zhang et al., AAAI 2026),
with the automatic search over the entropy score's weight.

From the activation probabilities ``p`` [L, N, K] alone:

1. each neuron's score is its normalised entropy minus a weighted peak,
   ``H(q) / log K - weight * max_k p / m_K``, with ``q = p / sum_k p`` (uniform when a
   neuron never fires; probabilities floored at 1e-12 before normalising) and
   ``m_K = (1 + 1/2 + ... + 1/K) / K``;
2. the ``round(top_rate * L * N)`` neurons of lowest score are selected;
3. a selected neuron belongs to every language whose ``p`` exceeds the activation bar
   (the value of rank ``round(activation_bar_ratio * P)`` among all ``P`` values);
4. the weight is searched by bisection over ``[0, max_weight]`` down to ``tolerance``:
   the largest it finds for which no selected neuron belongs to every language (0 if
   none), unless ``fixed_weight``.

A larger weight favours neurons that fire often, which are the ones shared by many
languages; the search stops just before neurons of all languages get in.  Selected
neurons of one language are *language-specific*, of two or more (not all) *related*;
neurons whose ``p`` exceeds the bar for every language, selected or not, are *general*.
``scores["kind"]`` holds 0 (none), 1 (specific), 2 (related), 3 (general) per neuron.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..config import setting, validate
from ..stats import Statistics
from .base import (
    Selection,
    activation_bar_setting,
    activation_probabilities,
    masks_from_members,
    top_rate_setting,
)

NONE, SPECIFIC, RELATED, GENERAL = 0, 1, 2, 3
KINDS = {SPECIFIC: "language-specific", RELATED: "language-related", GENERAL: "general"}


@dataclass(frozen=True)
class ThreeWayConfig:
    """The split's settings (the authors' defaults, the weight searched)."""

    top_rate: float = top_rate_setting("share of all neurons selected (lowest score first)")
    activation_bar_ratio: float = activation_bar_setting()
    fixed_weight: bool = setting(
        False, "use the given weight instead of searching for it", label="Fixed weight"
    )
    weight: float = setting(
        0.0,
        "weight of a neuron's peak activation probability in its score (with fixed weight)",
        minimum=0.0,
        step=0.005,
        slider=(0.0, 0.2),
        label="Weight of the peak (with fixed weight)",
    )
    max_weight: float = setting(
        0.2, "largest weight the search tries", above=0.0, step=0.01, slider=(0.01, 1.0)
    )
    tolerance: float = setting(
        0.001,
        "the search stops when its interval is this narrow",
        above=0.0,
        maximum=0.1,
        step=0.001,
        slider=(0.001, 0.02),
    )

    def __post_init__(self) -> None:
        validate(self)


def three_way_score(probabilities: torch.Tensor, weight: float) -> torch.Tensor:
    """``H(q) / log K - weight * max_k p / m_K`` per neuron of ``probabilities`` [..., K]."""
    k = probabilities.shape[-1]
    total = probabilities.sum(dim=-1, keepdim=True)
    normed = torch.where(
        total > 0, probabilities / total.clamp_min(1e-30), torch.full_like(probabilities, 1 / k)
    )
    normed = normed.clamp_min(1e-12)
    normed = normed / normed.sum(dim=-1, keepdim=True)
    entropy = -(normed * (normed + 1e-30).log()).sum(dim=-1) / math.log(k)
    harmonic = sum(1 / i for i in range(1, k + 1)) / k
    return entropy - probabilities.max(dim=-1).values * float(weight) / harmonic


def _bar(probabilities: torch.Tensor, ratio: float) -> float:
    flat = probabilities.flatten()
    rank = min(max(round(flat.numel() * ratio), 1), flat.numel())
    return float(flat.kthvalue(rank).values)


def _members(
    probabilities: torch.Tensor, weight: float, top: int, bar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The selected neurons (layers, neurons) and their languages, ``[C, K]`` bool."""
    num_neurons = probabilities.shape[1]
    score = three_way_score(probabilities, weight).flatten()
    order = torch.sort(score, stable=True).indices[:top]
    layers, neurons = order // num_neurons, order % num_neurons
    return layers, neurons, probabilities[layers, neurons] > bar


def appearance(members: torch.Tensor) -> list[int]:
    """How many selected neurons belong to exactly 0, 1, ..., K languages."""
    shared = members.sum(dim=-1)
    return [int((shared == c).sum()) for c in range(members.shape[-1] + 1)]


def search_weight(
    probabilities: torch.Tensor, config: ThreeWayConfig, top: int, bar: float
) -> float:
    """The weight the authors' search finds: bisection over ``[0, max_weight]`` down to
    ``tolerance``, keeping the last weight whose selection has no neuron of every
    language (both ends tried first); 0 when none has."""
    k = probabilities.shape[-1]

    def clean(weight: float) -> bool:
        return appearance(_members(probabilities, weight, top, bar)[2])[k] == 0

    low, high = 0.0, float(config.max_weight)
    best: float | None = None
    if clean(low):
        best = low
    if clean(high):
        best = high
    while high - low > config.tolerance:
        middle = (low + high) / 2
        if clean(middle):
            best = low = middle
        else:
            high = middle
    return best if best is not None else 0.0


def three_way_select(
    over_zero: torch.Tensor,
    tokens: torch.Tensor,
    config: ThreeWayConfig | None = None,
    languages: list[str] | None = None,
) -> Selection:
    """The split on counts: ``over_zero`` int [L, N, K], ``tokens`` int [K]."""
    config = config or ThreeWayConfig()
    probs = activation_probabilities(over_zero, tokens)
    num_layers, num_neurons, num_langs = over_zero.shape
    top = max(round(num_layers * num_neurons * config.top_rate), 1)
    bar = _bar(probs, config.activation_bar_ratio)
    weight = config.weight if config.fixed_weight else search_weight(probs, config, top, bar)
    layers, neurons, members = _members(probs, weight, top, bar)
    kind = torch.zeros(num_layers, num_neurons, dtype=torch.int64)
    kind[(probs > bar).all(dim=-1)] = GENERAL
    shared = members.sum(dim=-1)
    kind[layers[shared == 1], neurons[shared == 1]] = SPECIFIC
    related = (shared > 1) & (shared < num_langs)
    kind[layers[related], neurons[related]] = RELATED
    counts = appearance(members)
    return Selection(
        method="three-way",
        languages=list(languages or [str(k) for k in range(num_langs)]),
        masks=masks_from_members(members, layers, neurons, num_layers),
        settings=asdict(config),
        thresholds={
            "weight": weight,
            "activation_bar": bar,
            "selected": int(top),
            "specific": counts[1],
            "related": sum(counts[2:num_langs]),
            "general": int((kind == GENERAL).sum()),
        },
        scores={
            "probabilities": probs,
            "score": three_way_score(probs, weight),
            "kind": kind,
        },
        score_key="score",
        score_ascending=True,
    )


def three_way_from_statistics(stats: Statistics, config: ThreeWayConfig) -> Selection:
    """:func:`three_way_select` on a :class:`~langneurons.stats.Statistics`."""
    return three_way_select(stats.over_zero, stats.tokens, config, languages=stats.languages)
