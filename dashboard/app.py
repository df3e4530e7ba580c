"""LangNeurons dashboard: ``streamlit run dashboard/app.py``.

Thin over the library: the sidebar chooses a model, languages, corpus and
thresholds; each view in ``dashboard/views.py`` draws widgets and calls
``langneurons``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from dashboard import state, views
from langneurons.corpus import EMBEDDED, available_languages, language_name
from langneurons.errors import LangNeuronsError
from langneurons.workflows import check_model_matches

VIEWS = [
    "Overview",
    "Heatmaps",
    "Neuron inspector",
    "Neuron map",
    "Playground",
    "Ablation matrix",
    "Guided tour",
    "Share & export",
]


def sidebar() -> tuple[state.Settings, bool]:
    """The set-up panel; returns the settings and whether Compute was pressed."""
    st.sidebar.title("LangNeurons")
    st.sidebar.caption("Language-specific neurons of language models (LAPE).")
    st.session_state.setdefault(
        "stats_source", "Open a run" if st.session_state.get("url_run") else "Compute"
    )
    mode = st.sidebar.radio(
        "Statistics",
        ["Compute", "Open a run"],
        key="stats_source",
        horizontal=True,
        help="Count here, or open a run folder written by `langneurons compute` (for example "
        "on a GPU machine or a cluster) to browse it and try its neurons.",
    )
    if mode == "Open a run":
        return run_sidebar(), False
    with st.sidebar.expander("Model", expanded=False):
        model = st.text_input(
            "Model",
            key="url_model",
            help="gemma-3-270m is embedded and works offline. Or a Hugging Face id "
            "(e.g. Qwen/Qwen2.5-0.5B) or a local folder.",
        )
        dtype = st.selectbox("Dtype", ["auto", "float32", "bfloat16", "float16"], key="dtype")
        device = st.selectbox("Device", ["cpu", "cuda", "auto"], key="device")
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
        options = available_languages(corpus)
    except LangNeuronsError as exc:
        st.sidebar.error(str(exc))
        corpus, options = EMBEDDED, available_languages(EMBEDDED)
    default = [c for c in st.session_state["url_langs"].split(",") if c in options] or options[:6]
    languages = st.sidebar.multiselect(
        "Languages",
        options,
        default=default,
        key="languages",
        format_func=lambda c: f"{c} · {language_name(c)}",
    )
    budget = st.sidebar.number_input(
        "Token budget per language (0: all)", 0, 10_000_000, step=500, key="url_budget"
    )
    top_rate, filter_rate, bar_ratio = thresholds()
    pressed = st.sidebar.button("Compute", type="primary", key="compute", use_container_width=True)
    settings = state.Settings(
        model=model.strip() or state.DEFAULT_MODEL,
        dtype=dtype,
        device=device,
        languages=languages,
        corpus=corpus,
        max_tokens=int(budget) or None,
        top_rate=top_rate,
        filter_rate=filter_rate,
        bar_ratio=bar_ratio,
    )
    return settings, pressed


def thresholds() -> tuple[float, float, float]:
    """The LAPE threshold sliders (selection again from the statistics, no recount)."""
    st.sidebar.markdown("**LAPE thresholds**")
    top_rate = st.sidebar.slider(
        "Top rate (share of all neurons)",
        0.001,
        0.05,
        step=0.001,
        format="%.3f",
        key="url_top_rate",
    )
    filter_rate = st.sidebar.slider(
        "Filter rate (quantile)", 0.5, 0.999, step=0.005, format="%.3f", key="url_filter_rate"
    )
    bar_ratio = st.sidebar.slider(
        "Activation bar ratio (quantile)",
        0.5,
        0.999,
        step=0.005,
        format="%.3f",
        key="url_bar_ratio",
    )
    return top_rate, filter_rate, bar_ratio


def run_sidebar() -> state.Settings:
    """Set-up for a run folder: its languages and statistics, its model unless overridden."""
    folder = st.sidebar.text_input(
        "Run folder",
        key="url_run",
        placeholder="runs/llama7b",
        help="A folder written by `langneurons compute --out` (stats.safetensors, meta.json).",
    )
    run = None
    if folder.strip():
        try:
            run, _ = state.open_run(folder.strip())
        except LangNeuronsError as exc:
            st.sidebar.error(str(exc))
    if run is not None and st.session_state.get("_opened_run") != str(run.path):
        st.session_state["_opened_run"] = str(run.path)
        for key, value in state.run_thresholds(run).items():
            st.session_state[key] = value  # start from the thresholds the run was made with
    spec = state.DEFAULT_MODEL
    if run is not None:
        spec = state.run_model(run)
        st.sidebar.caption(
            f"{len(run.languages)} languages: {', '.join(run.languages)} · model {spec}"
        )
    with st.sidebar.expander("Model", expanded=False):
        other = st.text_input(
            "Another model of the same shape",
            key="run_model",
            help="Empty: the model the run was computed with.",
        )
        dtype = st.selectbox("Dtype", ["auto", "float32", "bfloat16", "float16"], key="dtype")
        device = st.selectbox("Device", ["cpu", "cuda", "auto"], key="device")
    corpus = state.run_corpus(run) if run is not None else EMBEDDED
    if run is not None and corpus != run.meta.get("corpus", {}).get("name"):
        st.sidebar.caption(
            "The run's corpus is not on this machine: passages and the ablation matrix use "
            "the embedded UDHR."
        )
    top_rate, filter_rate, bar_ratio = thresholds()
    return state.Settings(
        model=other.strip() or spec,
        dtype=dtype,
        device=device,
        languages=list(run.languages) if run is not None else [],
        corpus=corpus,
        top_rate=top_rate,
        filter_rate=filter_rate,
        bar_ratio=bar_ratio,
        run_dir=str(run.path) if run is not None else None,
    )


def main() -> None:
    st.set_page_config(page_title="LangNeurons", page_icon="🧠", layout="wide")
    state.restore_from_url()
    settings, pressed = sidebar()
    if st.session_state.get("stats_source") == "Open a run" and not settings.run_dir:
        st.info(
            "Enter a run folder in the sidebar: one written by `langneurons compute --out DIR`, "
            "for example on a GPU machine."
        )
        return
    if len(settings.languages) < 2:
        st.info("Choose at least two languages in the sidebar.")
        return
    try:
        with st.spinner(
            f"Loading {settings.model} (the first start converts the embedded "
            "model once, about a minute)..."
        ):
            lm = state.shared_model(settings.model, settings.dtype, settings.device)
    except LangNeuronsError as exc:
        st.error(f"Could not load the model: {exc}")
        return
    key = settings.run_key()
    result = st.session_state.get("result") if st.session_state.get("result_key") == key else None
    try:
        if settings.run_dir is not None:
            run, result = state.open_run(settings.run_dir)
            check_model_matches(lm, run)
        elif result is None and (
            pressed or state.is_cached(lm, settings) or not st.session_state.get("computed_once")
        ):
            result = state.run_compute(
                lm, settings, state.model_lock(settings.model, settings.dtype, settings.device)
            )
            st.session_state.update(result=result, result_key=key, computed_once=True)
    except LangNeuronsError as exc:
        st.error(str(exc))
        return
    if result is None:
        st.info(
            "Settings changed: press **Compute** in the sidebar to count the new "
            "statistics (results already cached appear at once)."
        )
        return
    try:
        selection = state.reselect(
            key, result, settings.top_rate, settings.filter_rate, settings.bar_ratio
        )
    except LangNeuronsError as exc:
        st.error(str(exc))
        return
    st.session_state.setdefault("nav", st.session_state.get("url_view", "Overview"))
    if st.session_state["nav"] not in VIEWS:
        st.session_state["nav"] = "Overview"
    view = (
        st.segmented_control("View", VIEWS, key="nav", label_visibility="collapsed") or "Overview"
    )
    state.write_url(
        view=view,
        model=settings.model,
        langs=",".join(settings.languages),
        top_rate=settings.top_rate,
        filter_rate=settings.filter_rate,
        bar_ratio=settings.bar_ratio,
        budget=settings.max_tokens or 0,
        run=settings.run_dir or "",
    )
    if view == "Overview":
        views.overview(lm, result, selection)
    elif view == "Heatmaps":
        views.heatmaps(lm, result, selection)
    elif view == "Neuron inspector":
        views.inspector(lm, result, selection, settings)
    elif view == "Neuron map":
        views.neuron_map(lm, result, selection, settings)
    elif view == "Playground":
        views.playground(lm, result, selection)
    elif view == "Ablation matrix":
        views.ablation(lm, result, selection, settings)
    elif view == "Guided tour":
        views.tour(lm, result, selection)
    else:
        views.export(lm, result, selection)


main()
