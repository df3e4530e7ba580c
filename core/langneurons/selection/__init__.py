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
  neurons with the weight of the score searched automatically.

>>> sorted(DETECTORS)
['lape', 'mean-diff', 'three-way']
>>> type(make_config("mean-diff", {"min_effect": 1.0})).__name__
'MeanDiffConfig'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import from_mapping
from ..errors import LangNeuronsError, did_you_mean
from ..stats import Statistics
from .base import Selection, masks_from_members
from .lape import LapeConfig, lape_entropy, lape_from_statistics, lape_select
from .mean_diff import MeanDiffConfig, mean_difference_select
from .three_way import ThreeWayConfig, three_way_from_statistics, three_way_select

SelectionConfig = LapeConfig | MeanDiffConfig | ThreeWayConfig
"""The settings of any detector; its type names the method."""


@dataclass(frozen=True)
class Detector:
    """A method of selecting language neurons: its name, settings class and function."""

    name: str
    title: str
    summary: str
    config_type: type
    run: Callable[[Statistics, Any], Selection]


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


def select(stats: Statistics, method: str | SelectionConfig = "lape", **settings: Any) -> Selection:
    """Run a detector on ``stats``: by settings object (``select(stats, LapeConfig())``)
    or by name with settings (``select(stats, "mean-diff", min_effect=1.0)``)."""
    if isinstance(method, str):
        config = make_config(method, settings)
    elif settings:
        raise LangNeuronsError("Pass settings either as a settings object or by name, not both.")
    else:
        config = method
    return detector_for(config).run(stats, config)


__all__ = [
    "DETECTORS",
    "METHODS",
    "Detector",
    "LapeConfig",
    "MeanDiffConfig",
    "Selection",
    "SelectionConfig",
    "ThreeWayConfig",
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
