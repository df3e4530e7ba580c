"""The set-up panel: the model, the corpus and languages (or a run folder to open), and
how neurons are selected.  Returns the :class:`~dashboard.state.Settings` it shows."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import state, widgets
from langneurons.config import ConfigError, CountingConfig
from langneurons.corpus import EMBEDDED, available_languages, language_name
from langneurons.errors import LangNeuronsError
from langneurons.models import DEFAULT_MODEL, DEVICES, DTYPES
from langneurons.selection import DETECTORS, SelectionConfig, make_config

# Chips of the language box wrap onto as many lines as they need (Streamlit caps the
# box's height and hides the rest behind a scroll otherwise).
CHIPS_CSS = """
<style>
section[data-testid="stSidebar"] [data-testid="stMultiSelect"] div { max-height: none !important; }
section[data-testid="stSidebar"] [data-testid="stMultiSelect"] span { max-width: none !important; }
</style>
"""


def draw() -> tuple[state.Settings, bool]:
    """The sidebar; returns the settings and whether Compute was pressed."""
    st.sidebar.title("LangNeurons")
    st.sidebar.caption("Language-specific neurons of language models.")
    state.seed("stats_source", "Open a run" if state.kept().get("run_dir") else "Compute")
    mode = st.sidebar.radio(
        "Statistics",
        ["Compute", "Open a run"],
        key="stats_source",
        horizontal=True,
        help="Count here, or open a run folder written by `langneurons compute` (for example "
        "on a GPU machine or a cluster) to browse it and try its neurons.",
    )
    state.remember("stats_source", mode)
    if mode == "Open a run":
        return _run_panel(), False
    return _compute_panel()


def _model_options(container: Any, with_model: bool) -> tuple[str, str, str]:
    model = ""
    with container.expander("Model", expanded=False):
        if with_model:
            state.seed("model", "")
            model = st.text_input(
                "Model",
                key="model",
                placeholder=DEFAULT_MODEL,
                help=f"Empty: {DEFAULT_MODEL}, embedded, works offline. Or a Hugging Face id "
                "(e.g. Qwen/Qwen2.5-0.5B) or a local folder.",
            )
            state.remember("model", model)
        else:
            model = st.text_input(
                "Another model of the same shape",
                key="run_model",
                help="Empty: the model the run was computed with.",
            )
        dtype = st.selectbox("Dtype", DTYPES, key="dtype") or DTYPES[0]
        device = st.selectbox("Device", DEVICES, key="device") or DEVICES[0]
    return model.strip(), dtype, device


def _corpus() -> tuple[str, list[str]]:
    source = st.sidebar.radio(
        "Corpus", ["Embedded UDHR", "Folder", "Upload"], key="corpus_kind", horizontal=True
    )
    corpus = EMBEDDED
    try:
        if source == "Folder":
            corpus = (
                st.sidebar.text_input("Folder of <code>.txt files", key="corpus_dir") or EMBEDDED
            )
        elif source == "Upload":
            files = st.sidebar.file_uploader(
                "One <code>.txt per language (5 MB each)",
                type=["txt"],
                accept_multiple_files=True,
                key="corpus_files",
            )
            corpus = state.save_uploads(files) if files else EMBEDDED
        return corpus, available_languages(corpus)
    except LangNeuronsError as exc:
        st.sidebar.error(str(exc))
        return EMBEDDED, available_languages(EMBEDDED)


def _compute_panel() -> tuple[state.Settings, bool]:
    model, dtype, device = _model_options(st.sidebar, with_model=True)
    corpus, options = _corpus()
    wanted = state.kept().get("languages") or state.DEFAULT_LANGUAGES
    if "languages" not in st.session_state:
        st.session_state["languages"] = [c for c in wanted if c in options] or options[:6]
    else:  # another corpus: keep the languages it has
        st.session_state["languages"] = [c for c in st.session_state["languages"] if c in options]
    st.sidebar.markdown(CHIPS_CSS, unsafe_allow_html=True)
    languages = st.sidebar.multiselect(
        "Languages",
        options,
        key="languages",
        format_func=widgets.language_label,
        help="Type a code or a name to add a language; two or more.",
    )
    state.remember("languages", languages)
    state.seed("budget", 0)
    budget = st.sidebar.number_input(
        "Token budget per language (0: all)", 0, 10_000_000, step=500, key="budget"
    )
    state.remember("budget", int(budget))
    pressed = st.sidebar.button("Compute", type="primary", key="compute", width="stretch")
    selection = _selection_panel()
    try:
        counting = CountingConfig(max_tokens=int(budget) or None)
    except ConfigError as exc:  # the widget's range makes this unreachable; say it anyway
        st.sidebar.error(str(exc))
        counting = CountingConfig()
    settings = state.Settings(
        model=model or DEFAULT_MODEL,
        dtype=dtype,
        device=device,
        languages=tuple(languages),
        corpus=corpus,
        counting=counting,
        selection=selection,
    )
    return settings, pressed


def _selection_panel() -> SelectionConfig:
    """The detector and its settings; moving a slider reselects from the statistics."""
    st.sidebar.markdown("**Neuron selection**")
    state.seed("method", "lape")
    method = (
        st.sidebar.selectbox(
            "Method",
            list(DETECTORS),
            key="method",
            format_func=lambda name: DETECTORS[name].title,
            help=" ".join(f"{d.title}: {d.summary}" for d in DETECTORS.values()),
        )
        or "lape"
    )
    state.remember("method", method)
    values = widgets.setting_widgets(DETECTORS[method].config_type, st.sidebar)
    st.sidebar.caption("Moving these reselects from the counted statistics, without the model.")
    config: SelectionConfig = make_config(method, values)
    return config


def _run_panel() -> state.Settings:
    """Set-up for a run folder: its languages, statistics and selection, its model unless
    another of the same shape is named."""
    state.seed("run_dir", "")
    folder = st.sidebar.text_input(
        "Run folder",
        key="run_dir",
        placeholder="runs/llama7b",
        help="A folder written by `langneurons compute --out` (stats.safetensors, meta.json).",
    ).strip()
    state.remember("run_dir", folder)
    run = None
    if folder:
        try:
            run, _ = state.open_run(folder)
        except LangNeuronsError as exc:
            st.sidebar.error(str(exc))
    if run is not None and st.session_state.get("_opened_run") != str(run.path):
        st.session_state["_opened_run"] = str(run.path)
        _start_from_run_selection(run)
    spec = state.run_model(run) if run is not None else DEFAULT_MODEL
    if run is not None:
        names = ", ".join(run.languages)
        st.sidebar.caption(f"{len(run.languages)} languages: {names} · model {spec}")
    other, dtype, device = _model_options(st.sidebar, with_model=False)
    corpus = state.run_corpus(run) if run is not None else EMBEDDED
    if run is not None and corpus != run.meta.get("corpus", {}).get("name"):
        st.sidebar.caption(
            "The run's corpus is not on this machine: passages and the ablation matrix use "
            "the embedded UDHR."
        )
    selection = _selection_panel()
    return state.Settings(
        model=other or spec,
        dtype=dtype,
        device=device,
        languages=tuple(run.languages) if run is not None else (),
        corpus=corpus,
        selection=selection,
        run_dir=str(run.path) if run is not None else None,
    )


def _start_from_run_selection(run: Any) -> None:
    """Set the method and its sliders to what the run was made with (once per run)."""
    config = state.run_selection(run)
    method = next(name for name, d in DETECTORS.items() if isinstance(config, d.config_type))
    st.session_state["method"] = method
    state.remember("method", method)
    for name, value in vars(config).items():
        st.session_state[f"sel_{name}"] = value
        state.remember(f"sel_{name}", value)


def language_names(languages: list[str]) -> str:
    return ", ".join(language_name(c) for c in languages)
