"""Heatmaps: activation probability per language, or the selection's score, layer x
neuron, selected neurons circled; a sortable table of the selected neurons."""

from __future__ import annotations

import streamlit as st

from langneurons import analysis, plots
from langneurons.tables import neurons_table

from .. import widgets
from ..state import PageContext, page_context, remember, seed

PROBABILITY = "Activation probability"


def _chosen_row() -> None:
    """Table selection callback: remember the row's neuron and go to the inspector once
    per new selection (the browser sends the selection again on later reruns)."""
    rows = st.session_state["hm_table"].selection.rows
    if not rows:
        return
    record = st.session_state["hm_records"].iloc[rows[0]]
    picked = (int(record["layer"]), int(record["neuron"]))
    if st.session_state.get("hm_handled") != picked:
        st.session_state["hm_handled"] = picked
        _inspect(*picked)


def _inspect(layer: int, neuron: int) -> None:
    for key, value in (("insp_layer", int(layer)), ("insp_neuron", int(neuron))):
        st.session_state.pop(key, None)
        remember(key, value)
    st.session_state["_goto_inspector"] = True


def render(ctx: PageContext) -> None:
    if st.session_state.pop("_goto_inspector", False):  # a row or the button picked a neuron
        st.switch_page("routes/inspector.py")
    lm, selection, stats = ctx.lm, ctx.selection, ctx.result.statistics
    languages = stats.languages
    metrics = [PROBABILITY] + ([f"Score: {selection.score_key}"] if selection.score_key else [])
    c1, c2, c3 = st.columns([2, 2, 3])
    seed("hm_metric", PROBABILITY)
    if st.session_state["hm_metric"] not in metrics:
        st.session_state["hm_metric"] = PROBABILITY
    metric = str(c1.radio("Show", metrics, horizontal=True, key="hm_metric"))
    seed("hm_lang", languages[0])
    if st.session_state["hm_lang"] not in languages:
        st.session_state["hm_lang"] = languages[0]
    score = selection.scores.get(selection.score_key or "")
    per_language = metric == PROBABILITY or (score is not None and score.dim() == 3)
    language = str(
        c2.selectbox(
            "Language",
            languages,
            key="hm_lang",
            format_func=widgets.language_label,
            disabled=not per_language,
        )
    )
    n = lm.num_neurons
    seed("hm_range", (0, n))
    low, high = st.session_state["hm_range"]
    st.session_state["hm_range"] = (min(max(low, 0), n - 1), min(max(high, 1), n))
    zoom: tuple[int, int] = c3.slider("Neurons (zoom)", 0, n, key="hm_range")  # type: ignore[assignment]
    low, high = zoom
    for key, value in (("hm_metric", metric), ("hm_lang", language), ("hm_range", (low, high))):
        remember(key, None if key == "hm_range" and value == (0, n) else value)
    if high - low < 1:
        st.warning("Choose a range of at least one neuron.")
        return
    kind = plots.PROBABILITY if metric == PROBABILITY else plots.SCORE
    figure = plots.neuron_heatmap(selection, stats, language, kind, start=low, stop=high)
    widgets.plot(figure, "heatmap")
    _table(ctx)


def _table(ctx: PageContext) -> None:
    lm, selection = ctx.lm, ctx.selection
    st.subheader("Selected neurons")
    records = neurons_table(selection, ctx.result.statistics)
    if len(records):
        st.session_state["hm_records"] = records
        event = st.dataframe(
            records,
            width="stretch",
            height=300,
            hide_index=True,
            key="hm_table",
            on_select=_chosen_row,
            selection_mode="single-row",
        )
        if not event.selection.rows:
            st.session_state.pop("hm_handled", None)  # a fresh table: any row may be picked
    else:
        st.info("No neurons are selected with these settings.")
    st.caption(
        "Sort the table by clicking a column header; select a row, or give a layer and "
        "neuron below, to inspect it."
    )
    c1, c2, c3 = st.columns([1, 1, 2])
    default_layer, default_neuron = analysis.most_specific_neuron(
        selection, (lm.num_layers, lm.num_neurons)
    )
    layer = c1.number_input("Layer", 0, lm.num_layers - 1, default_layer, key="pick_layer")
    neuron = c2.number_input("Neuron", 0, lm.num_neurons - 1, default_neuron, key="pick_neuron")
    c3.button("Inspect this neuron", key="pick_go", on_click=_inspect, args=(layer, neuron))


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
