"""What every detector returns: :class:`Selection`, the neurons chosen per language and
layer with the scores behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import setting
from ..errors import LangNeuronsError


def top_rate_setting(help: str) -> Any:
    """The share of all neurons a detector selects (LAPE's ``top_rate``, default 1%)."""
    return setting(
        0.01,
        help,
        above=0.0,
        maximum=1.0,
        step=0.001,
        slider=(0.001, 0.05),
        label="Top rate (share of all neurons)",
    )


def activation_bar_setting() -> Any:
    """The quantile of all activation probabilities a neuron's must exceed to belong to a
    language (LAPE's ``activation_bar_ratio``, default 0.95)."""
    return setting(
        0.95,
        "quantile of all activation probabilities that assigns a selected neuron to a language",
        above=0.0,
        maximum=1.0,
        step=0.005,
        slider=(0.5, 0.999),
        label="Activation bar ratio (quantile)",
    )


def activation_probabilities(over_zero: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``over_zero / tokens`` as float32 [L, N, K], after checking the shapes and that
    every language has tokens."""
    if over_zero.dim() != 3 or tokens.dim() != 1 or over_zero.shape[2] != tokens.shape[0]:
        raise LangNeuronsError(
            f"over_zero must be [layers, neurons, languages] and tokens [languages]; got "
            f"{tuple(over_zero.shape)} and {tuple(tokens.shape)}."
        )
    if bool((tokens <= 0).any()):
        raise LangNeuronsError("Every language needs at least one counted token.")
    return over_zero.to(torch.float32) / tokens.to(torch.float32)


@dataclass
class Selection:
    """Neurons selected per language and layer, with the scores behind them.

    ``masks[k][l]`` is a sorted int64 tensor of neuron indices of language ``k`` in
    layer ``l``: the reference's saved format.  ``scores`` holds per-neuron tensors for
    display (for LAPE: ``probabilities`` [L, N, K], ``entropy`` [L, N] with +inf for
    excluded neurons).  ``score_key`` names the score that ranks neurons by how
    language-specific they are and ``score_ascending`` whether lower means more specific
    (LAPE's entropy) or higher (an effect size); imported masks have none.
    """

    method: str
    languages: list[str]
    masks: list[list[torch.Tensor]]
    settings: dict[str, Any]
    thresholds: dict[str, float] = field(default_factory=dict)
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    score_key: str | None = None
    score_ascending: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.masks[0]) if self.masks else 0

    def counts(self) -> torch.Tensor:
        """Number of selected neurons, int64 ``[layers, languages]``."""
        return torch.tensor(
            [
                [len(self.masks[k][layer]) for k in range(len(self.languages))]
                for layer in range(self.num_layers)
            ],
            dtype=torch.int64,
        ).reshape(self.num_layers, len(self.languages))

    def language_total(self, language: str) -> int:
        """Number of neurons selected for ``language`` over all layers."""
        return int(sum(len(t) for t in self.masks[self.languages.index(language)]))

    def owners(self, layer: int, neuron: int) -> list[str]:
        """The languages whose selected neurons include ``layer:neuron`` (often none or one)."""
        return [
            code
            for code, per_layer in zip(self.languages, self.masks, strict=True)
            if layer < len(per_layer) and bool((per_layer[layer] == neuron).any())
        ]

    def specificity(self) -> torch.Tensor | None:
        """Per-neuron specificity ``[L, N]`` where higher means more language-specific, or
        ``None`` when the selection carries no score (imported masks)."""
        if self.score_key is None or self.score_key not in self.scores:
            return None
        score = self.scores[self.score_key].to(torch.float32)
        if score.dim() == 3:  # one score per language: the neuron's best language counts
            score = score.min(dim=-1).values if self.score_ascending else score.max(-1).values
        return -score if self.score_ascending else score

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
        """Number of distinct neurons selected for any language."""
        total = 0
        for layer in range(self.num_layers):
            total += len(torch.unique(torch.cat([m[layer] for m in self.masks])))
        return total


def masks_from_members(
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


def highest(scores: torch.Tensor, count: int, minimum: float) -> torch.Tensor:
    """Flat indices of the ``count`` highest of ``scores`` (any shape) that reach
    ``minimum``, the earlier index first on ties."""
    flat = scores.flatten()
    order = torch.sort(-flat, stable=True).indices[:count]
    return order[flat[order] >= minimum]


def masks_of(flat: torch.Tensor, num_layers: int, num_neurons: int) -> list[torch.Tensor]:
    """Flat ``layer * num_neurons + neuron`` indices -> sorted neuron indices per layer."""
    layers, neurons = flat // num_neurons, flat % num_neurons
    return [torch.sort(neurons[layers == layer]).values for layer in range(num_layers)]
