"""Neuron map: every neuron placed by its per-language activation probabilities."""

from __future__ import annotations

import numpy as np
import streamlit as st

from langneurons import analysis, plots

from .. import widgets
from ..state import PageContext, page_context


@st.cache_data(show_spinner=False, max_entries=8)
def _umap(statistics_key: str, limit: int, vectors: np.ndarray) -> np.ndarray:
    return analysis.umap_2d(vectors)


def render(ctx: PageContext) -> None:
    method = st.radio(
        "Projection",
        ["PCA", "UMAP"],
        horizontal=True,
        key="map_method",
        help="PCA is instant; UMAP (on up to 6000 neurons) takes 30-60 s the first time, "
        "then is cached.",
    )
    limit = 40_000 if method == "PCA" else 6_000
    points = analysis.map_points(ctx.result.statistics, ctx.selection, limit)
    if method == "PCA":
        coords = analysis.pca_2d(points.vectors)
    else:
        try:
            with st.spinner("Fitting UMAP (cached afterwards)..."):
                coords = _umap(ctx.settings.statistics_key(), limit, points.vectors)
        except ImportError as exc:
            widgets.warning(exc)
            return
    figure = plots.neuron_map(
        points,
        coords,
        ctx.result.statistics.languages,
        f"Neurons by their per-language activation probabilities ({method})",
    )
    widgets.plot(figure, "neuron_map")
    st.caption(
        "Each point is a neuron, placed by its vector of activation probabilities over the "
        "languages and coloured by the language it fires most for; large points are selected "
        f"language neurons ({len(points.index):,} neurons shown)."
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
