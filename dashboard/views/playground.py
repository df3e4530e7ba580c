"""Playground: a prompt continued by the unmodified model and, beside it, with language
neurons deactivated or steered; both stream as they are generated.

Each control starts from what its label promises and stays in step with the others:
the example box names the example the prompt holds (or "custom"), an example brings an
intervention that makes sense for it, the heatmaps show the neurons the intervention is
about until the user picks others, the two modes keep their own choices, Reset restores
every control, and a new set of languages keeps only the choices it still allows.

Once Generate is pressed the controls fold away, so that on a laptop screen both texts
and a compact heatmap beside each stay in view while they stream.  Generation runs in
a producer thread (``live.Producer``); the page samples its newest state a few times a
second and redraws what changed, lightly, and the finished pair once in full detail.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from langneurons.config import ConfigError
from langneurons.errors import LangNeuronsError
from langneurons.generation import GenerationConfig, stream_side_by_side
from langneurons.interventions import Intervention
from langneurons.prompts import example_prompts
from langneurons.trace import TraceSpec
from langneurons.workflows import NothingToChange, intervention_for

from .. import live, traces, widgets
from ..server import LiveStreams
from ..state import (
    PageContext,
    classroom,
    forget,
    live_streams,
    page_context,
    remember,
    seed,
)
from . import recipe_use
from .pair_view import Outputs

MODES = ("Deactivate", "Steer")
LIVE_INTERVAL = 0.5  # seconds between live pictures while tokens stream
TARGETS = ("ja", "fr", "de")  # languages to steer towards first, when one fits
# Less empty space above the page's first row: the outputs start higher on a laptop.
PAGE_CSS = (
    "<style>[data-testid='stMainBlockContainer']{padding-top:4.5rem !important}"
    ".ln-side-head{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}</style>"
)
CUSTOM = "(custom)"
MAX_PROMPT_CHARS = 2000


def _defaults(languages: list[str], num_layers: int) -> dict[str, Any]:
    """What every control shows on a first visit and after Reset."""
    examples = example_prompts(languages)
    # French first (the classic demo), else the first language other than English, whose
    # few neurons change little.
    example = next((c for c in ("fr", *examples) if c in examples and c != "en"), None)
    example = example or next(iter(examples), CUSTOM)
    return {
        "pg_example": example,
        "pg_prompt": examples.get(example, "Hello"),
        "pg_mode": MODES[0],
        "pg_off": [example] if example in languages else languages[:1],
        "pg_target": _other_target(languages, example),
        "pg_strength": 1.0,
        "pg_how": "set",
        "pg_steer_off": [],
        "pg_layers": (0, num_layers - 1),
        "pg_pairs": "",
    }


def _other_target(languages: list[str], example: str) -> str:
    """A language to steer an example towards: never its own (Japanese, French or German
    first, whose continuations change visibly)."""
    others = [c for c in languages if c != example] or languages
    return next((c for c in TARGETS if c in others), others[-1])


def _settle(languages: list[str], num_layers: int) -> dict[str, str]:
    """Seed every control (remembered values, the link, else defaults) and drop choices
    the current languages no longer allow; returns the example prompts."""
    defaults = _defaults(languages, num_layers)
    for key, value in defaults.items():
        seed(key, value)
    examples = example_prompts(languages)
    state = st.session_state
    if state["pg_example"] != CUSTOM and state["pg_example"] not in examples:
        state["pg_example"], state["pg_prompt"] = defaults["pg_example"], defaults["pg_prompt"]
    if examples.get(state["pg_example"]) != state["pg_prompt"]:
        # The example box names the example the prompt holds: a link's own prompt is custom.
        state["pg_example"] = _example_of(examples, str(state["pg_prompt"]))
    if state["pg_mode"] not in MODES:
        state["pg_mode"] = MODES[0]
    kept_off = [c for c in state["pg_off"] if c in languages]
    # Languages that are gone leave the default choice, not an empty one.
    state["pg_off"] = kept_off if kept_off or not state["pg_off"] else defaults["pg_off"]
    state["pg_steer_off"] = [c for c in state["pg_steer_off"] if c in languages]
    if state["pg_target"] not in languages:
        state["pg_target"] = defaults["pg_target"]
    low, high = state["pg_layers"]
    high = min(max(high, 0), num_layers - 1)
    state["pg_layers"] = (min(max(low, 0), high), high)
    state["pg_strength"] = min(max(float(state["pg_strength"]), 0.0), 8.0)
    if state["pg_how"] not in recipe_use.HOW:
        state["pg_how"] = "set"
    return examples


def _prompt_cap() -> int:
    """The longest prompt: the page's own limit, or a classroom server's lower one."""
    limits = classroom()
    return min(MAX_PROMPT_CHARS, limits.max_prompt_chars) if limits else MAX_PROMPT_CHARS


def _example_of(examples: dict[str, str], prompt: str) -> str:
    return next((c for c, text in examples.items() if text == prompt), CUSTOM)


def _example_chosen() -> None:
    """The example's prompt, and an intervention that makes sense for it in the current
    mode: Deactivate switches off the example's own language; Steer steers towards
    another language than the example's and deactivates the prompt's own (detected)."""
    state = st.session_state
    example, examples = state["pg_example"], state["_pg_examples"]
    if example not in examples:
        return
    state["pg_prompt"] = examples[example]
    languages = state["_pg_languages"]
    if example not in languages:
        return
    if state["pg_mode"] == "Steer":
        if state["pg_target"] == example:
            state["pg_target"] = _other_target(languages, example)
        state["pg_steer_off"] = []
    else:
        state["pg_off"] = [example]


def _mode_chosen() -> None:
    """Steering starts towards another language than the example's own."""
    state = st.session_state
    example = state["pg_example"]
    if state["pg_mode"] == "Steer" and state.get("pg_target") == example:
        state["pg_target"] = _other_target(state["_pg_languages"], example)


def _prompt_edited() -> None:
    """The example box follows the prompt: the example it holds, or custom."""
    state = st.session_state
    state["pg_example"] = _example_of(state["_pg_examples"], state["pg_prompt"])


def _reset() -> None:
    forget("pg_")
    st.session_state.pop("pg_last", None)
    st.session_state.pop("pg_trace_for", None)


def _generating() -> None:
    """Generate folds the controls away: the outputs take the screen."""
    st.session_state["pg_folded"] = True


def _controls(ctx: PageContext, examples: dict[str, str]) -> dict[str, Any]:
    """The prompt and the intervention's controls; returns the choices."""
    languages, num_layers = ctx.selection.languages, ctx.lm.num_layers
    found, problem = recipe_use.book(ctx)
    recipe_use.settle(ctx, found)
    st.session_state["_pg_examples"] = examples
    st.session_state["_pg_languages"] = languages
    c1, c2 = st.columns([1, 3])
    c1.selectbox(
        "Example prompt",
        [CUSTOM, *examples],
        key="pg_example",
        format_func=lambda c: c if c == CUSTOM else f"{widgets.language_label(c)}",
        on_change=_example_chosen,
    )
    most = _prompt_cap()
    st.session_state["pg_prompt"] = str(st.session_state["pg_prompt"])[:most]
    c2.text_area("Prompt", key="pg_prompt", height=68, max_chars=most, on_change=_prompt_edited)
    # One row: the mode, then its controls (a compact page: the outputs stay in view).
    c0, c1, c2, c3 = st.columns([1, 2, 2, 2])
    mode = c0.radio("Intervention", MODES, key="pg_mode", on_change=_mode_chosen)
    if mode == "Deactivate":
        c1.multiselect(
            "Deactivate the neurons of", languages, key="pg_off", format_func=widgets.language_label
        )
        c3.text_input("Single neurons to deactivate (layer:neuron, ...)", key="pg_pairs")
    else:
        c1.selectbox(
            "Steer towards", languages, key="pg_target", format_func=widgets.language_label
        )
        c3.slider(
            "Strength (x mean activation)",
            0.0,
            8.0,
            step=0.25,
            key="pg_strength",
            help="1-2 usually keeps fluent text; from 3 it degrades; at 5 and above it "
            "collapses into repeated tokens.",
        )
        c1.selectbox(
            "How", list(recipe_use.HOW), key="pg_how", format_func=lambda m: recipe_use.HOW[m]
        )
        st.multiselect(
            "Also deactivate (empty: the prompt's own language, detected)",
            languages,
            key="pg_steer_off",
            format_func=widgets.language_label,
        )
    c2.slider("Layers", 0, num_layers - 1, key="pg_layers")
    if mode == "Steer":
        recipe_use.note(ctx, found, problem, st)
    choices = {key: st.session_state[key] for key in _defaults(languages, num_layers)}
    for key, value in choices.items():
        remember(key, value)
    return choices


def _intervention(ctx: PageContext, choices: dict[str, Any]) -> Intervention:
    """The choices as an intervention (the library's rule, shared with ``generate``)."""
    low, high = choices["pg_layers"]
    layers = None if (low, high) == (0, ctx.lm.num_layers - 1) else f"{low}-{high}"
    steering = choices["pg_mode"] == "Steer"
    return intervention_for(
        ctx.lm,
        ctx.selection.masks,
        ctx.selection.languages,
        ctx.result.statistics,
        deactivate_languages=choices["pg_steer_off"] if steering else choices["pg_off"],
        steer_language=choices["pg_target"] if steering else None,
        strength=float(choices["pg_strength"]),
        mode=str(choices["pg_how"]) if steering else "set",
        layers=layers,
        neurons=None if steering else (choices["pg_pairs"].strip() or None),
        prompt=choices["pg_prompt"],
    )


def _describe(intervention: Intervention) -> str:
    return ", ".join(f"{k} {v}" for k, v in intervention.describe().items())


def _default_trace_language(choices: dict[str, Any]) -> str:
    """The heatmaps first show what the intervention is about: the language steered
    towards, or the first one deactivated."""
    if choices["pg_mode"] == "Steer":
        return str(choices["pg_target"])
    return str((choices["pg_off"] or [choices["pg_example"]])[0])


def _follow_intervention(choices: dict[str, Any], languages: list[str]) -> str:
    """The heatmaps' language follows the intervention: whenever the mode, the example or
    the languages it is about change, it becomes the one the intervention is about; a
    language the user picks stays until the intervention changes again."""
    default = _default_trace_language(choices)
    steering = choices["pg_mode"] == "Steer"
    about = (
        choices["pg_mode"],
        choices["pg_example"],
        choices["pg_target"] if steering else tuple(choices["pg_off"]),
    )
    if st.session_state.get("pg_trace_for") != about:
        st.session_state["pg_trace_for"] = about
        if default in languages:
            st.session_state["pg_trace_lang"] = default
            remember("pg_trace_lang", default)
    return default


def _pair(prompt: str, prompt_tokens: int, intervention: str, state: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "prompt_tokens": prompt_tokens,
        "baseline": state.baseline,
        "modified": state.modified,
        "baseline_language": state.baseline_language[0],
        "modified_language": state.modified_language[0],
        "baseline_trace": state.baseline_trace,
        "modified_trace": state.modified_trace,
        "intervention": intervention,
    }


def _generate(
    ctx: PageContext,
    choices: dict[str, Any],
    config: GenerationConfig,
    view: traces.TraceView,
    with_lines: bool,
) -> None:
    prompt = choices["pg_prompt"]
    languages = ctx.selection.languages
    try:
        intervention = _intervention(ctx, choices)
        steps = stream_side_by_side(
            ctx.lm,
            prompt,
            intervention,
            config,
            sorted({*languages, "en"}),
            trace=TraceSpec.from_masks(ctx.selection.masks, languages),
        )
        first = next(steps)  # bad input fails here, before any box is drawn
    except NothingToChange:
        st.warning(
            "Nothing to change: choose languages to deactivate, a language to steer towards, "
            "or single neurons."
        )
        return
    except LangNeuronsError as exc:
        widgets.error(exc)
        return
    described = _describe(intervention)
    outputs = Outputs(described, with_lines)
    prompt_tokens = len(first.baseline_trace.tokens) if first.baseline_trace else 0
    producer = live.Producer(steps)
    producer.latest.put(live.snapshot(first))
    streams = live_streams()
    with streams.streaming():
        try:
            producer.start()
            pair = _stream(
                ctx, (prompt, prompt_tokens, described), producer, outputs, view, streams
            )
        except LangNeuronsError as exc:
            widgets.error(exc)
            return
        finally:
            producer.stop()  # a rerun or a closed page ends the generation too
    st.session_state["pg_last"] = pair


def _stream(
    ctx: PageContext,
    about: tuple[str, int, str],
    producer: live.Producer,
    outputs: Outputs,
    view: traces.TraceView,
    streams: LiveStreams,
) -> dict[str, Any]:
    """Draw the newest state a few times a second (less often while many sessions
    stream), the first words as soon as they exist, and the finished pair in full: the
    producer generates meanwhile, whatever the drawing costs."""
    drawn, not_before, shown_text = 0, 0.0, False
    while True:
        sample = producer.latest.wait(drawn, not_before)
        if sample.error is not None:
            raise sample.error
        state = sample.state
        final = sample.finished and bool(state.done)
        if sample.version > drawn or final:
            pair = _pair(*about, state)
            outputs.draw(ctx, pair, view, final)
            drawn = sample.version
            shown_text = shown_text or bool(state.baseline or state.modified)
            # Until the first words are on screen, every new state is drawn at once.
            wait = streams.interval(LIVE_INTERVAL) if shown_text else 0.0
            not_before = time.monotonic() + wait
        if sample.finished:
            return pair


def _show(ctx: PageContext, pair: dict[str, Any], view: traces.TraceView, lines: bool) -> None:
    """The last comparison, redrawn (another heatmap language or view needs no new run)."""
    Outputs(pair["intervention"], lines).draw(ctx, pair, view, final=True)


def render(ctx: PageContext) -> None:
    examples = _settle(ctx.selection.languages, ctx.lm.num_layers)
    folded = bool(st.session_state.get("pg_folded")) and "pg_last" in st.session_state
    folded = folded or bool(st.session_state.get("pg_go"))
    with st.expander("Prompt and intervention", expanded=not folded):
        choices = _controls(ctx, examples)
    languages = ctx.selection.languages
    default = _follow_intervention(choices, languages)
    # Two compact rows: the buttons, the generation settings and the colours; then how
    # the heatmaps show the pair.
    row = st.columns([1.1, 0.9, 1.1, 5.4], vertical_alignment="center")
    go = row[0].button(
        "Generate", type="primary", key="pg_go", width="stretch", on_click=_generating
    )
    row[1].button("Reset", key="pg_reset", on_click=_reset, width="stretch")
    with row[2].popover("Settings", width="stretch", help="Generation settings"):
        limits = classroom()
        caps = {"max_new_tokens": limits.max_new_tokens} if limits else None
        values = widgets.setting_widgets(
            GenerationConfig, st, prefix="pg_gen_", numbers=True, caps=caps
        )
    row[3].markdown(
        PAGE_CSS + traces.legend_markdown(languages, short=True), unsafe_allow_html=True
    )
    shown = st.columns([2.2, 2.6, 2.3, 1.2], vertical_alignment="center")
    view = traces.controls(languages, default, "pg", columns=list(shown[:3]))
    with_lines = bool(
        shown[3].toggle(
            "Lines",
            key="pg_lines",
            help="Each language's neurons token by token (all layers pooled), under each "
            "heatmap: where the text turns to another language, its line rises.",
        )
    )
    if not go:
        if "pg_last" in st.session_state:
            _show(ctx, st.session_state["pg_last"], view, with_lines)
        return
    if not choices["pg_prompt"].strip():
        st.warning("Write a prompt to continue, or pick an example.")
        return
    if len(choices["pg_prompt"]) > _prompt_cap():  # a widget limits it; a script might not
        st.warning(f"The prompt is longer than the {_prompt_cap()} characters allowed.")
        return
    try:
        config = GenerationConfig(**values)
    except ConfigError as exc:
        widgets.error(exc)
        return
    _generate(ctx, choices, config, view, with_lines)


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
