"""Guided tour: six steps through the main finding, for a class, with live generation."""

from __future__ import annotations

import streamlit as st

from langneurons import plots
from langneurons.generation import GenerationConfig, stream
from langneurons.interventions import Intervention, deactivate, language_neurons
from langneurons.langid import detect_language
from langneurons.prompts import EXAMPLE_PROMPTS, code_switched
from langneurons.recipes import Recipe
from langneurons.trace import TraceSpec, trace_text
from langneurons.workflows import intervention_for

from .. import widgets
from ..state import PageContext, classroom, page_context
from . import recipe_use

TOUR = [
    (
        "Every language has its own neurons",
        "LAPE counts how often each MLP neuron fires (value > 0) on text of each language and "
        "keeps the 1% with the most uneven firing. The chart shows how many each language gets.",
    ),
    (
        "They sit in the first and last layers",
        "Most language neurons are in the last layers (producing the language) and, for "
        "Latin-script languages, the first ones (reading it). The middle is shared.",
    ),
    (
        "Watch the model switch languages mid-sentence",
        "Read a text that changes language half-way: each token is coloured by the language "
        "whose neurons fire most on it, and the chart follows every language's neurons token by "
        "token. When the text switches, so do the neurons.",
    ),
    (
        "Switch French off",
        "Deactivate the French neurons (set them to 0) and continue a French sentence: the model "
        "loses French and drifts into another language, while switching off Japanese neurons "
        "leaves French intact.",
    ),
    (
        "Steer the model into another language",
        "Set the Japanese neurons to their mean activation on Japanese and switch the English ones "
        "off: an English prompt continues in Japanese.",
    ),
    (
        "The diagonal",
        "Switching a language's neurons off hurts that language's text most: the Ablation "
        "page measures this for all pairs. Try it next, or trace your own text.",
    ),
]


TRACE_STEP = 2
TOUR_TOKENS = 25
"""New tokens per continuation in the tour's generation steps (a classroom may allow fewer)."""
GENERATION_STEPS = (3, 4)


def _trace_step(ctx: PageContext) -> None:
    """The trace of a code-switched text: coloured tokens and each language's line."""
    languages = ctx.selection.languages
    text = code_switched(languages)
    spec = TraceSpec.from_masks(ctx.selection.masks, languages)
    trace = trace_text(ctx.lm, spec, text)
    st.markdown(plots.legend_html(languages), unsafe_allow_html=True)
    st.markdown(
        widgets.output_box("", "", body_html=plots.tokens_html(trace)), unsafe_allow_html=True
    )
    st.plotly_chart(plots.trace_lines(trace), width="stretch", key="tour_trace")


def _interventions(ctx: PageContext, step: int) -> tuple[str, list[tuple[str, Intervention]]]:
    """The prompt and the labelled interventions a generation step compares."""
    masks, languages = ctx.selection.masks, ctx.selection.languages
    if step == GENERATION_STEPS[0]:
        return EXAMPLE_PROMPTS["fr"], [
            (f"{name} neurons off", deactivate(language_neurons(masks, languages, [code]), code))
            for code, name in (("fr", "French"), ("ja", "Japanese"))
        ]
    prompt = EXAMPLE_PROMPTS["en"]
    found, _ = recipe_use.book(ctx)
    stored = found.recipe("ja") if found is not None else None
    recipe = stored or Recipe()
    steered = intervention_for(
        ctx.lm,
        masks,
        languages,
        ctx.result.statistics,
        steer_language="ja",
        prompt=prompt,
        strength=recipe.strength,
        mode=recipe.mode,
        layers=recipe.band,
    )
    label = "steered to Japanese"
    if stored is not None:
        label += f" (stored recipe: {stored.describe()})"
    return prompt, [(label, steered)]


def _run_generation(ctx: PageContext, step: int) -> None:
    """Unmodified and modified continuations, each streamed into its column as it grows."""
    prompt, changes = _interventions(ctx, step)
    limits = classroom()  # a classroom's cap holds here too
    tokens = min(TOUR_TOKENS, limits.max_new_tokens) if limits else TOUR_TOKENS
    config = GenerationConfig(max_new_tokens=tokens)
    candidates = [*ctx.selection.languages, "en"]
    columns = st.columns(1 + len(changes))
    for column, (label, intervention) in zip(
        columns, [("Unmodified", None), *changes], strict=True
    ):
        column.markdown(f"**{widgets.plain(label)}**")
        slot, text = column.empty(), ""
        for piece in stream(ctx.lm, prompt, config, intervention):
            text += piece
            slot.markdown(widgets.output_box(prompt, text, waiting=True), unsafe_allow_html=True)
        language = detect_language(text, candidates)[0]
        slot.markdown(widgets.output_box(prompt, text, language), unsafe_allow_html=True)


def render(ctx: PageContext) -> None:
    step = st.session_state.setdefault("tour_step", 0)
    title, text = TOUR[step]
    st.progress((step + 1) / len(TOUR), text=f"Step {step + 1} of {len(TOUR)}")
    st.subheader(title)
    st.write(text)
    counts = ctx.selection.counts().numpy()
    languages = ctx.selection.languages
    if step == 0:
        totals = dict(zip(languages, counts.sum(0).tolist(), strict=True))
        figure = plots.language_bars(totals, "Language neurons per language", "neurons")
        st.plotly_chart(figure, width="stretch", key="tour0")
    elif step == 1:
        figure = plots.layer_distribution(ctx.selection)
        st.plotly_chart(figure, width="stretch", key="tour1")
    elif step == TRACE_STEP:
        _trace_step(ctx)
    elif step in GENERATION_STEPS:
        needed = {"fr", "ja"} if step == GENERATION_STEPS[0] else {"en", "ja"}
        if not needed <= set(languages):
            widgets.warning(f"This step needs {', '.join(sorted(needed))} among the languages.")
        elif st.button("Run it", key=f"tour_run_{step}", type="primary"):
            _run_generation(ctx, step)
    c1, c2, _ = st.columns([1, 1, 6])
    if c1.button("Back", disabled=step == 0, key="tour_back"):
        st.session_state["tour_step"] = step - 1
        st.rerun()
    if c2.button("Next", disabled=step == len(TOUR) - 1, key="tour_next", type="primary"):
        st.session_state["tour_step"] = step + 1
        st.rerun()


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
