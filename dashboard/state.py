"""Session and process state of the dashboard: the shared model, the settings, the
results a page shows, and the link that reproduces a view.

One model per (spec, dtype, device) is loaded once per process and shared by every
browser session (``st.cache_resource``).  Interventions are per-thread in the
library, so sharing is safe; long jobs (statistics, the ablation matrix) take the
model's lock so that a second session waits visibly instead of competing for cores.

Widget values survive page changes and feed the share link through :func:`seed` and
:func:`remember`: Streamlit forgets the state of widgets a run did not draw, so each
page seeds its widgets from the kept values (or the link) before drawing them.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from langneurons.classroom import ClassroomConfig
from langneurons.cli.dashboard import OPEN_RUN
from langneurons.config import CountingConfig, range_problem, ranges, to_dict
from langneurons.corpus import EMBEDDED, parse_languages
from langneurons.errors import CorpusError, ModelLoadError, ResultsError
from langneurons.models import DEFAULT_MODEL, LoadedModel, load_model
from langneurons.pipeline import ComputeResult
from langneurons.progress import ProgressEvent
from langneurons.recipes import RecipeBook, find_recipes
from langneurons.results import Run, read_run
from langneurons.selection import DETECTORS, Selection, SelectionConfig, make_config, select
from langneurons.workflows import run_model_spec

from . import server

DEFAULT_LANGUAGES = ["en", "fr", "de", "es", "zh", "ja", "ru"]
MAX_UPLOAD_BYTES = 5_000_000
KEPT = "_kept"


@dataclass(frozen=True)
class Link:
    """One value a shared link carries: its URL name, the widget it seeds, how to read it."""

    url: str
    key: str
    default: Any
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str


def _languages(text: str) -> list[str]:
    """Codes from a link: none, or distinct code-shaped ones (anything else is ignored
    and said, like any unreadable link value)."""
    if not text.strip():
        return []
    try:
        return parse_languages(text)
    except CorpusError as exc:
        raise ValueError(text) from exc


def _pair(text: str) -> tuple[int, int]:
    low, high = (int(part) for part in text.split("-"))
    if low > high:
        raise ValueError(text)
    return low, high


def _setting_links() -> list[Link]:
    """One link value per detector setting (names shared by detectors are one value)."""
    links: dict[str, Link] = {}
    for found in DETECTORS.values():
        defaults = to_dict(found.config_type())
        for name, meta in ranges(found.config_type).items():

            def parse(text: str, name: str = name, meta: Any = meta) -> float:
                value = float(text)
                if not math.isfinite(value) or range_problem(name, value, meta):
                    raise ValueError(text)
                return value

            links.setdefault(name, Link(name, f"sel_{name}", defaults[name], parse))
    return list(links.values())


def _strength(text: str) -> float:
    """A steering strength from a link: a finite number from 0 to 8, as the slider."""
    value = float(text)
    if not (math.isfinite(value) and 0.0 <= value <= 8.0):
        raise ValueError(text)
    return value


def _join(values: Any) -> str:
    return ",".join(values)


def _dash(values: Any) -> str:
    return f"{values[0]}-{values[1]}"


LINKS: list[Link] = [
    Link("model", "model", "", str),
    Link("langs", "languages", DEFAULT_LANGUAGES, _languages, _join),
    Link("budget", "budget", 0, int),
    Link("run", "run_dir", "", str),
    Link("method", "method", "lape", str),
    *_setting_links(),
    Link("layer", "insp_layer", -1, int),
    Link("neuron", "insp_neuron", -1, int),
    Link("lang", "hm_lang", "", str),
    Link("metric", "hm_metric", "Activation probability", str),
    Link("zoom", "hm_range", None, _pair, _dash),
    Link("prompt", "pg_prompt", "", str),
    Link("mode", "pg_mode", "Deactivate", str),
    Link("off", "pg_off", None, _languages, _join),
    Link("target", "pg_target", "", str),
    Link("strength", "pg_strength", 1.0, _strength),
    Link("also_off", "pg_steer_off", [], _languages, _join),
    Link("layers", "pg_layers", None, _pair, _dash),
    Link("neurons", "pg_pairs", "", str),
]
ALIASES = {"bar_ratio": "activation_bar_ratio"}  # older links


def kept() -> dict[str, Any]:
    """This session's remembered widget values (what the share link writes)."""
    store: dict[str, Any] = st.session_state.setdefault(KEPT, {})
    return store


def seed(key: str, default: Any) -> None:
    """Give widget ``key`` its remembered value (from earlier pages or the link), else
    ``default``; call before drawing the widget."""
    if key not in st.session_state:
        value = kept().get(key)
        st.session_state[key] = default if value is None else value


def remember(key: str, value: Any) -> None:
    """Keep a widget's value for later pages and the share link."""
    kept()[key] = value


def forget(prefix: str) -> None:
    """Drop every widget value whose key starts with ``prefix`` (a page's reset)."""
    for key in [k for k in st.session_state if str(k).startswith(prefix)]:
        del st.session_state[key]
    for key in [k for k in kept() if k.startswith(prefix)]:
        del kept()[key]


def restore_from_url() -> list[str]:
    """Seed the kept values from the link once per session; returns the link values that
    were ignored (unreadable or out of range), to say so."""
    if st.session_state.get("_url_restored"):
        return []
    st.session_state["_url_restored"] = True
    opened = os.environ.get(OPEN_RUN)  # `langneurons dashboard --run DIR`
    if opened and "run" not in st.query_params:
        kept()["run_dir"] = opened
    ignored = []
    by_url = {link.url: link for link in LINKS}
    for name, raw in st.query_params.to_dict().items():
        link = by_url.get(ALIASES.get(name, name))
        if link is None:
            continue
        try:
            kept()[link.key] = link.parse(raw)
        except (ValueError, TypeError):
            ignored.append(f"{name}={raw[:40]}")
    return ignored


def write_url() -> None:
    """Mirror the kept values into the address bar (only those off their default)."""
    store = kept()
    for link in LINKS:
        value = store.get(link.key)
        if value is None or value == link.default or value == "":
            st.query_params.pop(link.url, None)
        else:
            st.query_params[link.url] = link.show(value)


@dataclass(frozen=True)
class Settings:
    """What the set-up panel chose: the model, the text and how it is counted, and how
    neurons are selected (a detector's settings)."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    device: str = "cpu"
    languages: tuple[str, ...] = tuple(DEFAULT_LANGUAGES)
    corpus: str = EMBEDDED
    counting: CountingConfig = field(default_factory=CountingConfig)
    selection: SelectionConfig = field(default_factory=lambda: make_config("lape"))
    run_dir: str | None = None  # statistics from this run folder instead of computing

    def statistics_key(self) -> str:
        """What the statistics depend on (not the selection: sliders reselect)."""
        text = (
            f"{self.model}|{self.dtype}|{self.device}|{self.languages}|{self.corpus}|"
            f"{self.counting}|{self.run_dir}|{run_stamp(self.run_dir) if self.run_dir else ''}"
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class PageContext:
    """What every page draws from: the model, the statistics and the selection, the
    settings they were made with, and whether the sidebar has moved on since."""

    lm: LoadedModel
    result: ComputeResult
    selection: Selection
    settings: Settings
    stale: bool = False


def page_context() -> PageContext:
    """The context ``app.py`` prepared for this run (pages are run after it)."""
    context: PageContext = st.session_state["_context"]
    return context


def recipe_book(ctx: PageContext) -> RecipeBook | None:
    """The steering recipes for the neurons shown: the open run folder's, else those a
    search kept in the cache for this model and these neurons.  Raises a
    ``ResultsError`` (one line) when the run's ``recipes.json`` is damaged."""
    run = open_run(ctx.settings.run_dir)[0] if ctx.settings.run_dir else None
    return find_recipes(ctx.lm.fingerprint, ctx.selection.masks, ctx.selection.languages, run)


def classroom() -> ClassroomConfig | None:
    """The classroom settings this server was started with, or ``None`` (one user)."""
    return server.read_classroom()


def _load(
    spec: str, dtype: str, device: str, progress: Callable[[ProgressEvent], None] | None = None
) -> LoadedModel:
    def log(event: ProgressEvent) -> None:  # conversion and loading, in the server's log
        print(f"[langneurons] {event.message}", file=sys.stderr, flush=True)
        if progress is not None:  # and on the page of the session that is loading
            progress(event)

    return load_model(
        None if spec == DEFAULT_MODEL else spec, dtype=dtype, device=device, progress=log
    )


@st.cache_resource(show_spinner=False)
def model_pool() -> server.ModelPool:
    """The server's loaded models, shared by every session, bounded in number."""
    return server.ModelPool(server.OPEN_MODEL_LIMIT, _load)


def shared_model(
    spec: str,
    dtype: str,
    device: str,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> LoadedModel:
    """The process-wide model for these settings (loaded or converted once; ``progress``
    hears the stages when this session is the one loading); a classroom server refuses
    models it does not allow."""
    limits = classroom()
    if limits is not None and not limits.allows_model(spec):
        raise ModelLoadError(
            f"This classroom server runs only {', '.join(limits.models)}; {spec!r} is not "
            "one of them."
        )
    pool = model_pool()
    pool.capacity = limits.max_loaded_models if limits else server.OPEN_MODEL_LIMIT
    model: LoadedModel = pool.get(spec, dtype, device, progress)
    return model


@st.cache_resource(show_spinner=False)
def job_queue() -> server.JobQueue:
    """The server-wide queue of long jobs."""
    return server.JobQueue()


@st.cache_resource(show_spinner=False)
def live_streams() -> server.LiveStreams:
    """The server-wide count of sessions streaming generation."""
    return server.LiveStreams()


@contextmanager
def long_job(settings: Settings) -> Iterator[None]:
    """Wait for this long job's turn on the server, showing the place in the queue; in
    classroom mode give up after the configured time with a clear message."""
    limits = classroom()
    status: Any = None

    def waiting(ahead: int) -> None:
        nonlocal status
        label = f"The server is busy: {ahead} job{'s' if ahead != 1 else ''} before yours..."
        if status is None:
            status = st.status(label, state="running")
        else:
            status.update(label=label)

    with job_queue().turn(limits.job_timeout_s if limits else None, waiting):
        if status is not None:
            status.update(label="Your turn.", state="complete")
        yield


def without_private_paths(message: object) -> str:
    """``message`` without this session's private upload folder: a file in it is named by
    its own name (the folder's path is the server's business, not the student's)."""
    text = str(message)
    folder = st.session_state.get("_uploads")
    if folder is not None:
        private = str(folder.path)
        text = text.replace(private + os.sep, "").replace(private, "the uploaded files")
    return text


def upload_folder() -> server.UploadFolder:
    """This session's private folder for uploads (removed when the session ends)."""
    folder = st.session_state.get("_uploads")
    if folder is None:
        folder = st.session_state["_uploads"] = server.UploadFolder()
    return folder


def save_uploads(files: list[Any]) -> str:
    """Write uploaded ``<code>.txt`` files into this session's private folder."""
    limits = classroom()
    if limits is not None and not limits.uploads:
        raise CorpusError("Uploads are switched off on this classroom server.")
    max_bytes = int((limits.max_upload_mb if limits else MAX_UPLOAD_BYTES / 1e6) * 1e6)
    return upload_folder().save(files, max_bytes)


@st.cache_resource(show_spinner=False, max_entries=64)
def reselect(statistics_key: str, _result: ComputeResult, config: SelectionConfig) -> Selection:
    """A detector on the cached statistics (no model involved).  ``statistics_key``
    names the statistics ``_result`` holds, so the cache key covers what it claims."""
    return select(_result.statistics, config, samples=_result.samples)


def run_stamp(folder: str) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of a run folder's files: changes when any is
    rewritten, so a cache keyed by it reads the folder again."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        return ()
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file()
    )


def open_run(folder: str) -> tuple[Run, ComputeResult]:
    """A run folder written by ``langneurons compute`` and the result the pages show,
    read once per version of its files (the stamp is part of the cache key)."""
    path = str(Path(folder).expanduser().resolve())
    return _read_run(path, run_stamp(path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_run(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[Run, ComputeResult]:
    run = read_run(folder)
    stats = run.statistics
    if stats is None:
        raise ResultsError(
            f"{folder!r} holds imported neuron masks without statistics; the dashboard needs "
            "the counts. Open a folder written by `langneurons compute`."
        )
    if len(run.languages) < 2:
        raise ResultsError(f"{folder!r} covers one language; the detectors compare two or more.")
    result = ComputeResult(
        statistics=stats,
        selection=select(stats, run.selection_config(), samples=run.samples),
        meta=run.meta,
        cached_languages=list(stats.languages),
        out_dir=run.path,
        samples=run.samples,
    )
    return run, result


def run_model(run: Run) -> str:
    """The model a run was computed with, as the model field would name it."""
    return run_model_spec(run) or DEFAULT_MODEL


def run_corpus(run: Run) -> str:
    """The run's corpus when this machine has it (the UDHR or an existing folder; on a
    classroom server, only under its corpus roots), else the UDHR, for the views that read
    text (passages, the ablation matrix)."""
    name = str(run.meta.get("corpus", {}).get("name", ""))
    limits = classroom()
    if limits is not None and name != EMBEDDED:
        inside = limits.resolve_under(limits.corpus_roots, name)
        return str(inside) if inside is not None and inside.is_dir() else EMBEDDED
    return name if name == EMBEDDED or (name and Path(name).is_dir()) else EMBEDDED
