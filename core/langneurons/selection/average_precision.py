"""The average-precision detector of Kojima et al. (2024): a neuron belongs to a language
when its value *ranks* that language's texts above the others'.

For each neuron and language, the samples (:mod:`langneurons.samples`: short stretches of
text with the neuron's mean value on each) are sorted by the neuron's value, the
language's samples are the positives and every other language's the negatives, and the
average precision (AP) of that ranking is the neuron's score: 1 when every sample of the
language comes before every other, about the language's share of samples when the neuron
ignores language.  Each language takes the neurons of highest AP; with ``bottom`` also
those of lowest AP (quiet on this language, active on the others), as the paper does.

AP here is the step-wise sum ``sum_n (R_n - R_{n-1}) P_n`` over the distinct values as
thresholds (tied values enter together), the definition of scikit-learn's
``average_precision_score``; the tests compare it with a literal loop over thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..config import setting, validate
from ..errors import LangNeuronsError
from ..samples import SampleActivations
from .base import Selection, highest, masks_of, top_rate_setting


@dataclass(frozen=True)
class AveragePrecisionConfig:
    """Settings of the average-precision detector.

    ``top_rate`` is the share of all neurons selected in total (split evenly between
    languages, as LAPE's budget); ``min_ap`` the lowest AP a selected neuron may have;
    ``bottom`` adds, per language, as many neurons of lowest AP.
    """

    top_rate: float = top_rate_setting(
        "share of all neurons selected, split evenly between languages"
    )
    min_ap: float = setting(
        0.5,
        "lowest average precision a selected neuron may have",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        slider=(0.0, 1.0),
        label="Minimum average precision",
    )
    bottom: bool = setting(
        False, "also select the neurons of lowest average precision (quiet on the language)"
    )

    def __post_init__(self) -> None:
        validate(self)


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AP of ranking samples by each column of ``scores`` ``[S, M]`` against the labels
    ``positive`` ``[S]`` (bool), float32 ``[M]``; ties enter together, as thresholds."""
    if scores.dim() != 2 or positive.dim() != 1 or scores.shape[0] != positive.shape[0]:
        raise LangNeuronsError(
            f"scores must be [samples, columns] and positive [samples]; got "
            f"{tuple(scores.shape)} and {tuple(positive.shape)}."
        )
    total = int(positive.sum())
    if total == 0:
        raise LangNeuronsError("Average precision needs at least one positive sample.")
    count = scores.shape[0]
    values = scores.to(torch.float32)
    ordered, order = torch.sort(values, dim=0, descending=True, stable=True)
    hits = positive[order].to(torch.float32)  # [S, M], in rank order
    true_pos = hits.cumsum(dim=0)
    ranks = torch.arange(count, dtype=torch.int64)[:, None].expand_as(order)
    # The last rank of each group of tied values: a threshold takes the whole group.
    last = torch.ones_like(order, dtype=torch.bool)
    last[:-1] = ordered[:-1] != ordered[1:]
    end = torch.where(last, ranks, torch.full_like(ranks, count))
    end = torch.flip(torch.cummin(torch.flip(end, dims=[0]), dim=0).values, dims=[0])
    precision_at_end = true_pos.gather(0, end) / (end + 1).to(torch.float32)
    return (hits * precision_at_end).sum(dim=0) / total


def average_precision_scores(samples: SampleActivations) -> torch.Tensor:
    """AP of every neuron for every language, float32 ``[layers, neurons, languages]``."""
    num_langs = len(samples.languages)
    if num_langs < 2:
        raise LangNeuronsError("The average-precision detector needs at least two languages.")
    out = torch.empty(samples.num_layers, samples.num_neurons, num_langs)
    for layer in range(samples.num_layers):
        values = samples.means[:, layer]
        for k in range(num_langs):
            out[layer, :, k] = average_precision(values, samples.language == k)
    return out


def average_precision_select(
    samples: SampleActivations, config: AveragePrecisionConfig | None = None
) -> Selection:
    """Per language, the ``round(top_rate * L * N / K)`` neurons of highest AP (at least
    ``min_ap``), and with ``bottom`` as many of lowest AP."""
    config = config or AveragePrecisionConfig()
    scores = average_precision_scores(samples)
    num_layers, num_neurons, num_langs = scores.shape
    per_language = round(config.top_rate * num_layers * num_neurons / num_langs)
    masks = []
    for k in range(num_langs):
        chosen = highest(scores[..., k], per_language, config.min_ap)
        if config.bottom:
            low = torch.sort(scores[..., k].flatten(), stable=True).indices[:per_language]
            chosen = torch.unique(torch.cat([chosen, low]))
        masks.append(masks_of(chosen, num_layers, num_neurons))
    return Selection(
        method="average-precision",
        languages=list(samples.languages),
        masks=masks,
        settings=asdict(config),
        thresholds={"per_language": per_language},
        scores={"average_precision": scores},
        score_key="average_precision",
        score_ascending=False,
    )
