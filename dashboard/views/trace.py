"""Trace a text: which languages' neurons fire on each token of any text, for example one
that switches language mid-sentence."""

from __future__ import annotations

import streamlit as st

from dashboard import traces, widgets
from dashboard.state import PageContext, page_context, remember, seed
from langneurons import plots
from langneurons.errors import LangNeuronsError
from langneurons.prompts import code_switched
from langneurons.trace import TraceSpec, trace_text

MAX_TEXT_CHARS = 2000


def render(ctx: PageContext) -> None:
    languages = ctx.selection.languages
    st.markdown(
        "Paste any text, in one language or several: each token is coloured by the language "
        "whose neurons fire most on it, and the charts show every language's neurons token "
        "by token and layer by layer."
    )
    seed("tr_text", code_switched(languages))
    text = st.text_area("Text", key="tr_text", height=100, max_chars=MAX_TEXT_CHARS)
    remember("tr_text", text)
    if not text.strip():
        st.info("Write or paste some text to trace.")
        return
    try:
        with st.spinner("Reading the text..."):
            trace = trace_text(ctx.lm, TraceSpec.from_masks(ctx.selection.masks, languages), text)
    except LangNeuronsError as exc:
        st.error(str(exc))
        return
    traces.legend(languages)
    st.markdown(
        widgets.output_box("", "", body_html=plots.tokens_html(trace)), unsafe_allow_html=True
    )
    widgets.plot(plots.trace_lines(trace), "trace_lines")
    dominant = trace.dominant()
    view = traces.controls(languages, dominant[0] or languages[0], "tr", pair=False)
    traces.heatmap(st.container(), "trace_heatmap", trace, view, prompt_tokens=0)


render(page_context())
