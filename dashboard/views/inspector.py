"""Neuron inspector: one neuron's languages, its activation per language, the passages
where it fires most, and the output tokens it promotes."""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from langneurons import analysis, plots
from langneurons.corpus import load_corpus
from langneurons.models import LoadedModel

from .. import widgets
from ..state import PageContext, page_context, remember, seed


@st.cache_resource(show_spinner=False, max_entries=8)
def _layer_activations(
    _lm: LoadedModel, fingerprint: str, corpus_name: str, languages: tuple[str, ...], layer: int
) -> list:
    """A layer's activations on the first paragraphs (``fingerprint`` names ``_lm``)."""
    corpus = load_corpus(corpus_name, list(languages))
    return analysis.layer_activations(_lm, corpus, languages, layer, paragraphs_per_language=6)


def _shade(tokens: list[str], values: list[float], scale: float) -> str:
    spans = []
    for token, value in zip(tokens, values, strict=True):
        alpha = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        spans.append(
            f'<span title="{value:.3f}" style="background: rgba(232,89,12,{alpha:.2f});'
            f'border-radius:3px">{html.escape(token)}</span>'
        )
    return "".join(spans)


def _pick(ctx: PageContext) -> tuple[int, int]:
    lm = ctx.lm
    default = analysis.most_specific_neuron(ctx.selection, (lm.num_layers, lm.num_neurons))
    for key, value, top in (
        ("insp_layer", default[0], lm.num_layers - 1),
        ("insp_neuron", default[1], lm.num_neurons - 1),
    ):
        seed(key, value)
        if not 0 <= int(st.session_state[key]) <= top:  # a link from another model
            st.session_state[key] = value
    c1, c2 = st.columns(2)
    layer = int(c1.number_input("Layer", 0, lm.num_layers - 1, key="insp_layer"))
    neuron = int(c2.number_input("Neuron", 0, lm.num_neurons - 1, key="insp_neuron"))
    remember("insp_layer", layer)
    remember("insp_neuron", neuron)
    return layer, neuron


def render(ctx: PageContext) -> None:
    lm, stats = ctx.lm, ctx.result.statistics
    layer, neuron = _pick(ctx)
    owners = ctx.selection.owners(layer, neuron)
    st.markdown(
        f"**Neuron {layer}:{neuron}** — "
        + (f"selected for **{widgets.plain(', '.join(owners))}**" if owners else "not selected")
    )
    profile = analysis.neuron_profile(stats, layer, neuron)
    left, right = st.columns(2)
    with left:
        probabilities = {c: v["probability"] for c, v in profile.items()}
        widgets.plot(
            plots.language_bars(probabilities, "Activation probability", "p(value > 0)"),
            "insp_prob",
        )
    with right:
        means = {c: v["mean"] for c, v in profile.items()}
        widgets.plot(plots.language_bars(means, "Mean activation", "mean value"), "insp_mean")
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Where it fires most")
        with st.spinner("Running the model over the first paragraphs of each language..."):
            activations = _layer_activations(
                lm, lm.fingerprint, ctx.settings.corpus, tuple(stats.languages), layer
            )
        passages = analysis.top_passages(activations, neuron, k=5)
        scale = max((p.peak for p in passages), default=1.0)
        for passage in passages:
            shaded = _shade(passage.tokens, passage.values, scale).replace("\n", "<br>")
            st.markdown(
                f"<div style='margin-bottom:.6em;line-height:1.7'>"
                f"<b>{html.escape(passage.language)}</b> (peak {passage.peak:.2f}): {shaded}</div>",
                unsafe_allow_html=True,
            )
        st.caption("Tokens shaded by the neuron's value (first 6 paragraphs per language).")
    with right:
        st.subheader("Output tokens it promotes")
        tokens = analysis.promoted_tokens(lm, layer, neuron)
        st.dataframe(
            {
                "promotes": [t for t, _ in tokens["up"]],
                "score": np.round([s for _, s in tokens["up"]], 3),
                "suppresses": [t for t, _ in tokens["down"]],
            },
            hide_index=True,
            width="stretch",
        )
        st.caption("Down-projection column through the unembedding (direct effect).")


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
