"""Steering lab: steer a set of prompts towards each target at several strengths and see
success and fluency as curves; click a point to read the outputs behind it."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from langneurons.errors import LangNeuronsError
from langneurons.langid import supported_languages
from langneurons.plots import steering_curves
from langneurons.prompts import embedded_prompts, prompt_languages
from langneurons.steering import (
    DISTINCT_KEEP,
    FLUENCY_NLL_RISE,
    MIN_GAIN,
    NATIVE,
    SteeringConfig,
    SteeringSweep,
    steering_sweep,
)

from .. import widgets
from ..state import PageContext, classroom, long_job, page_context
from . import recipe_use, recipes_lab

STRENGTHS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0]
OWN = "Your own"


MAX_OWN_PROMPT_CHARS = 2000
"""The longest prompt of one's own in the steering lab (a classroom may allow fewer)."""


def _prompts(limit: int) -> list[str]:
    c1, c2 = st.columns([1, 2])
    sources = [*prompt_languages(), OWN]
    st.session_state.setdefault("sl_source", "en")
    source = c1.selectbox(
        "Prompts",
        sources,
        key="sl_source",
        format_func=lambda s: s if s == OWN else f"everyday openings, {widgets.language_label(s)}",
    )
    if source == OWN:
        limits = classroom()
        longest = limits.max_prompt_chars if limits else MAX_OWN_PROMPT_CHARS
        text = c2.text_area(
            "One prompt per line", key="sl_own", height=120, max_chars=longest * limit + limit
        )
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        prompts = [line for line in lines if len(line) <= longest]
        if len(prompts) < len(lines):
            st.warning(
                f"{len(lines) - len(prompts)} prompt(s) longer than {longest:,} characters "
                "are left out."
            )
    else:
        prompts = embedded_prompts(str(source))
        c2.caption(" · ".join(prompts[:4]) + " ...")
    st.session_state.setdefault("sl_count", min(8, limit))
    st.session_state["sl_count"] = min(int(st.session_state["sl_count"]), limit)
    count = c1.number_input(f"How many (up to {limit})", 1, limit, key="sl_count")
    return prompts[: int(count)]


def _controls(ctx: PageContext) -> dict[str, Any]:
    languages = [c for c in ctx.selection.languages if c in set(supported_languages())]
    limits = classroom()
    most_targets = limits.max_ablation_languages if limits else len(languages)
    st.session_state.setdefault("sl_targets", [c for c in languages if c != "en"][:3])
    st.session_state["sl_targets"] = [c for c in st.session_state["sl_targets"] if c in languages]
    c1, c2 = st.columns(2)
    targets = c1.multiselect(
        "Steer towards",
        languages,
        key="sl_targets",
        format_func=widgets.language_label,
        max_selections=most_targets,
    )
    st.session_state.setdefault("sl_strengths", [0.0, 1.0, 2.0, 4.0])
    strengths = c2.multiselect(
        "Strengths (x the language's mean activation; 0: unmodified)",
        STRENGTHS,
        key="sl_strengths",
        format_func=lambda s: f"{s:g}",
    )
    limit = limits.max_steering_prompts if limits else 22
    prompts = _prompts(limit)
    with st.expander("How to steer"):
        c1, c2, c3 = st.columns(3)
        last = ctx.lm.num_layers - 1
        low, high = c1.slider("Layers", 0, last, (0, last), key="sl_layers")
        mode = c2.radio(
            "Steering",
            list(recipe_use.HOW),
            key="sl_mode",
            horizontal=True,
            format_func=lambda m: recipe_use.HOW[m],
        )
        off = c2.checkbox("Switch off the prompt's own language", True, key="sl_off")
        guarded = c3.checkbox(
            "Guard decoding",
            True,
            key="sl_guard",
            help="No repeated three-token sequences and no byte tokens that break a "
            "character, for every cell (the unmodified one too). Off: plain greedy decoding, "
            "where steering towards Chinese or Japanese repeats itself.",
        )
        cap = limits.max_new_tokens if limits else 100
        st.session_state.setdefault("sl_tokens", min(30, cap))
        tokens = c3.number_input(
            f"New tokens (up to {cap})", min(4, cap), cap, step=5, key="sl_tokens"
        )
    layers = None if (low, high) == (0, last) else f"{low}-{high}"
    return {
        "targets": list(targets),
        "strengths": sorted({0.0, *strengths}),
        "prompts": prompts,
        "layers": layers,
        "config": SteeringConfig(
            max_new_tokens=int(tokens),
            mode=str(mode),
            deactivate_source=bool(off),
            no_repeat_ngram=SteeringConfig().no_repeat_ngram if guarded else 0,
            byte_guard=bool(guarded),
        ),
    }


def _run(ctx: PageContext, choices: dict[str, Any]) -> SteeringSweep:
    cells = 1 + len(choices["targets"]) * (len(choices["strengths"]) - 1)
    text = f"Generating {cells} cells of {len(choices['prompts'])} prompts..."
    with long_job(ctx.settings), widgets.event_bar(text) as on_progress:
        return steering_sweep(
            ctx.lm,
            ctx.selection.masks,
            ctx.selection.languages,
            ctx.result.statistics,
            choices["targets"],
            prompts=choices["prompts"],
            strengths=choices["strengths"],
            layers=[choices["layers"]],
            config=choices["config"],
            progress=on_progress,
        )


def _recommended(sweep: SteeringSweep) -> None:
    rows = []
    for target, choice in sweep.recommended().items():
        base = sweep.cell(target, 0.0, sweep.settings["layers"][0])
        cell = sweep.cell(target, choice["strength"], choice["layers"]) if choice else None
        native = sweep.native.get(target)
        bar = sweep.fluency_bar(target)
        rows.append(
            {
                "target": widgets.language_label(target),
                "recommended strength": f"{choice['strength']:g}" if choice else "none",
                "success": f"{cell.success:.0%}" if cell else "",
                "unmodified success": f"{base.success:.0%}",
                "NLL": round(cell.nll, 2) if cell else None,
                "unmodified NLL": round(base.nll, 2),
                "model's own text NLL": round(native.nll, 2) if native else None,
                "NLL allowed": round(bar.max_nll, 2) if bar else None,
            }
        )
    st.dataframe(rows, hide_index=True)
    st.caption(
        f"Recommended: the strength with the highest success among those that keep fluency, "
        f"the lowest on a tie; none when no strength beats the unmodified model by "
        f"{MIN_GAIN:.0%}. Fluency is judged against the looser of two references: the "
        f"unmodified outputs of these prompts, and the model's own text in the target "
        f"language (the unmodified model continuing the embedded openings written in it, the "
        f"open diamonds): NLL at most {FLUENCY_NLL_RISE:g} above, distinct bigrams at least "
        f"{DISTINCT_KEEP:.0%} of the reference's."
    )


def _outputs(sweep: SteeringSweep, picked: tuple[str, float, str] | None) -> None:
    """The outputs behind one point: chosen by a click on the curves or below."""
    targets = list(dict.fromkeys(c.target for c in sweep.cells))
    strengths: list[float | str] = [*sorted({c.strength for c in sweep.cells})]
    if sweep.native:
        strengths.append(NATIVE)  # the model's own text in the target, where there is one
    if picked is not None and picked != st.session_state.get("sl_last_pick"):
        # A new click chooses; the boxes below stay the user's until the next one.
        st.session_state["sl_last_pick"] = picked
        st.session_state["sl_pick_target"], st.session_state["sl_pick_strength"] = picked[:2]
    c1, c2 = st.columns(2)
    target = c1.selectbox(
        "Outputs of", targets, key="sl_pick_target", format_func=widgets.language_label
    )
    strength = c2.selectbox(
        "at strength",
        strengths,
        key="sl_pick_strength",
        format_func=lambda s: "its own text (reference)" if s == NATIVE else f"{s:g}",
    )
    if strength == NATIVE and str(target) not in sweep.native:
        st.info(
            f"There are no embedded openings in {widgets.plain(target)}, so no reference of "
            "its own text."
        )
        return
    if strength == NATIVE:
        cell = sweep.cell(str(target), 0.0, NATIVE)
        what = f"{cell.n} openings written in {target}, continued by the unmodified model"
    else:
        cell = sweep.cell(str(target), float(strength or 0.0), sweep.settings["layers"][0])
        what = f"{cell.n} outputs towards {target} at strength {cell.strength:g}"
    st.caption(
        f"{what}: {cell.success:.0%} in {target}, every line in {target} for "
        f"{cell.line_pass_rate:.0%}; NLL {cell.nll:.2f}; distinct bigrams {cell.distinct2:.2f}."
    )
    st.dataframe(
        [
            {
                "prompt": o["prompt"],
                "continuation": o["text"],
                "detected": o["language"],
                "every line in target": o["lines_pass"],
            }
            for o in cell.outputs
        ],
        hide_index=True,
    )


def render(ctx: PageContext) -> None:
    st.markdown(
        "Steer a set of prompts towards each language at several strengths and measure how "
        "often the output is in that language (**success**) and what it costs in fluency "
        "(**NLL** of the output under the unmodified model; **distinct bigrams** fall when "
        "the text repeats itself)."
    )
    if ctx.result.statistics is None:
        st.info("Steering needs the run's statistics (mean activations); these masks have none.")
        return
    recipes_lab.render(ctx)
    st.subheader("Sweep: success and fluency per strength")
    choices = _controls(ctx)
    key = (ctx.settings.statistics_key(), repr(ctx.settings.selection), repr(choices))
    ready = choices["targets"] and choices["prompts"]
    if st.button("Run the sweep", type="primary", key="sl_go", disabled=not ready):
        try:
            st.session_state["sl_result"] = (key, _run(ctx, choices))
        except LangNeuronsError as exc:
            widgets.error(exc)
            return
    found = st.session_state.get("sl_result")
    if found is None:
        st.info("Choose target languages and strengths, then run the sweep (cached after).")
        return
    sweep: SteeringSweep = found[1]
    if found[0] != key:
        st.warning("Out of date: these curves are for earlier choices; run the sweep again.")
    event = st.plotly_chart(
        steering_curves(sweep),
        width="stretch",
        key="sl_curves",
        on_select="rerun",
        selection_mode="points",
    )
    picked = None
    selection: Any = event.get("selection", {}) if event else {}
    points: list[Any] = selection.get("points", []) if selection else []
    if points and points[0].get("customdata"):
        target, strength, layers = points[0]["customdata"]
        picked = (str(target), float(strength), str(layers))
    _recommended(sweep)
    _outputs(sweep, picked)
    st.download_button(
        "steering.json",
        json.dumps(sweep.to_json(outputs=True), ensure_ascii=False, indent=2),
        file_name="steering.json",
        mime="application/json",
        key="sl_download",
        on_click="ignore",
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
