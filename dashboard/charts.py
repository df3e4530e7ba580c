"""Plotly figures built from numpy arrays (never Python lists: much faster to send)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = [
    "#3b5bdb",
    "#e8590c",
    "#2f9e44",
    "#c2255c",
    "#7048e8",
    "#1098ad",
    "#f59f00",
    "#5c940d",
    "#d6336c",
    "#495057",
    "#0b7285",
    "#a61e4d",
]


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 15}},
        height=height,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def counts_heatmap(counts: np.ndarray, languages: Sequence[str]) -> go.Figure:
    """Selected neurons per layer (rows) and language (columns)."""
    fig = go.Figure(
        go.Heatmap(
            z=counts,
            x=list(languages),
            y=np.arange(counts.shape[0]),
            colorscale="Blues",
            text=counts,
            texttemplate="%{text}",
            hovertemplate="layer %{y}, %{x}: %{z}<extra></extra>",
            colorbar={"title": "neurons"},
        )
    )
    fig.update_yaxes(
        title="layer", autorange="reversed", dtick=1 if counts.shape[0] <= 40 else None
    )
    return _layout(fig, "Language neurons per layer", height=max(320, 22 * counts.shape[0] + 80))


def stacked_bars(counts: np.ndarray, languages: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    for k, code in enumerate(languages):
        fig.add_bar(
            x=np.arange(counts.shape[0]),
            y=counts[:, k],
            name=code,
            marker_color=PALETTE[k % len(PALETTE)],
        )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="layer", dtick=1 if counts.shape[0] <= 40 else None)
    fig.update_yaxes(title="selected neurons")
    return _layout(fig, "Where each language's neurons sit")


def overlap_heatmap(
    matrix: np.ndarray, languages: Sequence[str], title: str, fmt: str = ".2f"
) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(languages),
            y=list(languages),
            colorscale="Purples",
            texttemplate=f"%{{z:{fmt}}}",
            hovertemplate="%{y} / %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(300, 40 * len(languages) + 100))


def neuron_heatmap(
    matrix: np.ndarray,
    title: str,
    colorbar: str,
    start: int,
    pool: int,
    marks: tuple[np.ndarray, np.ndarray] | None = None,
    colorscale: str = "Viridis",
) -> go.Figure:
    """Layer x neuron heatmap (columns may be max-pooled), selected neurons marked."""
    columns = start + np.arange(matrix.shape[1]) * pool
    fig = go.Figure(
        go.Heatmap(
            z=matrix.astype(np.float32),
            x=columns,
            y=np.arange(matrix.shape[0]),
            colorscale=colorscale,
            colorbar={"title": colorbar},
            hovertemplate="layer %{y}, neuron %{x}: %{z:.3f}<extra></extra>",
        )
    )
    if marks is not None and len(marks[0]):
        fig.add_scatter(
            x=marks[1],
            y=marks[0],
            mode="markers",
            name="selected",
            marker={"symbol": "circle-open", "size": 7, "color": "#ff2d55", "line": {"width": 1.5}},
            hovertemplate="selected: layer %{y}, neuron %{x}<extra></extra>",
        )
    fig.update_yaxes(
        title="layer", autorange="reversed", dtick=1 if matrix.shape[0] <= 40 else None
    )
    suffix = f" (max over {pool} neurons per column)" if pool > 1 else ""
    fig.update_xaxes(title=f"neuron{suffix}")
    return _layout(fig, title, height=max(360, 20 * matrix.shape[0] + 120))


def language_bars(values: dict[str, float], title: str, axis: str) -> go.Figure:
    codes = list(values)
    fig = go.Figure(
        go.Bar(
            x=codes,
            y=np.array([values[c] for c in codes]),
            marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(codes))],
        )
    )
    fig.update_yaxes(title=axis)
    return _layout(fig, title, height=300)


def neuron_map(
    coords: np.ndarray,
    dominant: np.ndarray,
    languages: Sequence[str],
    selected: np.ndarray,
    labels: np.ndarray,
    title: str,
) -> go.Figure:
    fig = go.Figure()
    for k, code in enumerate(languages):
        pick = (dominant == k) & ~selected
        fig.add_scattergl(
            x=coords[pick, 0],
            y=coords[pick, 1],
            mode="markers",
            name=f"{code}",
            marker={"size": 3, "color": PALETTE[k % len(PALETTE)], "opacity": 0.35},
            text=labels[pick],
            hovertemplate="%{text}<extra>" + code + "</extra>",
        )
    for k, code in enumerate(languages):
        pick = (dominant == k) & selected
        if pick.any():
            fig.add_scattergl(
                x=coords[pick, 0],
                y=coords[pick, 1],
                mode="markers",
                name=f"{code} (selected)",
                marker={
                    "size": 9,
                    "color": PALETTE[k % len(PALETTE)],
                    "line": {"width": 1, "color": "#111"},
                },
                text=labels[pick],
                hovertemplate="%{text}<extra>" + code + " selected</extra>",
            )
    fig.update_xaxes(title="component 1")
    fig.update_yaxes(title="component 2")
    return _layout(fig, title, height=560)


def nll_heatmap(matrix: np.ndarray, languages: Sequence[str], title: str, fmt: str) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=list(languages),
            y=[f"{c} off" for c in languages],
            colorscale="Reds",
            texttemplate=f"%{{z:{fmt}}}",
            hovertemplate="%{y}, evaluated on %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_xaxes(title="evaluated language")
    fig.update_yaxes(title="neurons deactivated", autorange="reversed")
    return _layout(fig, title, height=max(340, 45 * len(languages) + 120))
