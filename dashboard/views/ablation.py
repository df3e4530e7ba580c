"""Ablation matrix: each language's held-out NLL with each language's neurons
deactivated in turn (rows: neurons off; columns: the language evaluated)."""

from __future__ import annotations

import streamlit as st

from langneurons import plots
from langneurons.corpus import load_corpus
from langneurons.evaluation import AblationMatrix, cached_ablation_matrix

from .. import widgets
from ..state import PageContext, classroom, long_job, page_context

SCALES = {
    "NLL per token": "nll",
    "Perplexity": "perplexity",
    "Increase over unmodified": "increase",
}


def _compute(ctx: PageContext, chosen: list[str], max_tokens: int) -> AblationMatrix:
    with long_job(ctx.settings), widgets.event_bar("Evaluating...") as on_progress:
        return cached_ablation_matrix(
            ctx.lm,
            ctx.selection.masks,
            ctx.selection.languages,
            load_corpus(ctx.settings.corpus, chosen),
            languages=chosen,
            max_tokens=max_tokens,
            progress=on_progress,
        )


def render(ctx: PageContext) -> None:
    languages = ctx.selection.languages
    limits = classroom()
    most_languages = limits.max_ablation_languages if limits else len(languages)
    most_tokens = limits.max_ablation_tokens if limits else 5000
    state = st.session_state
    state.setdefault("ab_langs", languages[: min(6, most_languages)])
    state["ab_langs"] = [c for c in state["ab_langs"] if c in languages][:most_languages]
    state.setdefault("ab_tokens", min(300, most_tokens))
    state["ab_tokens"] = min(max(int(state["ab_tokens"]), 8), most_tokens)
    limit_note = f" ({most_languages} at most on this server)" if limits else ""
    chosen = st.multiselect(
        f"Languages{limit_note}",
        languages,
        key="ab_langs",
        format_func=widgets.language_label,
        max_selections=most_languages,
    )
    c1, c2 = st.columns(2)
    max_tokens = int(
        c1.number_input("Held-out tokens per language", 8, most_tokens, step=50, key="ab_tokens")
    )
    scale = c2.radio("Show", list(SCALES), horizontal=True, key="ab_scale") or "NLL per token"
    steps = len(chosen) * (len(chosen) + 1)
    st.caption(
        f"{steps} evaluations; about {steps * max_tokens / 200:.0f} s on two cores the first "
        "time, then cached."
    )
    key = (
        ctx.settings.statistics_key(),
        repr(ctx.settings.selection),
        tuple(chosen),
        max_tokens,
    )
    if st.button("Compute the matrix", type="primary", key="ab_go", disabled=len(chosen) < 2):
        st.session_state["ab_result"] = (key, _compute(ctx, chosen, max_tokens))
    found = st.session_state.get("ab_result")
    if found is None or found[0] != key:
        st.info(
            "Choose two or more languages and compute: rows deactivate one language's "
            "neurons, columns are the held-out text evaluated."
        )
        return
    matrix: AblationMatrix = found[1]
    widgets.plot(plots.ablation_heatmap(matrix, SCALES[scale]), "ablation")
    base = ", ".join(f"{c} {matrix.base[c]:.2f}" for c in matrix.languages)
    st.caption(
        f"Unmodified NLL: {base}. Mean increase on the diagonal over off it: "
        f"{matrix.diagonal_ratio():.1f}x."
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
