"""The dashboard's wiring: the sidebar (``sidebar.py``) chooses a model, languages and a
detector; :func:`main` loads the shared model, computes or opens the statistics, and
runs the page the navigation points to (``routes/<page>.py``, which calls the page's
module in ``views/``); pages draw widgets and call the library.

``app.py`` is the script Streamlit runs (``langneurons dashboard``, or ``streamlit run
dashboard/app.py`` in a checkout).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from langneurons.errors import LangNeuronsError
from langneurons.pipeline import ComputeResult, cached_languages, compute, compute_samples
from langneurons.progress import ProgressEvent
from langneurons.results import Run
from langneurons.selection import detector_for
from langneurons.workflows import check_model_matches, run_samples

from . import sidebar, state, widgets

# Titles only, no icons: eleven pages fit one bar on a 1280-pixel laptop screen.
PAGES = {
    "overview": "Overview",
    "heatmaps": "Heatmaps",
    "inspector": "Inspector",
    "neuron_map": "Neuron map",
    "playground": "Playground",
    "trace": "Trace",
    "steering": "Steering lab",
    "detectors": "Detectors",
    "ablation": "Ablation",
    "tour": "Tour",
    "share": "Share",
    "mask": "Published mask",
}
# Pages that need neither the model nor statistics: drawn without computing anything.
WITHOUT_MODEL = {"mask"}
# Old ?view= links named the views by these titles.
LEGACY_VIEWS = {
    "Overview": "overview",
    "Heatmaps": "heatmaps",
    "Neuron inspector": "inspector",
    "Neuron map": "neuron_map",
    "Playground": "playground",
    "Ablation matrix": "ablation",
    "Guided tour": "tour",
    "Share & export": "share",
}


def navigation() -> StreamlitPage:
    pages = [
        st.Page(f"routes/{name}.py", title=title, url_path=name, default=name == "overview")
        for name, title in PAGES.items()
    ]
    return st.navigation(pages, position="top")


def _is_cached(lm: object, settings: state.Settings) -> bool:
    try:
        found = cached_languages(
            lm,  # type: ignore[arg-type]
            settings.languages,
            corpus=settings.corpus,
            counting=settings.counting,
        )
    except LangNeuronsError:
        return False
    return len(found) == len(settings.languages)


def _computed(settings: state.Settings, pressed: bool) -> tuple[state.Settings, object] | None:
    """The statistics for ``settings``: this session's, the cache's, or counted now when
    Compute is pressed (or on the first visit); the last ones otherwise (then stale)."""
    key = settings.statistics_key()
    if st.session_state.get("result_key") == key:
        return settings, st.session_state["result"]
    lm = _load_with_stages(settings)
    cached = _is_cached(lm, settings)
    if pressed or not st.session_state.get("computed_once") or cached:
        # Cached statistics are only read: they never wait behind the queue's long jobs.
        with contextlib.nullcontext() if cached else state.long_job(settings):
            bar = widgets.ComputeBar(list(settings.languages))
            try:
                result = compute(
                    lm,
                    settings.languages,
                    corpus=settings.corpus,
                    counting=settings.counting,
                    selection=settings.selection,
                    progress=bar,
                )
            finally:
                bar.close()
        st.session_state.update(
            result=result, result_key=key, result_settings=settings, computed_once=True
        )
        return settings, result
    if "result" in st.session_state:
        return st.session_state["result_settings"], st.session_state["result"]
    return None


def _load_with_stages(settings: state.Settings) -> Any:
    """The shared model, with the loading stages shown while this session loads it (the
    embedded model's first start converts it, about a minute, in named steps)."""
    placeholder = st.empty()
    status: Any = None

    def stage(event: ProgressEvent) -> None:
        nonlocal status
        if status is None:
            status = placeholder.status(
                f"Loading {widgets.plain(settings.model)}...", expanded=True
            )
        status.write(widgets.plain(event.message))
        status.update(label=widgets.plain(event.message))

    with st.spinner(
        f"Loading {widgets.plain(settings.model)} (the first start converts the embedded "
        "model once, about a minute)..."
    ):
        lm = state.shared_model(settings.model, settings.dtype, settings.device, stage)
    placeholder.empty()
    return lm


def prepare(settings: state.Settings, pressed: bool) -> state.PageContext | None:
    """The context the pages draw from, or ``None`` after saying in the page what is
    missing or wrong."""
    if st.session_state.get("stats_source") == "Open a run" and not settings.run_dir:
        st.info(
            "Enter a run folder in the sidebar: one written by `langneurons compute --out DIR`, "
            "for example on a GPU machine."
        )
        return None
    if len(settings.languages) < 2:
        st.info("Choose at least two languages in the sidebar.")
        return None
    run = None
    try:
        if settings.run_dir is not None:
            lm = _load_with_stages(settings)
            run, result = state.open_run(settings.run_dir)
            check_model_matches(lm, run)
            shown = settings
        else:
            found = _computed(settings, pressed)
            if found is None:
                st.info("Press **Compute** in the sidebar to count the statistics.")
                return None
            shown, result = found  # type: ignore[assignment]
            lm = state.shared_model(shown.model, shown.dtype, shown.device)
        if detector_for(settings.selection).needs_samples and result.samples is None:
            _collect_samples(lm, shown, result, run)
        selection = state.reselect(shown.statistics_key(), result, settings.selection)
    except LangNeuronsError as exc:
        widgets.error(state.without_private_paths(exc))
        return None
    stale = shown.statistics_key() != settings.statistics_key()
    shown = dataclasses.replace(shown, selection=settings.selection)
    return state.PageContext(lm, result, selection, shown, stale=stale)


def _collect_samples(
    lm: Any, shown: state.Settings, result: ComputeResult, run: Run | None
) -> None:
    """Per-sample activations for a detector that ranks texts, collected once with a
    progress bar and kept with the statistics they belong to."""
    bar = st.progress(0.0, text="Collecting per-sample activations (once per statistics)...")

    def show(event: ProgressEvent) -> None:
        if event.stage == "samples" and event.total:
            bar.progress(
                min(event.done / event.total, 1.0),
                text=f"Per-sample activations of {event.language}: {event.done:,} of "
                f"{event.total:,} tokens",
            )

    try:
        with state.long_job(shown):
            if run is not None:
                result.samples = run_samples(lm, run, progress=show)
            else:
                result.samples = compute_samples(
                    lm,
                    shown.languages,
                    corpus=shown.corpus,
                    counting=shown.counting,
                    progress=show,
                )
    finally:
        bar.empty()


def stale_notice(context: state.PageContext, wanted: state.Settings) -> None:
    """Say that the page shows the last statistics while the sidebar asks for others."""
    shown = context.settings
    changes = []
    if shown.languages != wanted.languages:
        changes.append("languages " + ", ".join(wanted.languages))
    if (shown.model, shown.dtype, shown.device) != (wanted.model, wanted.dtype, wanted.device):
        changes.append(f"model {wanted.model}")
    if shown.corpus != wanted.corpus or shown.counting != wanted.counting:
        changes.append("corpus or token budget")
    st.warning(
        widgets.plain(
            f"Out of date: these results are for {', '.join(shown.languages)}. The sidebar now "
            f"asks for {'; '.join(changes) or 'other settings'}"
        )
        + ": press **Compute** to count them (results already cached appear at once).",
        icon="⏳",
    )


def main() -> None:
    st.set_page_config(page_title="LangNeurons", page_icon="🧠", layout="wide")
    ignored = state.restore_from_url()
    legacy = st.query_params.get("view")
    page = navigation()
    if page.url_path in WITHOUT_MODEL:  # no model, no statistics: no set-up to show
        st.sidebar.title("LangNeurons")
        st.sidebar.caption("This page needs no model: the set-up is on the other pages.")
        page.run()
        return
    settings, pressed = sidebar.draw()
    for item in ignored:
        widgets.warning(f"Ignored a value of the link that is not valid: {item}.", st.sidebar)
    if legacy in LEGACY_VIEWS:
        del st.query_params["view"]
        st.switch_page(f"routes/{LEGACY_VIEWS[legacy]}.py")
    # Loading, counting and stale notices live in one container, shown or not: the page
    # below keeps its place from run to run, so a run that shows none (pressing Generate
    # after the first visit counted the statistics) does not leave the last run's
    # elements, shifted, fading below its own until it ends.
    with st.container(key="ln_notices"):
        context = prepare(settings, pressed)
        if context is not None and context.stale:
            stale_notice(context, settings)
    if context is not None:
        st.session_state["_context"] = context
        st.session_state["_pages"] = {k: v for k, v in PAGES.items() if k not in WITHOUT_MODEL}
        if page.url_path != "share":
            st.session_state["_last_page"] = page.url_path or "overview"
        page.run()
    state.write_url()
