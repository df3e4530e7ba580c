"""The set-up panel: the model, the corpus and languages (or a run folder to open), and
how neurons are selected.  Returns the :class:`~dashboard.state.Settings` it shows."""

from __future__ import annotations

from typing import Any

import streamlit as st

from langneurons.config import ConfigError, CountingConfig
from langneurons.corpus import EMBEDDED, available_languages, language_name
from langneurons.errors import CorpusError, LangNeuronsError
from langneurons.models import DEFAULT_MODEL, DEVICES, DTYPES
from langneurons.selection import DETECTORS, SelectionConfig, make_config

from . import state, widgets

# Chips of the language box wrap onto as many lines as they need (Streamlit caps the
# box's height and hides the rest behind a scroll otherwise); the page's notice area
# (main.py), most often empty, does not add a gap above the page.
CHIPS_CSS = """
<style>
section[data-testid="stSidebar"] [data-testid="stMultiSelect"] div { max-height: none !important; }
section[data-testid="stSidebar"] [data-testid="stMultiSelect"] span { max-width: none !important; }
[data-testid="stLayoutWrapper"]:has(> .st-key-ln_notices) { margin-bottom: -1rem; }
</style>
"""


def draw() -> tuple[state.Settings, bool]:
    """The sidebar; returns the settings and whether Compute was pressed."""
    st.sidebar.title("LangNeurons")
    limits = state.classroom()
    st.sidebar.caption(
        "Language-specific neurons of language models."
        + (" Classroom server." if limits is not None else "")
    )
    sources = (
        ["Compute"] if limits is not None and not limits.run_roots else ["Compute", "Open a run"]
    )
    state.seed("stats_source", "Open a run" if state.kept().get("run_dir") else "Compute")
    if st.session_state["stats_source"] not in sources:
        st.session_state["stats_source"] = "Compute"
    mode = st.sidebar.radio(
        "Statistics",
        sources,
        key="stats_source",
        horizontal=True,
        help="Count here, or open a run folder written by `langneurons compute` (for example "
        "on a GPU machine or a cluster) to browse it and try its neurons.",
    )
    state.remember("stats_source", mode)
    if mode == "Open a run":
        return _run_panel(), False
    return _compute_panel()


def _allowed_model() -> str:
    """Classroom mode: the model, chosen among those the server allows (a link naming
    another is ignored)."""
    limits = state.classroom()
    assert limits is not None
    state.seed("model", limits.models[0])
    if st.session_state["model"] not in limits.models:
        widgets.warning(
            f"This server runs only {', '.join(limits.models)}: the link's model "
            f"{st.session_state['model']!r} was not loaded.",
            st.sidebar,
        )
        st.session_state["model"] = limits.models[0]
    model = str(st.selectbox("Model", list(limits.models), key="model"))
    state.remember("model", model)
    return model


def _model_options(container: Any, with_model: bool) -> tuple[str, str, str]:
    model = ""
    with container.expander("Model", expanded=False):
        if state.classroom() is not None:
            if with_model:
                model = _allowed_model()
        elif with_model:
            state.seed("model", "")
            model = st.text_input(
                "Model",
                key="model",
                placeholder=DEFAULT_MODEL,
                help=f"Empty: {DEFAULT_MODEL}, embedded, works offline. Or a Hugging Face id "
                "(e.g. Qwen/Qwen2.5-0.5B) or a local folder.",
            )
            state.remember("model", model)
        else:  # a run folder's model, or another of the same shape
            model = st.text_input(
                "Another model of the same shape",
                key="run_model",
                help="Empty: the model the run was computed with.",
            )
        dtype = st.selectbox("Dtype", DTYPES, key="dtype") or DTYPES[0]
        device = st.selectbox("Device", DEVICES, key="device") or DEVICES[0]
    return model.strip(), dtype, device


def _corpus_sources() -> list[str]:
    limits = state.classroom()
    if limits is None:
        return ["Embedded UDHR", "Folder", "Upload"]
    sources = ["Embedded UDHR"]
    if limits.corpus_roots:
        sources.append("Folder")
    if limits.uploads:
        sources.append("Upload")
    return sources


def _folder() -> str:
    """A folder of texts: typed (alone on one's machine) or chosen under the classroom's
    roots (never a typed path on a shared server)."""
    limits = state.classroom()
    if limits is None:
        return st.sidebar.text_input("Folder of <code>.txt files", key="corpus_dir") or EMBEDDED
    folders = limits.folders_under(limits.corpus_roots, "*.txt")
    if not folders:
        raise CorpusError("No folder of <code>.txt files under this server's corpus roots.")
    return str(st.sidebar.selectbox("Folder of <code>.txt files", folders, key="corpus_pick"))


def _corpus() -> tuple[str, list[str]]:
    sources = _corpus_sources()
    if st.session_state.get("corpus_kind") not in sources:
        st.session_state["corpus_kind"] = sources[0]
    source = st.sidebar.radio("Corpus", sources, key="corpus_kind", horizontal=True)
    corpus = EMBEDDED
    limits = state.classroom()
    size = f"{limits.max_upload_mb:g} MB" if limits is not None else "5 MB"
    try:
        if source == "Folder":
            corpus = _folder()
        elif source == "Upload":
            files = st.sidebar.file_uploader(
                f"One <code>.txt per language ({size} each)",
                type=["txt"],
                accept_multiple_files=True,
                key="corpus_files",
            )
            corpus = state.save_uploads(files) if files else EMBEDDED
        return corpus, available_languages(corpus)
    except LangNeuronsError as exc:
        widgets.error(exc, st.sidebar)
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
    limits = state.classroom()
    most = limits.max_compute_languages if limits is not None else None
    if most is not None and len(st.session_state["languages"]) > most:
        st.session_state["languages"] = st.session_state["languages"][:most]
    languages = st.sidebar.multiselect(
        "Languages",
        options,
        key="languages",
        format_func=widgets.language_label,
        max_selections=most,
        help="Type a code or a name to add a language; two or more"
        + (f", {most} at most on this server." if most else "."),
    )
    state.remember("languages", languages)
    budget_cap = limits.max_budget_tokens if limits is not None else 10_000_000
    state.seed("budget", 0)
    st.session_state["budget"] = min(max(int(st.session_state["budget"]), 0), budget_cap)
    budget = st.sidebar.number_input(
        f"Token budget per language (0: all{f', up to {budget_cap:,}' if limits else ''})",
        0,
        budget_cap,
        step=500,
        key="budget",
    )
    state.remember("budget", int(budget))
    pressed = st.sidebar.button("Compute", type="primary", key="compute", width="stretch")
    selection = _selection_panel()
    try:
        counting = CountingConfig(
            max_tokens=int(budget) or (limits.max_budget_tokens if limits is not None else None)
        )
    except ConfigError as exc:  # the widget's range makes this unreachable; say it anyway
        widgets.error(exc, st.sidebar)
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


def _run_folder() -> str:
    """The run folder: typed (alone on one's machine), or chosen among the runs under the
    classroom's roots (a link naming another is ignored)."""
    limits = state.classroom()
    state.seed("run_dir", "")
    if limits is None:
        folder = st.sidebar.text_input(
            "Run folder",
            key="run_dir",
            placeholder="runs/llama7b",
            help="A folder written by `langneurons compute --out` (stats.safetensors, meta.json).",
        ).strip()
        state.remember("run_dir", folder)
        return folder
    runs = limits.folders_under(limits.run_roots, "meta.json")
    if not runs:
        widgets.warning("No run folder under this server's run roots.", st.sidebar)
        return ""
    wanted = str(st.session_state["run_dir"])
    inside = limits.resolve_under(limits.run_roots, wanted) if wanted else None
    if wanted and (inside is None or str(inside) not in runs):
        widgets.warning(
            f"The link's run folder {wanted!r} is not one of this server's runs.", st.sidebar
        )
    st.session_state["run_dir"] = (
        str(inside) if inside is not None and str(inside) in runs else runs[0]
    )
    folder = str(st.sidebar.selectbox("Run folder", runs, key="run_dir"))
    state.remember("run_dir", folder)
    return folder


def _run_panel() -> state.Settings:
    """Set-up for a run folder: its languages, statistics and selection, its model unless
    another of the same shape is named."""
    folder = _run_folder()
    run = None
    if folder:
        try:
            run, _ = state.open_run(folder)
        except LangNeuronsError as exc:
            widgets.error(exc, st.sidebar)
    if run is not None and st.session_state.get("_opened_run") != str(run.path):
        st.session_state["_opened_run"] = str(run.path)
        _start_from_run_selection(run)
    spec = state.run_model(run) if run is not None else DEFAULT_MODEL
    if run is not None:
        names = ", ".join(run.languages)
        st.sidebar.caption(widgets.plain(f"{len(run.languages)} languages: {names} · model {spec}"))
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
    config = run.selection_config()
    method = next(name for name, d in DETECTORS.items() if isinstance(config, d.config_type))
    st.session_state["method"] = method
    state.remember("method", method)
    for name, value in vars(config).items():
        st.session_state[f"sel_{name}"] = value
        state.remember(f"sel_{name}", value)


def language_names(languages: list[str]) -> str:
    return ", ".join(language_name(c) for c in languages)
