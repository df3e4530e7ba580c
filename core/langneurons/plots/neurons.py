"""Figures of a selection and its statistics: where the language neurons sit, how
languages share them, single neurons, the neuron map and the ablation matrix.

Each takes the library's objects (a :class:`~langneurons.selection.Selection`, a
:class:`~langneurons.maskfile.MaskFile` or anything with ``counts()`` and
``languages``; :class:`~langneurons.stats.Statistics`; an
:class:`~langneurons.evaluation.AblationMatrix`) and returns a Plotly figure; arrays go to
Plotly as numpy arrays, never lists, which is much faster to send to a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..analysis import MapPoints, membership_mask, pool_columns
from ..selection import Selection
from ..stats import Statistics
from .base import graph_objects, language_color, layer_tick, layout

PROBABILITY = "probability"
SCORE = "score"


class HasCounts(Protocol):
    """Neurons per layer and language: a selection, a mask file."""

    languages: list[str]

    def counts(self) -> Any: ...


def _counts(source: HasCounts) -> np.ndarray:
    counts = source.counts()
    return np.asarray(counts.numpy() if hasattr(counts, "numpy") else counts)


def counts_heatmap(source: HasCounts) -> Any:
    """Selected neurons per layer (rows) and language (columns), each cell labelled."""
    go = graph_objects()
    counts = _counts(source)
    fig = go.Figure(
        go.Heatmap(
            z=counts,
            x=list(source.languages),
            y=np.arange(counts.shape[0]),
            colorscale="Blues",
            text=counts,
            texttemplate="%{text}",
            hovertemplate="layer %{y}, %{x}: %{z}<extra></extra>",
            colorbar={"title": {"text": "neurons"}},
        )
    )
    fig.update_yaxes(
        title="layer", autorange="reversed", dtick=1 if counts.shape[0] <= 40 else None
    )
    return layout(fig, "Language neurons per layer", height=max(320, 22 * counts.shape[0] + 80))


def layer_distribution(source: HasCounts) -> Any:
    """Where each language's neurons sit: stacked bars of neurons per layer, one colour
    per language (the LAPE paper's layer figure).

    >>> import torch
    >>> from langneurons.selection import Selection
    >>> masks = [[torch.tensor([3]), torch.tensor([])], [torch.tensor([1, 3]), torch.tensor([0])]]
    >>> [bar.name for bar in layer_distribution(Selection("lape", ["en", "fr"], masks, {})).data]
    ['en', 'fr']
    """
    go = graph_objects()
    counts = _counts(source)
    fig = go.Figure()
    for k, code in enumerate(source.languages):
        fig.add_bar(
            x=np.arange(counts.shape[0]), y=counts[:, k], name=code, marker_color=language_color(k)
        )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="layer", dtick=layer_tick(counts.shape[0]))
    fig.update_yaxes(title="selected neurons")
    return layout(fig, "Where each language's neurons sit")


def overlap_heatmap(source: Selection | Any, kind: str = "jaccard", title: str = "") -> Any:
    """Languages x languages: their neurons' Jaccard overlap (``kind="jaccard"``) or the
    number they share (``"shared"``).  ``source`` is a selection, or a square DataFrame
    already computed (a mask file's ``overlap()``)."""
    go = graph_objects()
    if isinstance(source, Selection):
        from ..tables import language_overlap

        frame = language_overlap(source, kind)
    else:
        frame = source
    languages = [str(c) for c in frame.columns]
    default = "Overlap (Jaccard index)" if kind == "jaccard" else "Shared neurons (counts)"
    fig = go.Figure(
        go.Heatmap(
            z=frame.to_numpy(),
            x=languages,
            y=languages,
            colorscale="Purples",
            texttemplate="%{z:.2f}" if kind == "jaccard" else "%{z:d}",
            hovertemplate="%{y} / %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return layout(fig, title or default, height=max(300, 40 * len(languages) + 100))


def neuron_values(
    selection: Selection, statistics: Statistics, metric: str, language: str
) -> tuple[np.ndarray, str, str, str]:
    """The layer x neuron values a heatmap draws: activation probability on ``language``
    (``metric="probability"``) or the detector's score (for ``language`` when it has one
    per language); with the title, colour-bar label and colour scale."""
    if metric == PROBABILITY:
        k = statistics.languages.index(language)
        values = statistics.probabilities()[..., k].numpy()
        return values, f"Activation probability on {language}", "p", "Viridis"
    key = selection.score_key
    if metric != SCORE or key is None or key not in selection.scores:
        raise ValueError(f"metric must be {PROBABILITY!r} or, for a scored selection, {SCORE!r}.")
    score = selection.scores[key]
    title = key
    if score.dim() == 3:
        score = score[..., statistics.languages.index(language)]
        title = f"{key} for {language}"
    values = score.numpy().astype(np.float64).copy()
    values[~np.isfinite(values)] = np.nan
    scale = "Viridis_r" if selection.score_ascending else "Viridis"
    return values, f"{title} (blank: filtered out)", key, scale


def neuron_heatmap(
    selection: Selection,
    statistics: Statistics,
    language: str,
    metric: str = PROBABILITY,
    *,
    start: int = 0,
    stop: int | None = None,
    max_columns: int = 2048,
) -> Any:
    """Layer x neuron heatmap of the activation probability on ``language`` (or the
    detector's score), neurons ``start:stop`` max-pooled to at most ``max_columns``
    columns, ``language``'s selected neurons circled (every language's for a score that
    is not per language)."""
    go = graph_objects()
    full, title, bar, scale = neuron_values(selection, statistics, metric, language)
    stop = full.shape[1] if stop is None else stop
    if not 0 <= start < stop <= full.shape[1]:
        raise ValueError(f"Choose neurons within 0-{full.shape[1]}, got {start}-{stop}.")
    matrix, pool = pool_columns(full[:, start:stop], max_columns)
    per_language = metric == PROBABILITY or selection.scores[bar].dim() == 3
    marked = statistics.languages.index(language) if per_language else None
    mask = membership_mask(selection, marked, full.shape)[:, start:stop]
    rows, cols = np.nonzero(mask)
    columns = start + np.arange(matrix.shape[1]) * pool
    fig = go.Figure(
        go.Heatmap(
            z=matrix.astype(np.float32),
            x=columns,
            y=np.arange(matrix.shape[0]),
            colorscale=scale,
            colorbar={"title": {"text": bar}},
            hovertemplate="layer %{y}, neuron %{x}: %{z:.3f}<extra></extra>",
        )
    )
    if len(rows):
        fig.add_scatter(
            x=start + cols,
            y=rows,
            mode="markers",
            name="selected",
            marker={"symbol": "circle-open", "size": 7, "color": "#ff2d55", "line": {"width": 1.5}},
            hovertemplate="selected: layer %{y}, neuron %{x}<extra></extra>",
        )
    # Explicit ranges: the circles' markers would otherwise pad the axes past the layers.
    fig.update_yaxes(
        title="layer",
        range=[matrix.shape[0] - 0.5, -0.5],
        dtick=1 if matrix.shape[0] <= 40 else None,
    )
    fig.update_xaxes(range=[start - pool / 2, start + (matrix.shape[1] - 0.5) * pool])
    suffix = f" (max over {pool} neurons per column)" if pool > 1 else ""
    fig.update_xaxes(title=f"neuron{suffix}")
    return layout(fig, title, height=max(360, 20 * matrix.shape[0] + 120))


def language_bars(values: Mapping[str, float], title: str, axis: str) -> Any:
    """One bar per language (a neuron's probability or mean, neurons per language)."""
    go = graph_objects()
    codes = list(values)
    fig = go.Figure(
        go.Bar(
            x=codes,
            y=np.array([values[c] for c in codes]),
            marker_color=[language_color(i) for i in range(len(codes))],
        )
    )
    fig.update_yaxes(title=axis)
    return layout(fig, title, height=300)


def neuron_map(
    points: MapPoints, coords: np.ndarray, languages: Sequence[str], title: str = ""
) -> Any:
    """Neurons placed by their per-language activation probabilities (``coords``: a
    2-D projection of ``points.vectors``, see :func:`langneurons.analysis.pca_2d`),
    coloured by their dominant language, selected ones large."""
    go = graph_objects()
    labels = np.array(points.labels)
    fig = go.Figure()
    for selected in (False, True):
        for k, code in enumerate(languages):
            pick = (points.dominant == k) & (points.selected == selected)
            if selected and not pick.any():
                continue
            marker: dict[str, Any] = {"size": 3, "color": language_color(k), "opacity": 0.35}
            if selected:
                marker = {
                    "size": 9,
                    "color": language_color(k),
                    "line": {"width": 1, "color": "#111"},
                }
            fig.add_scattergl(
                x=coords[pick, 0],
                y=coords[pick, 1],
                mode="markers",
                name=f"{code} (selected)" if selected else code,
                marker=marker,
                text=labels[pick],
                hovertemplate="%{text}<extra>"
                + code
                + (" selected" if selected else "")
                + "</extra>",
            )
    fig.update_xaxes(title="component 1")
    fig.update_yaxes(title="component 2")
    default = "Neurons by their per-language activation probabilities"
    return layout(fig, title or default, height=560)


ABLATION_SCALES = {
    "nll": (".2f", "NLL per token with a language's neurons off"),
    "perplexity": (".1f", "Perplexity with a language's neurons off"),
    "increase": ("+.2f", "NLL increase over the unmodified model"),
}


def ablation_heatmap(matrix: Any, scale: str = "nll") -> Any:
    """An :class:`~langneurons.evaluation.AblationMatrix`: rows switch one language's
    neurons off, columns are the held-out text evaluated; as NLL, perplexity or the
    increase over the unmodified model.  A strong diagonal means each language's neurons
    matter to it most."""
    go = graph_objects()
    if scale not in ABLATION_SCALES:
        raise ValueError(f"scale must be one of {', '.join(ABLATION_SCALES)}, got {scale!r}.")
    fmt, title = ABLATION_SCALES[scale]
    languages = list(matrix.languages)
    fig = go.Figure(
        go.Heatmap(
            z=np.array(matrix.grid(scale)),
            x=languages,
            y=[f"{c} off" for c in languages],
            colorscale="Reds",
            texttemplate=f"%{{z:{fmt}}}",
            hovertemplate="%{y}, evaluated on %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_xaxes(title="evaluated language")
    fig.update_yaxes(title="neurons deactivated", autorange="reversed")
    return layout(fig, title, height=max(340, 45 * len(languages) + 120))
