"""Detectors side by side on the statistics shown: where each detector's neurons are,
how much the detectors agree, and (on demand) what their neurons do when switched off
or used to steer."""

from __future__ import annotations

import json

import streamlit as st

from langneurons.comparison import DEFAULT_PROMPTS, DetectorComparison, compare_detectors
from langneurons.errors import LangNeuronsError
from langneurons.plots import detector_layers, detector_overlap
from langneurons.prompts import embedded_prompts
from langneurons.selection import DETECTORS, detector_for

from .. import widgets
from ..state import PageContext, classroom, long_job, page_context

ALL = "all languages"
STEER_TOKENS = 30
"""New tokens per steered opening when measuring what the neurons do."""


def _steering_caps() -> tuple[int, int]:
    """Openings steered and new tokens per output when measuring what the neurons do:
    the defaults, or fewer where a classroom server caps them."""
    limits = classroom()
    if limits is None:
        return DEFAULT_PROMPTS, STEER_TOKENS
    return (
        min(DEFAULT_PROMPTS, limits.max_steering_prompts),
        min(STEER_TOKENS, limits.max_new_tokens),
    )


def _compare(
    ctx: PageContext, methods: list[str], effects: bool, tokens: int
) -> DetectorComparison:
    shown = detector_for(ctx.settings.selection).name
    prompts, new_tokens = _steering_caps()
    text = "Measuring each detector's neurons..." if effects else "Selecting with each detector..."
    with long_job(ctx.settings), widgets.event_bar(text) as on_progress:
        return compare_detectors(
            ctx.lm,
            ctx.result.as_run(),
            methods,
            effects=effects,
            max_tokens=tokens,
            prompts=embedded_prompts("en")[:prompts],
            max_new_tokens=new_tokens,
            configs={shown: ctx.settings.selection},
            progress=on_progress,
        )


def _effects_table(comparison: DetectorComparison) -> None:
    frame = comparison.effects()
    if frame["own_nll_increase"].isna().all():
        return
    st.subheader("What the neurons do")
    order = comparison.languages
    wide = frame.pivot(index="method", columns="language", values="own_nll_increase")[order]
    steer = frame.pivot(index="method", columns="language", values="steering_success")[order]
    ratio = frame.groupby("method", sort=False)["diagonal_ratio"].first()
    c1, c2 = st.columns([3, 2])
    c1.markdown("**Own NLL increase** with the language's neurons off (nats per token)")
    c1.dataframe(wide.loc[comparison.methods].round(2))
    c2.markdown("**Diagonal ratio** (own increase over others', higher: more selective)")
    c2.dataframe(ratio.loc[comparison.methods].round(1).rename("ratio").to_frame())
    st.markdown(
        f"**Steering success at strength 1** (share of {_steering_caps()[0]} English openings "
        "continued in the language; blank: English, or no neurons to steer)"
    )
    st.dataframe(steer.loc[comparison.methods].drop(columns=["en"], errors="ignore").round(2))


def render(ctx: PageContext) -> None:
    st.markdown(
        "Each detector picks the neurons of each language its own way. See where their "
        "neurons are and how much they agree; then measure what they **do**: switching a "
        "language's neurons off should hurt that language most, and setting them to their "
        "mean should steer output into it."
    )
    limits = classroom()
    methods = list(DETECTORS)
    st.session_state.setdefault("dc_methods", methods)
    c1, c2 = st.columns([3, 2])
    chosen = c1.multiselect(
        "Detectors",
        methods,
        key="dc_methods",
        help=" ".join(f"**{d.name}**, {d.title}: {d.summary}" for d in DETECTORS.values()),
    )
    shown = detector_for(ctx.settings.selection).name
    c2.caption(
        f"{DETECTORS[shown].title} uses the sidebar's settings; the others their defaults. "
        "Average precision collects per-text activations with the model first (once)."
    )
    most_tokens = limits.max_ablation_tokens if limits else 2000
    too_many = limits is not None and len(ctx.selection.languages) > limits.max_ablation_languages
    c1, c2, c3 = st.columns([1, 1.6, 2.4], vertical_alignment="bottom")
    go = c1.button("Compare", type="primary", key="dc_go", disabled=len(chosen) < 2)
    tokens = c3.number_input(
        f"Held-out tokens per language (up to {most_tokens})",
        8,
        most_tokens,
        min(300, most_tokens),
        step=50,
        key="dc_tokens",
    )
    measure = c2.button(
        "Measure what they do",
        key="dc_measure",
        disabled=len(chosen) < 2 or too_many,
        help="Per detector: the ablation matrix on the held-out text and steering at "
        f"strength 1 on {_steering_caps()[0]} English openings (minutes on a CPU; cached after)."
        + (
            f" This server measures at most {limits.max_ablation_languages} languages."
            if too_many and limits
            else ""
        ),
    )
    key = (ctx.settings.statistics_key(), repr(ctx.settings.selection), tuple(chosen))
    if go or measure:
        try:
            found = _compare(ctx, list(chosen), bool(measure), int(tokens))
        except LangNeuronsError as exc:
            widgets.error(exc)
            return
        st.session_state["dc_result"] = (key, found)
    stored = st.session_state.get("dc_result")
    if stored is None:
        st.info("Choose two or more detectors and press **Compare**.")
        return
    comparison: DetectorComparison = stored[1]
    if stored[0] != key:
        st.warning("Out of date: this comparison is for earlier choices; compare again.")
    st.subheader("Neurons per language")
    st.dataframe(comparison.neurons())
    languages = comparison.languages
    c1, c2 = st.columns(2)
    where = c1.selectbox("Layers of", [ALL, *languages], key="dc_layers_of")
    c1.plotly_chart(
        detector_layers(comparison, None if where == ALL else str(where)), width="stretch"
    )
    st.session_state.setdefault("dc_overlap_of", languages[-1])
    if st.session_state["dc_overlap_of"] not in languages:
        st.session_state["dc_overlap_of"] = languages[-1]
    which = c2.selectbox(
        "Overlap for", languages, key="dc_overlap_of", format_func=widgets.language_label
    )
    c2.plotly_chart(detector_overlap(comparison, str(which)), width="stretch")
    _effects_table(comparison)
    st.download_button(
        "detectors.json",
        json.dumps(comparison.to_json(), indent=2),
        file_name="detectors.json",
        mime="application/json",
        key="dc_download",
        on_click="ignore",
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
