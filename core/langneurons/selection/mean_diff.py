"""The mean-difference detector: per language, the neurons whose mean activation stands
out most from the other languages', as a standardised effect size computed from the
sums and squared sums of the statistics pass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..config import setting, validate
from ..errors import LangNeuronsError
from ..stats import Statistics
from .base import Selection, highest, masks_of, top_rate_setting


@dataclass(frozen=True)
class MeanDiffConfig:
    """Settings of the mean-difference detector.

    ``top_rate`` is the share of all neurons selected in total (split evenly between
    languages, as LAPE's budget); ``min_effect`` is the smallest standardised mean
    difference a selected neuron must have.
    """

    top_rate: float = top_rate_setting(
        "share of all neurons selected, split evenly between languages"
    )
    min_effect: float = setting(
        0.5,
        "smallest standardised mean difference a selected neuron must have",
        minimum=0.0,
        step=0.05,
        slider=(0.0, 3.0),
        label="Minimum effect size",
    )

    def __post_init__(self) -> None:
        validate(self)


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
        chosen = highest(effect[..., k], per_language, config.min_effect)
        masks.append(masks_of(chosen, num_layers, num_neurons))
    return Selection(
        method="mean-diff",
        languages=list(stats.languages),
        masks=masks,
        settings=asdict(config),
        thresholds={"per_language": per_language},
        scores={"probabilities": stats.probabilities(), "effect": effect},
        score_key="effect",
        score_ascending=False,
    )
