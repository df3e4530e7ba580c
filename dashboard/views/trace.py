"""Trace a text: which languages' neurons fire on each token of any text, for example one
that switches language mid-sentence."""

from __future__ import annotations

import streamlit as st

from langneurons import plots
from langneurons.errors import LangNeuronsError
from langneurons.prompts import code_switched
from langneurons.trace import TraceSpec, trace_text

from .. import traces, widgets
from ..state import PageContext, classroom, page_context, remember, seed

MAX_TEXT_CHARS = 2000


def render(ctx: PageContext) -> None:
    languages = ctx.selection.languages
    st.markdown(
        "Paste any text, in one language or several: each token is coloured by the language "
        "whose neurons fire most on it, and the charts show every language's neurons token "
        "by token and layer by layer."
    )
    limits = classroom()
    most = min(MAX_TEXT_CHARS, limits.max_prompt_chars) if limits else MAX_TEXT_CHARS
    seed("tr_text", code_switched(languages))
    st.session_state["tr_text"] = str(st.session_state["tr_text"])[:most]
    text = st.text_area("Text", key="tr_text", height=100, max_chars=most)
    remember("tr_text", text)
    if not text.strip():
        st.info("Write or paste some text to trace.")
        return
    try:
        with st.spinner("Reading the text..."):
            trace = trace_text(ctx.lm, TraceSpec.from_masks(ctx.selection.masks, languages), text)
    except LangNeuronsError as exc:
        widgets.error(exc)
        return
    traces.legend(languages)
    st.markdown(
        widgets.output_box("", "", body_html=plots.tokens_html(trace)), unsafe_allow_html=True
    )
    widgets.plot(plots.trace_lines(trace), "trace_lines")
    dominant = trace.dominant()
    view = traces.controls(languages, dominant[0] or languages[0], "tr", pair=False)
    traces.heatmap(st.container(), "trace_heatmap", trace, view, prompt_tokens=0)


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
