"""Selecting language-specific neurons from the statistics: the detectors and their
registry.

Each detector is one module here with a settings dataclass (defaults, ranges and help
defined once, see :mod:`langneurons.config`) and a function from
:class:`~langneurons.stats.Statistics` to :class:`Selection`.  :data:`DETECTORS` maps
a method name to both; the command line, the dashboard and :func:`select` read it, so
a new detector is one module plus one entry below.

- ``lape``: :func:`lape_select`, LAPE exactly as the reference computes it;
- ``mean-diff``: :func:`mean_difference_select`, standardised mean differences;
- ``three-way``: :func:`three_way_select`, language-specific, related and general
  neurons with the weight of the score searched automatically;
- ``average-precision``: :func:`average_precision_select`, neurons whose value ranks
  the language's texts first (Kojima et al. 2024).  It reads per-sample activations
  (:mod:`langneurons.samples`) instead of the statistics: :attr:`Detector.needs_samples`.

>>> sorted(DETECTORS)
['average-precision', 'lape', 'mean-diff', 'three-way']
>>> type(make_config("mean-diff", {"min_effect": 1.0})).__name__
'MeanDiffConfig'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import from_mapping
from ..errors import LangNeuronsError, did_you_mean
from ..samples import SampleActivations
from ..stats import Statistics
from .average_precision import (
    AveragePrecisionConfig,
    average_precision,
    average_precision_select,
)
from .base import Selection, masks_from_members
from .lape import LapeConfig, lape_entropy, lape_from_statistics, lape_select
from .mean_diff import MeanDiffConfig, mean_difference_select
from .three_way import ThreeWayConfig, three_way_from_statistics, three_way_select

SelectionConfig = LapeConfig | MeanDiffConfig | ThreeWayConfig | AveragePrecisionConfig
"""The settings of any detector; its type names the method."""


@dataclass(frozen=True)
class Detector:
    """A method of selecting language neurons: its name, settings class and function.

    ``run`` takes the statistics, or with ``needs_samples`` the per-sample activations
    (:class:`~langneurons.samples.SampleActivations`), and the settings.
    """

    name: str
    title: str
    summary: str
    config_type: type
    run: Callable[[Any, Any], Selection]
    needs_samples: bool = False


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "lape",
            "LAPE (Tang et al. 2024)",
            "Neurons whose firing probability is concentrated on few languages (low "
            "entropy), assigned to every language where they fire often.",
            LapeConfig,
            lape_from_statistics,
        ),
        Detector(
            "mean-diff",
            "Mean difference",
            "Per language, the neurons whose mean activation stands out most from the other "
            "languages' (standardised effect size).",
            MeanDiffConfig,
            mean_difference_select,
        ),
        Detector(
            "three-way",
            "Specific / related / general (Zhang et al. 2026)",
            "Low-entropy neurons with a weighted bonus for firing often, the weight searched "
            "so that no selected neuron fires for every language; split into neurons of one "
            "language, of several, and general ones.",
            ThreeWayConfig,
            three_way_from_statistics,
        ),
        Detector(
            "average-precision",
            "Average precision (Kojima et al. 2024)",
            "Per language, the neurons whose value ranks that language's texts (stretches "
            "of 32 tokens) above the other languages' best, scored by average precision. "
            "Needs per-text activations, collected with the model.",
            AveragePrecisionConfig,
            average_precision_select,
            needs_samples=True,
        ),
    )
}
METHODS = tuple(DETECTORS)


def detector(method: str) -> Detector:
    """The detector named ``method``; a clear error listing the methods otherwise."""
    try:
        return DETECTORS[method]
    except KeyError:
        raise LangNeuronsError(
            f"Unknown selection method {method!r}.{did_you_mean(method, DETECTORS)} "
            f"Use one of: {', '.join(METHODS)}."
        ) from None


def detector_for(config: object) -> Detector:
    """The detector whose settings class ``config`` is an instance of."""
    for candidate in DETECTORS.values():
        if isinstance(config, candidate.config_type):
            return candidate
    raise LangNeuronsError(
        f"{type(config).__name__} is not the settings of a detector; use one of "
        + ", ".join(d.config_type.__name__ for d in DETECTORS.values())
        + "."
    )


def make_config(method: str, settings: Mapping[str, Any] | None = None) -> Any:
    """Settings of ``method`` from a mapping (missing names take their defaults)."""
    found = detector(method)
    return from_mapping(found.config_type, dict(settings or {}), f"Method {method!r}")


def select(
    stats: Statistics | None,
    method: str | SelectionConfig = "lape",
    *,
    samples: SampleActivations | None = None,
    **settings: Any,
) -> Selection:
    """Run a detector on ``stats``: by settings object (``select(stats, LapeConfig())``)
    or by name with settings (``select(stats, "mean-diff", min_effect=1.0)``).  A detector
    that reads per-sample activations takes them as ``samples``; the statistics' activation
    probabilities are then added to its scores for display when given.

    >>> from langneurons import compute
    >>> from langneurons.tiny import tiny_model
    >>> stats = compute(tiny_model(), ["en", "fr"], max_tokens=200).statistics
    >>> select(stats, "mean-diff", top_rate=0.05).method
    'mean-diff'
    """
    if isinstance(method, str):
        config = make_config(method, settings)
    elif settings:
        raise LangNeuronsError("Pass settings either as a settings object or by name, not both.")
    else:
        config = method
    found = detector_for(config)
    if not found.needs_samples:
        if stats is None:
            raise LangNeuronsError(f"The {found.name} detector needs the run's statistics.")
        return found.run(stats, config)
    if samples is None:
        raise LangNeuronsError(
            f"The {found.name} detector ranks texts by each neuron's value, so it needs "
            "per-sample activations, which the statistics do not keep: collect them with the "
            "model (langneurons.samples.collect_samples), or run `langneurons compute "
            f"--method {found.name}`."
        )
    if stats is not None and list(stats.languages) != list(samples.languages):
        raise LangNeuronsError(
            f"The samples cover {', '.join(samples.languages)} but the statistics "
            f"{', '.join(stats.languages)}: collect samples for the same languages."
        )
    chosen = found.run(samples, config)
    if stats is not None:
        chosen.scores.setdefault("probabilities", stats.probabilities())
    return chosen


__all__ = [
    "DETECTORS",
    "METHODS",
    "AveragePrecisionConfig",
    "Detector",
    "LapeConfig",
    "MeanDiffConfig",
    "Selection",
    "SelectionConfig",
    "ThreeWayConfig",
    "average_precision",
    "average_precision_select",
    "detector",
    "detector_for",
    "lape_entropy",
    "lape_select",
    "make_config",
    "masks_from_members",
    "mean_difference_select",
    "select",
    "three_way_select",
]
