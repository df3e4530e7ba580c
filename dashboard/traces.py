"""Showing language traces: the controls, the coloured tokens inside an output box, and
the layer x token heatmaps (figures from ``langneurons.plots``).  Used by the playground,
the trace page and the tour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from langneurons import plots
from langneurons.trace import Trace

from . import widgets
from .state import remember, seed

SIDE_BY_SIDE = "Side by side"
DIFFERENCE = "Difference (modified − unmodified)"


@dataclass(frozen=True)
class TraceView:
    """What the trace controls chose."""

    language: str
    difference: bool
    after: bool


def controls(
    languages: list[str],
    default: str,
    prefix: str,
    pair: bool = True,
    columns: list[Any] | None = None,
) -> TraceView:
    """The language whose neurons the heatmaps show, and for a pair the view and whether
    values are read before or after the intervention writes them.  In ``columns`` (three
    for a pair) the controls are compact: one line, short labels, the long ones on hover."""
    key = f"{prefix}_trace_lang"
    seed(key, default if default in languages else languages[0])
    if st.session_state[key] not in languages:
        st.session_state[key] = default if default in languages else languages[0]
    compact = columns is not None
    if columns is None:
        columns = list(st.columns([2, 3, 3]) if pair else st.columns([2, 6]))
    language = str(
        columns[0].selectbox(
            "Heatmaps of the neurons of",
            languages,
            key=key,
            format_func=(lambda c: f"{widgets.language_label(c)} neurons")
            if compact
            else widgets.language_label,
            label_visibility="collapsed" if compact else "visible",
        )
    )
    remember(key, language)
    difference, after = False, False
    if pair:
        view = columns[1].radio(
            "Heatmaps",
            [SIDE_BY_SIDE, DIFFERENCE],
            horizontal=True,
            key=f"{prefix}_trace_view",
            format_func=(lambda v: v.split(" (")[0]) if compact else str,
            label_visibility="collapsed" if compact else "visible",
        )
        difference = view == DIFFERENCE
        after = bool(
            columns[2].toggle(
                "After the intervention"
                if compact
                else "Values after the intervention writes them",
                key=f"{prefix}_trace_after",
                help="Off: the neuron values as the model computed them, which show how the "
                "rest of the model reacts. On: as they flow on, after the intervention writes "
                "them; deactivated neurons then read zero by construction.",
            )
        )
    return TraceView(language, difference, after)


def box(
    tokenizer: Any,
    trace: Trace | None,
    prompt: str,
    text: str,
    language: str | None,
    waiting: bool,
    prompt_tokens: int,
    after: bool = False,
    tooltips: bool = True,
    compact: bool = False,
) -> str:
    """The output box: tokens coloured by their dominant language once traced (the prompt
    paler), the rest of the text plain, the detected language as a badge; ``tooltips``
    adds each token's layer profile on hover (left out of live pictures); ``compact``:
    smaller type and a bounded height (see :func:`widgets.output_box`)."""
    if trace is None or not trace.tokens:
        return widgets.output_box(prompt, text, language, waiting, compact=compact)
    traced = tokenizer.decode(trace.token_ids[prompt_tokens:], skip_special_tokens=True)
    tail = text[len(traced) :] if text.startswith(traced) else ""
    body = plots.tokens_html(
        trace, after=after, prompt_tokens=prompt_tokens, tail=tail, tooltips=tooltips
    )
    return widgets.output_box("", "", language, waiting, body_html=body, compact=compact)


def heatmap(
    slot: Any,
    key: str,
    trace: Trace | None,
    view: TraceView,
    prompt_tokens: int,
    baseline: Trace | None = None,
    title: str | None = None,
    hover: bool = True,
    height: int | None = None,
) -> None:
    """One heatmap into ``slot`` (with ``baseline``: the difference from it); ``key`` must
    differ between draws of one run (a live heatmap is drawn again as tokens arrive);
    ``hover`` adds every language's values to each cell's hover text; ``height`` below
    320 pixels: a compact one."""
    if trace is None or not trace.tokens or view.language not in trace.languages:
        return
    figure = plots.trace_heatmap(
        trace,
        view.language,
        after=view.after,
        baseline=baseline,
        prompt_tokens=prompt_tokens,
        title=title,
        hover=hover,
        height=height,
    )
    slot.plotly_chart(figure, width="stretch", key=key)


def lines(
    slot: Any, key: str, trace: Trace | None, after: bool, prompt_tokens: int, height: int = 280
) -> None:
    """Every language's neurons token by token (all layers pooled): where the text turns
    to another language, its line rises as the other falls."""
    if trace is None or not trace.tokens:
        return
    figure = plots.trace_lines(trace, after=after, prompt_tokens=prompt_tokens, height=height)
    slot.plotly_chart(figure, width="stretch", key=key)


def legend_markdown(languages: list[str], short: bool = False) -> str:
    """The colour of each language, with what the colours mean."""
    note = (
        "token colour: the language whose neurons fire most; hover: layer by layer"
        if short
        else "Each token is coloured by the language whose neurons fire most on it; hover a "
        "token to see every language, layer by layer."
    )
    return plots.legend_html(languages) + f" <span style='color:#868e96'>{note}</span>"


def legend(languages: list[str]) -> None:
    st.markdown(legend_markdown(languages), unsafe_allow_html=True)
