"""Selecting language-specific neurons from the statistics.

:func:`lape_select` is LAPE (Language Activation Probability Entropy, Tang et al.
2024) exactly as the reference code computes it, from the counts alone:

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

:func:`mean_difference_select` is an alternative detector with the same output: the
standardised difference between a language's mean activation and the others'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .errors import LangNeuronsError
from .stats import Statistics


@dataclass(frozen=True)
class LapeConfig:
    """LAPE's three thresholds, with the reference defaults."""

    top_rate: float = 0.01
    filter_rate: float = 0.95
    activation_bar_ratio: float = 0.95

    def __post_init__(self) -> None:
        for name in ("top_rate", "filter_rate", "activation_bar_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise LangNeuronsError(f"{name} must be in (0, 1], got {value}.")


@dataclass(frozen=True)
class MeanDiffConfig:
    """Settings of the mean-difference detector.

    ``top_rate`` is the share of all neurons selected in total (split evenly between
    languages, as LAPE's budget); ``min_effect`` is the smallest standardised mean
    difference a selected neuron must have.
    """

    top_rate: float = 0.01
    min_effect: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.top_rate <= 1.0:
            raise LangNeuronsError(f"top_rate must be in (0, 1], got {self.top_rate}.")
        if self.min_effect < 0:
            raise LangNeuronsError(f"min_effect must be >= 0, got {self.min_effect}.")


@dataclass
class Selection:
    """Neurons selected per language and layer, with the scores behind them.

    ``masks[k][l]`` is a sorted int64 tensor of neuron indices of language ``k`` in
    layer ``l``: the reference's saved format.  ``scores`` holds per-neuron tensors for
    display (for LAPE: ``probabilities`` [L, N, K], ``entropy`` [L, N] with +inf for
    excluded neurons).
    """

    method: str
    languages: list[str]
    masks: list[list[torch.Tensor]]
    settings: dict[str, Any]
    thresholds: dict[str, float] = field(default_factory=dict)
    scores: dict[str, torch.Tensor] = field(default_factory=dict)

    def counts(self) -> torch.Tensor:
        """Number of selected neurons, int64 ``[layers, languages]``."""
        return torch.tensor(
            [
                [len(self.masks[k][layer]) for k in range(len(self.languages))]
                for layer in range(len(self.masks[0]) if self.masks else 0)
            ],
            dtype=torch.int64,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``neurons.json`` document."""
        return {
            "method": self.method,
            "settings": self.settings,
            "thresholds": self.thresholds,
            "languages": self.languages,
            "neurons": {
                code: {
                    "total": int(sum(len(t) for t in self.masks[k])),
                    "per_layer": [t.tolist() for t in self.masks[k]],
                }
                for k, code in enumerate(self.languages)
            },
            "distinct_total": int(self.union_size()),
        }

    def union_size(self) -> int:
        if not self.masks:
            return 0
        total = 0
        for layer in range(len(self.masks[0])):
            total += len(torch.unique(torch.cat([m[layer] for m in self.masks])))
        return total


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


def _masks_from_members(
    members: torch.Tensor, layers: torch.Tensor, neurons: torch.Tensor, num_layers: int
) -> list[list[torch.Tensor]]:
    """``members`` [C, K] bool for candidates at (layers[c], neurons[c]) -> masks[k][l]."""
    masks: list[list[torch.Tensor]] = []
    for k in range(members.shape[1]):
        chosen = members[:, k]
        lk, nk = layers[chosen], neurons[chosen]
        masks.append(
            [torch.sort(nk[lk == layer]).values.to(torch.int64) for layer in range(num_layers)]
        )
    return masks


def lape_select(
    over_zero: torch.Tensor,
    tokens: torch.Tensor,
    config: LapeConfig | None = None,
    languages: list[str] | None = None,
) -> Selection:
    """LAPE on counts: ``over_zero`` int [L, N, K], ``tokens`` int [K] -> :class:`Selection`."""
    config = config or LapeConfig()
    if over_zero.dim() != 3 or tokens.dim() != 1 or over_zero.shape[2] != tokens.shape[0]:
        raise LangNeuronsError(
            f"over_zero must be [layers, neurons, languages] and tokens [languages]; got "
            f"{tuple(over_zero.shape)} and {tuple(tokens.shape)}."
        )
    if bool((tokens <= 0).any()):
        raise LangNeuronsError("Every language needs at least one counted token.")
    num_layers, num_neurons, num_langs = over_zero.shape
    languages = languages or [str(k) for k in range(num_langs)]
    probs = over_zero.to(torch.float32) / tokens.to(torch.float32)
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
        masks=_masks_from_members(members, layers, neurons, num_layers),
        settings=asdict(config),
        thresholds={"filter_value": tau, "activation_bar": bar, "candidates": int(top)},
        scores={"probabilities": probs, "entropy": entropy},
    )


def mean_difference_select(stats: Statistics, config: MeanDiffConfig | None = None) -> Selection:
    """Per language, the neurons whose mean activation stands out most from the others'.

    Effect ``d = (mean_k - mean_rest) / sqrt((var_k + var_rest) / 2)``, computed from
    the sums and squared sums of one pass.  Each language takes its top
    ``round(top_rate * L * N / K)`` neurons with ``d >= min_effect``.
    """
    config = config or MeanDiffConfig()
    num_layers, num_neurons, num_langs = stats.over_zero.shape
    if num_langs < 2:
        raise LangNeuronsError("The mean-difference detector needs at least two languages.")
    n = stats.tokens.to(torch.float64)
    sums, sq = stats.activation_sum, stats.activation_sq_sum
    mean = sums / n
    var = (sq / n - mean * mean).clamp_min(0)
    rest_n = n.sum() - n
    rest_mean = (sums.sum(-1, keepdim=True) - sums) / rest_n
    rest_var = ((sq.sum(-1, keepdim=True) - sq) / rest_n - rest_mean * rest_mean).clamp_min(0)
    effect = ((mean - rest_mean) / ((var + rest_var) / 2 + 1e-12).sqrt()).to(torch.float32)
    per_language = round(config.top_rate * num_layers * num_neurons / num_langs)
    masks = []
    for k in range(num_langs):
        scores = effect[..., k].flatten()
        order = torch.sort(-scores, stable=True).indices[:per_language]
        order = order[scores[order] >= config.min_effect]
        layers, neurons = order // num_neurons, order % num_neurons
        masks.append([torch.sort(neurons[layers == layer]).values for layer in range(num_layers)])
    return Selection(
        method="mean-diff",
        languages=list(stats.languages),
        masks=masks,
        settings=asdict(config),
        thresholds={"per_language": per_language},
        scores={"probabilities": stats.probabilities(), "effect": effect},
    )


def select(stats: Statistics, method: str = "lape", **settings: float) -> Selection:
    """Run a detector by name (``"lape"`` or ``"mean-diff"``) on ``stats``."""
    config_type = {"lape": LapeConfig, "mean-diff": MeanDiffConfig}.get(method)
    if config_type is None:
        raise LangNeuronsError(
            f"Unknown selection method {method!r}. Use one of: {', '.join(METHODS)}."
        )
    try:
        config = config_type(**settings)
    except TypeError:
        allowed = ", ".join(config_type.__dataclass_fields__)
        raise LangNeuronsError(
            f"Method {method!r} takes the settings {allowed}; got {', '.join(settings)}."
        ) from None
    if isinstance(config, LapeConfig):
        return lape_select(stats.over_zero, stats.tokens, config, languages=stats.languages)
    return mean_difference_select(stats, config)


METHODS = ("lape", "mean-diff")
