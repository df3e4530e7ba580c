"""Playground: a prompt continued by the unmodified model and, beside it, with language
neurons deactivated or steered; both stream as they are generated.

Each control starts from what its label promises and stays in step with the others:
the example box names the example the prompt holds (or "custom"), the two modes keep
their own choices, Reset restores every control, and a new set of languages keeps only
the choices it still allows.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import streamlit as st

from langneurons.config import ConfigError
from langneurons.errors import LangNeuronsError
from langneurons.generation import GenerationConfig, stream_side_by_side
from langneurons.interventions import Intervention
from langneurons.prompts import example_prompts
from langneurons.trace import TraceSpec
from langneurons.workflows import NothingToChange, intervention_for

from .. import traces, widgets
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

MODES = ("Deactivate", "Steer")
LIVE_INTERVAL = 0.5  # seconds between live pictures while tokens stream
CUSTOM = "(custom)"
MAX_PROMPT_CHARS = 2000


def _defaults(languages: list[str], num_layers: int) -> dict[str, Any]:
    """What every control shows on a first visit and after Reset."""
    examples = example_prompts(languages)
    # French first (the classic demo), else the first language other than English, whose
    # few neurons change little.
    example = next((c for c in ("fr", *examples) if c in examples and c != "en"), None)
    example = example or next(iter(examples), CUSTOM)
    target = next((c for c in ("ja", "fr", "de") if c in languages and c != example), None)
    return {
        "pg_example": example,
        "pg_prompt": examples.get(example, "Hello"),
        "pg_mode": MODES[0],
        "pg_off": [example] if example in languages else languages[:1],
        "pg_target": target or languages[-1],
        "pg_strength": 1.0,
        "pg_steer_off": [],
        "pg_layers": (0, num_layers - 1),
        "pg_pairs": "",
    }


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
    return examples


def _prompt_cap() -> int:
    """The longest prompt: the page's own limit, or a classroom server's lower one."""
    limits = classroom()
    return min(MAX_PROMPT_CHARS, limits.max_prompt_chars) if limits else MAX_PROMPT_CHARS


def _example_chosen() -> None:
    example = st.session_state["pg_example"]
    examples = st.session_state["_pg_examples"]
    if example in examples:
        st.session_state["pg_prompt"] = examples[example]


def _prompt_edited() -> None:
    """The example box follows the prompt: the example it holds, or custom."""
    prompt = st.session_state["pg_prompt"]
    examples = st.session_state["_pg_examples"]
    st.session_state["pg_example"] = next((c for c, t in examples.items() if t == prompt), CUSTOM)


def _reset() -> None:
    forget("pg_")
    st.session_state.pop("pg_last", None)


def _controls(ctx: PageContext, examples: dict[str, str]) -> dict[str, Any]:
    """The prompt and the intervention's controls; returns the choices."""
    languages, num_layers = ctx.selection.languages, ctx.lm.num_layers
    st.session_state["_pg_examples"] = examples
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
    mode = c0.radio("Intervention", MODES, key="pg_mode")
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
        st.multiselect(
            "Also deactivate (empty: the prompt's own language, detected)",
            languages,
            key="pg_steer_off",
            format_func=widgets.language_label,
        )
    c2.slider("Layers", 0, num_layers - 1, key="pg_layers")
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


class _Outputs:
    """The two columns: a header, the output box and the heatmap of each continuation."""

    def __init__(self, intervention: str) -> None:
        left, right = st.columns(2)
        left.markdown("**Unmodified**")
        right.markdown(f"**Modified** — {widgets.plain(intervention)}")
        self.boxes = (left.empty(), right.empty())
        self.lines = (left.empty(), right.empty())
        self.maps = (left.empty(), right.empty())
        self.draws = 0

    def draw(
        self,
        ctx: PageContext,
        pair: dict[str, Any],
        view: traces.TraceView,
        waiting: bool,
        details: bool = True,
    ) -> None:
        base, modified = pair["baseline_trace"], pair["modified_trace"]
        for i, (key, trace) in enumerate((("baseline", base), ("modified", modified))):
            html = traces.box(
                ctx.lm.tokenizer,
                trace,
                pair["prompt"],
                pair[key],
                pair.get(f"{key}_language"),
                waiting,
                pair["prompt_tokens"],
                after=view.after and i == 1,
                tooltips=details,
            )
            self.boxes[i].markdown(html, unsafe_allow_html=True)
        prompt_tokens = pair["prompt_tokens"]
        self.draws += 1
        keys = (f"pg_map_base_{self.draws}", f"pg_map_modified_{self.draws}")
        for i, trace in enumerate((base, modified)):
            after = view.after and i == 1
            traces.lines(self.lines[i], f"pg_lines_{i}_{self.draws}", trace, after, prompt_tokens)
        traces.heatmap(self.maps[0], keys[0], base, view, prompt_tokens, hover=details)
        if view.difference:
            title = f"{view.language} neurons: modified − unmodified"
            traces.heatmap(
                self.maps[1], keys[1], modified, view, prompt_tokens, base, title, details
            )
        else:
            traces.heatmap(self.maps[1], keys[1], modified, view, prompt_tokens, hover=details)


def _generate(
    ctx: PageContext, choices: dict[str, Any], config: GenerationConfig, view: traces.TraceView
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
    outputs = _Outputs(_describe(intervention))
    prompt_tokens = len(first.baseline_trace.tokens) if first.baseline_trace else 0
    streams = live_streams()
    with streams.streaming():
        pair = _stream(
            ctx, prompt, prompt_tokens, intervention, first, steps, outputs, view, streams
        )
    st.session_state["pg_last"] = pair


def _stream(
    ctx: PageContext,
    prompt: str,
    prompt_tokens: int,
    intervention: Intervention,
    first: Any,
    steps: Iterator[Any],
    outputs: _Outputs,
    view: traces.TraceView,
    streams: LiveStreams,
) -> dict[str, Any]:
    """Draw the pair as it streams: a few pictures a second (fewer while many sessions
    stream at once), the whole picture at the end."""
    pair: dict[str, Any] = {}
    drawn = 0.0
    shown_text = False
    for state in itertools.chain([first], steps):  # lazily: each step as it comes
        pair = {
            "prompt": prompt,
            "prompt_tokens": prompt_tokens,
            "baseline": state.baseline,
            "modified": state.modified,
            "baseline_language": state.baseline_language[0],
            "modified_language": state.modified_language[0],
            "baseline_trace": state.baseline_trace,
            "modified_trace": state.modified_trace,
            "intervention": _describe(intervention),
        }
        # A few pictures a second while tokens stream (lighter ones: no hover details),
        # the whole picture at the end: the browser keeps up, generation is not slowed.
        # The first words at once, whatever the load: a wait shows it has begun.
        first_words = not shown_text and bool(state.baseline or state.modified)
        if (
            state.done
            or first_words
            or time.perf_counter() - drawn > streams.interval(LIVE_INTERVAL)
        ):
            outputs.draw(ctx, pair, view, waiting=not state.done, details=state.done)
            drawn = time.perf_counter()
            shown_text = shown_text or first_words
    return pair


def _show(ctx: PageContext, pair: dict[str, Any], view: traces.TraceView) -> None:
    """The last comparison, redrawn (another heatmap language or view needs no new run)."""
    _Outputs(pair["intervention"]).draw(ctx, pair, view, waiting=False)


def render(ctx: PageContext) -> None:
    examples = _settle(ctx.selection.languages, ctx.lm.num_layers)
    choices = _controls(ctx, examples)
    with st.expander("Generation settings"):
        limits = classroom()
        caps = {"max_new_tokens": limits.max_new_tokens} if limits else None
        values = widgets.setting_widgets(
            GenerationConfig, st, prefix="pg_gen_", numbers=True, caps=caps
        )
    languages = ctx.selection.languages
    view = traces.controls(languages, _default_trace_language(choices), "pg")
    b1, b2, _ = st.columns([1, 1, 5])
    go = b1.button("Generate", type="primary", key="pg_go", width="stretch")
    b2.button("Reset", key="pg_reset", on_click=_reset, width="stretch")
    traces.legend(languages)
    if not go:
        if "pg_last" in st.session_state:
            _show(ctx, st.session_state["pg_last"], view)
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
    _generate(ctx, choices, config, view)


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
