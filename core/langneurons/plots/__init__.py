"""Figures and token colourings of the library's results, for notebooks and the dashboard.

Plotly figures need the optional extra (``pip install 'langneurons[dashboard]'``, which
brings plotly); :func:`tokens_html` and :func:`legend_html` are plain HTML.  The
dashboard draws these same figures, so a notebook gets what a page shows with one call:

>>> import torch
>>> from langneurons.selection import Selection
>>> masks = [[torch.tensor([3]), torch.tensor([])], [torch.tensor([1, 3]), torch.tensor([0])]]
>>> figure = layer_distribution(Selection("lape", ["en", "fr"], masks, {}))
>>> [trace.name for trace in figure.data], figure.data[1].y.tolist()
(['en', 'fr'], [2, 1])
>>> language_color(0)
'#3b5bdb'

- a selection or mask: :func:`counts_heatmap`, :func:`layer_distribution`,
  :func:`overlap_heatmap`; with its statistics: :func:`neuron_heatmap`,
  :func:`neuron_map`, :func:`language_bars`;
- measurements: :func:`ablation_heatmap`, :func:`steering_curves`,
  :func:`detector_layers`, :func:`detector_overlap`;
- a language trace: :func:`trace_heatmap`, :func:`trace_lines`, :func:`tokens_html`.
"""

from __future__ import annotations

from .base import PALETTE, graph_objects, language_color, layout
from .measures import detector_layers, detector_overlap, recipe_grid, steering_curves
from .neurons import (
    ABLATION_SCALES,
    PROBABILITY,
    SCORE,
    ablation_heatmap,
    counts_heatmap,
    language_bars,
    layer_distribution,
    neuron_heatmap,
    neuron_map,
    neuron_values,
    overlap_heatmap,
)
from .trace import legend_html, tokens_html, trace_heatmap, trace_lines

__all__ = [
    "ABLATION_SCALES",
    "PALETTE",
    "PROBABILITY",
    "SCORE",
    "ablation_heatmap",
    "counts_heatmap",
    "detector_layers",
    "detector_overlap",
    "graph_objects",
    "language_bars",
    "language_color",
    "layer_distribution",
    "layout",
    "legend_html",
    "neuron_heatmap",
    "neuron_map",
    "neuron_values",
    "overlap_heatmap",
    "recipe_grid",
    "steering_curves",
    "tokens_html",
    "trace_heatmap",
    "trace_lines",
]
