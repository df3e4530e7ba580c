"""Session and process state of the dashboard: shared model, settings, computed runs.

One model per (spec, dtype, device) is loaded once per process and shared by every
browser session (``st.cache_resource``).  Interventions are per-thread in the
library, so sharing is safe; long jobs (statistics, the NLL matrix) take the model's
lock so that a second session waits visibly instead of competing for two cores.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from langneurons.corpus import EMBEDDED, embedded_languages, load_corpus
from langneurons.errors import CorpusError, ResultsError
from langneurons.models import LoadedModel, load_model
from langneurons.pipeline import ComputeResult, cached_languages, compute
from langneurons.results import Run, read_run
from langneurons.selection import Selection, lape_select
from langneurons.workflows import run_model_spec

DEFAULT_LANGUAGES = ["en", "fr", "de", "es", "zh", "ja", "ru"]
DEFAULT_MODEL = "gemma-3-270m"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024

# URL parameters that reproduce a view: widget key -> (type, default).
URL_KEYS: dict[str, tuple[type, Any]] = {
    "view": (str, "Overview"),
    "model": (str, DEFAULT_MODEL),
    "langs": (str, ",".join(DEFAULT_LANGUAGES)),
    "top_rate": (float, 0.01),
    "filter_rate": (float, 0.95),
    "bar_ratio": (float, 0.95),
    "layer": (int, -1),  # -1: the most language-specific selected neuron
    "neuron": (int, -1),
    "lang_view": (str, ""),
    "budget": (int, 0),
    "run": (str, ""),  # a run folder on the server, opened instead of computing
}


@dataclass
class Settings:
    """What the set-up panel chose."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    device: str = "cpu"
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    corpus: str = EMBEDDED
    max_tokens: int | None = None
    top_rate: float = 0.01
    filter_rate: float = 0.95
    bar_ratio: float = 0.95
    run_dir: str | None = None  # statistics from this run folder instead of computing

    def run_key(self) -> str:
        text = (
            f"{self.model}|{self.dtype}|{self.device}|{self.languages}|{self.corpus}|"
            f"{self.max_tokens}|{self.run_dir}"
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def restore_from_url() -> None:
    """Seed session state from the URL once per session, so shared links reproduce views."""
    if st.session_state.get("_url_restored"):
        return
    params = st.query_params
    for key, (kind, default) in URL_KEYS.items():
        raw = params.get(key)
        value = default
        if raw is not None:
            try:
                value = kind(raw)
            except ValueError:
                value = default
        st.session_state.setdefault(f"url_{key}", value)
    st.session_state["_url_restored"] = True


def write_url(**values: Any) -> None:
    """Mirror the current view's state into the URL (only non-default values)."""
    for key, value in values.items():
        default = URL_KEYS[key][1]
        if value == default or value is None:
            if key in st.query_params:
                del st.query_params[key]
        else:
            st.query_params[key] = str(value)


@st.cache_resource(show_spinner=False)
def shared_model(spec: str, dtype: str, device: str) -> LoadedModel:
    """The process-wide model for these settings (loaded or converted once).

    Conversion and loading messages go to the server's terminal too."""

    def log(event: Any) -> None:
        print(f"[langneurons] {event.message}", file=sys.stderr, flush=True)

    return load_model(
        None if spec == DEFAULT_MODEL else spec, dtype=dtype, device=device, progress=log
    )


@st.cache_resource(show_spinner=False)
def model_lock(spec: str, dtype: str, device: str) -> threading.Lock:
    """Serialises long jobs on one model across sessions."""
    return threading.Lock()


def language_options() -> dict[str, str]:
    return embedded_languages()


def save_uploads(files: list[Any]) -> str:
    """Write uploaded ``<code>.txt`` files into a folder named by their content hash."""
    digest = hashlib.sha256()
    contents = []
    for upload in sorted(files, key=lambda f: f.name):
        data = upload.getvalue()
        if len(data) > MAX_UPLOAD_BYTES:
            raise CorpusError(
                f"{upload.name} is {len(data) / 1e6:.1f} MB; the limit is "
                f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB per language. Use a folder path for more."
            )
        if not upload.name.endswith(".txt"):
            raise CorpusError(f"{upload.name}: name files <code>.txt, e.g. fr.txt.")
        digest.update(upload.name.encode() + data)
        contents.append((upload.name, data))
    folder = Path(tempfile.gettempdir()) / "langneurons-uploads" / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in contents:
        (folder / name).write_bytes(data)
    return str(folder)


def is_cached(lm: LoadedModel, settings: Settings) -> bool:
    """Whether every language's statistics are already on disk."""
    try:
        found = cached_languages(
            lm, settings.languages, corpus=settings.corpus, max_tokens=settings.max_tokens
        )
    except CorpusError:
        return False
    return len(found) == len(settings.languages)


def run_compute(lm: LoadedModel, settings: Settings, lock: threading.Lock) -> ComputeResult:
    """Compute (or read from the cache) with a progress bar and time estimate."""
    if not lock.acquire(blocking=False):
        with st.status("Another session is using the model; waiting for it...") as status:
            lock.acquire()
            status.update(label="The model is free again.", state="complete")
    try:
        bar = st.progress(0.0, text="Preparing...")
        started = time.perf_counter()
        totals: dict[str, int] = {}
        done: dict[str, int] = {}

        def on_progress(event: Any) -> None:
            if event.stage in ("count", "cache") and event.language:
                totals[event.language] = max(event.total, 1)
                done[event.language] = event.done
                counted = sum(done.values())
                fraction = len([c for c in done if done[c] >= totals[c]]) / len(settings.languages)
                elapsed = time.perf_counter() - started
                rate = counted / elapsed if elapsed > 0 else 0
                remaining_langs = len(settings.languages) - len(totals)
                left_tokens = totals[event.language] - event.done + remaining_langs * 2000
                eta = f", about {left_tokens / rate:.0f} s left" if rate > 0 else ""
                bar.progress(
                    min(fraction, 1.0),
                    text=f"{event.language}: {event.done}/{event.total} tokens{eta}",
                )

        corpus = load_corpus(settings.corpus, settings.languages)
        result = compute(
            lm,
            settings.languages,
            corpus=corpus,
            max_tokens=settings.max_tokens,
            progress=on_progress,
        )
        bar.empty()
        return result
    finally:
        lock.release()


@st.cache_resource(show_spinner=False, max_entries=64)
def reselect(
    run_key: str, _result: ComputeResult, top_rate: float, filter_rate: float, bar_ratio: float
) -> Selection:
    """LAPE from the cached statistics with the sliders' thresholds (no model involved)."""
    from langneurons.selection import LapeConfig

    stats = _result.statistics
    return lape_select(
        stats.over_zero,
        stats.tokens,
        LapeConfig(top_rate, filter_rate, bar_ratio),
        languages=stats.languages,
    )


def open_run(folder: str) -> tuple[Run, ComputeResult]:
    """A run folder written by ``langneurons compute`` and the result the views show, read
    (and its selection made) once per version of its files, not on every rerun."""
    path = Path(folder).expanduser().resolve()
    stats_file = path / "stats.safetensors"
    stamp = stats_file.stat().st_mtime_ns if stats_file.is_file() else 0
    return _read_run(str(path), stamp)


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_run(folder: str, _stamp: int) -> tuple[Run, ComputeResult]:
    run = read_run(folder)
    stats = run.statistics
    if stats is None:
        raise ResultsError(
            f"{folder!r} holds imported neuron masks without statistics; the dashboard needs "
            "the counts. Open a folder written by `langneurons compute`."
        )
    if len(run.languages) < 2:
        raise ResultsError(f"{folder!r} covers one language; LAPE compares two or more.")
    result = ComputeResult(
        statistics=stats,
        selection=lape_select(stats.over_zero, stats.tokens, languages=stats.languages),
        meta=run.meta,
        cached_languages=list(stats.languages),
        out_dir=run.path,
    )
    return run, result


def run_model(run: Run) -> str:
    """The model a run was computed with, as the model field would name it."""
    return run_model_spec(run) or DEFAULT_MODEL


def run_corpus(run: Run) -> str:
    """The run's corpus when this machine has it (the UDHR or an existing folder), else the
    UDHR, for the views that read text (passages, the NLL matrix)."""
    name = str(run.meta.get("corpus", {}).get("name", ""))
    return name if name == EMBEDDED or (name and Path(name).is_dir()) else EMBEDDED


def run_thresholds(run: Run) -> dict[str, float]:
    """Slider values for the LAPE thresholds a run was made with (empty if not LAPE)."""
    selection = run.meta.get("selection", {})
    if selection.get("method") != "lape":
        return {}
    settings = selection.get("settings", {})
    keys = {"top_rate": "url_top_rate", "filter_rate": "url_filter_rate"}
    keys["activation_bar_ratio"] = "url_bar_ratio"
    return {widget: float(settings[name]) for name, widget in keys.items() if name in settings}
