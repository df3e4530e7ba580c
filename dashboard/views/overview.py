"""Overview: headline numbers, where each language's neurons sit, and how languages share
them."""

from __future__ import annotations

import streamlit as st

from langneurons import analysis, plots
from langneurons.results import corpus_label
from langneurons.selection import DETECTORS

from .. import widgets
from ..state import PageContext, page_context


def render(ctx: PageContext) -> None:
    lm, selection, stats = ctx.lm, ctx.selection, ctx.result.statistics
    languages = selection.languages
    method = DETECTORS[selection.method].title if selection.method in DETECTORS else "imported"
    st.markdown(
        f"**{widgets.plain(lm.name)}** · "
        + widgets.plain(
            f"{lm.adapter.name} · {lm.num_layers} layers x {lm.num_neurons} neurons · {lm.dtype} "
            f"on {lm.device} · corpus {corpus_label(ctx.result.meta)} · {method}"
        )
    )
    total = lm.num_layers * lm.num_neurons
    cols = st.columns(5)
    cols[0].metric("Languages", len(languages))
    cols[1].metric("Layers x neurons", f"{lm.num_layers} x {lm.num_neurons}")
    cols[2].metric(
        "Language neurons",
        selection.union_size(),
        help="Distinct neurons selected for at least one language.",
    )
    cols[2].caption(f"{100 * selection.union_size() / total:.2f}% of all {total:,} neurons")
    cols[3].metric(
        "Single-language",
        f"{100 * analysis.single_language_share(selection):.0f}%",
        help="Share of the language neurons that belong to one language only.",
    )
    cols[4].metric("Tokens counted", f"{int(stats.tokens.sum()):,}")
    left, right = st.columns(2)
    with left:
        widgets.plot(plots.counts_heatmap(selection), "overview_counts")
    with right:
        widgets.plot(plots.layer_distribution(selection), "overview_bars")
    left, right = st.columns(2)
    with left:
        widgets.plot(
            plots.overlap_heatmap(selection, "jaccard"),
            "overview_jaccard",
        )
    with right:
        widgets.plot(
            plots.overlap_heatmap(selection, "shared"),
            "overview_shared",
        )
    thresholds = ", ".join(f"{k} {v:.3g}" for k, v in selection.thresholds.items())
    st.caption(
        "The selection's settings are in the sidebar: moving them reselects from the cached "
        f"statistics ({thresholds})."
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
