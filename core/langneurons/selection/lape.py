"""LAPE (Language Activation Probability Entropy, Tang et al. 2024), exactly as the
reference code computes it, from the counts alone:

1. ``p = over_zero / n`` (float32), ``q = p / sum_k p`` (0/0 -> 0),
   entropy ``H = -sum_k q log q`` (0 log 0 = 0);
2. ``tau`` = the value of rank ``round(filter_rate * P)`` (1-based, ascending) among all
   ``P`` values of ``p`` over the whole model; a neuron whose ``p`` exceeds ``tau`` for no
   language gets entropy +inf (excluded);
3. the ``round(top_rate * layers * neurons)`` neurons of lowest entropy, over the whole
   model, are candidates;
4. a candidate belongs to every language whose ``p`` exceeds the activation bar, the
   value of rank ``round(activation_bar_ratio * P)`` (equal to ``tau`` by default).

Where the reference leaves a choice open we fix it and say so: equal entropies at
the cut-off are taken in (layer, neuron) order; a rank that rounds to 0 is taken
as 1; every language gets an entry, also one with no neurons.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class LapeConfig:
    """LAPE's three thresholds, with the reference defaults."""

    top_rate: float = top_rate_setting(
        "share of all neurons taken as candidates (lowest entropy first)"
    )
    filter_rate: float = setting(
        0.95,
        "quantile of all activation probabilities a neuron must exceed for some language",
        above=0.0,
        maximum=1.0,
        step=0.005,
        slider=(0.5, 0.999),
        label="Filter rate (quantile)",
    )
    activation_bar_ratio: float = activation_bar_setting()

    def __post_init__(self) -> None:
        validate(self)


def _rank_value(sorted_values: torch.Tensor, ratio: float) -> float:
    """The value of 1-based rank ``round(ratio * P)`` (Python rounding, as the reference)."""
    rank = min(max(round(len(sorted_values) * ratio), 1), len(sorted_values))
    return float(sorted_values[rank - 1])


def lape_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """LAPE entropy over the last axis of ``probabilities`` [..., K] (float32)."""
    normed = probabilities / probabilities.sum(dim=-1, keepdim=True)
    normed = torch.nan_to_num(normed, nan=0.0)
    logs = torch.where(normed > 0, normed.log(), torch.zeros_like(normed))
    return -(normed * logs).sum(dim=-1)


def lape_select(
    over_zero: torch.Tensor,
    tokens: torch.Tensor,
    config: LapeConfig | None = None,
    languages: list[str] | None = None,
) -> Selection:
    """LAPE on counts: ``over_zero`` int [L, N, K], ``tokens`` int [K] -> :class:`Selection`."""
    config = config or LapeConfig()
    probs = activation_probabilities(over_zero, tokens)
    num_layers, num_neurons, num_langs = over_zero.shape
    languages = languages or [str(k) for k in range(num_langs)]
    entropy = lape_entropy(probs)
    flat_sorted = torch.sort(probs.flatten()).values
    tau = _rank_value(flat_sorted, config.filter_rate)
    above = (probs > tau).sum(dim=-1)
    entropy = entropy.masked_fill(above == 0, float("inf"))
    top = round(num_layers * num_neurons * config.top_rate)
    order = torch.sort(entropy.flatten(), stable=True).indices[:top]
    layers, neurons = order // num_neurons, order % num_neurons
    bar = _rank_value(flat_sorted, config.activation_bar_ratio)
    members = probs[layers, neurons] > bar  # [C, K]
    return Selection(
        method="lape",
        languages=list(languages),
        masks=masks_from_members(members, layers, neurons, num_layers),
        settings=asdict(config),
        thresholds={"filter_value": tau, "activation_bar": bar, "candidates": int(top)},
        scores={"probabilities": probs, "entropy": entropy},
        score_key="entropy",
        score_ascending=True,
    )


def lape_from_statistics(stats: Statistics, config: LapeConfig) -> Selection:
    """:func:`lape_select` on a :class:`~langneurons.stats.Statistics`."""
    return lape_select(stats.over_zero, stats.tokens, config, languages=stats.languages)
