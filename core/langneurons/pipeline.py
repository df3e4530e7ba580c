"""The main job: statistics over a corpus, neuron selection, and the run folder."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__, distributed
from .config import CountingConfig, from_mapping, to_dict
from .corpus import EMBEDDED, Corpus, load_corpus, parse_languages
from .errors import CacheError, CorpusError
from .launch import is_reporting_rank
from .models import LoadedModel, load_model
from .outputs import check_output_folder
from .progress import ProgressCallback, emit
from .results import RUN_FORMAT, Run, selection_record, write_run
from .samples import SampleActivations, collect_samples
from .selection import LapeConfig, Selection, SelectionConfig, detector_for, select
from .stats import (
    Checkpoint,
    LanguageStats,
    Statistics,
    StatsCache,
    cache_key,
    collect_language_stats,
    counting_windows,
)
from .streaming import PREFIX as HF_PREFIX
from .streaming import HFSource, streamed_windows


@dataclass
class ComputeResult:
    """What :func:`compute` produced; ``out_dir`` is set when it wrote a run folder."""

    statistics: Statistics
    selection: Selection
    meta: dict[str, Any]
    cached_languages: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    samples: SampleActivations | None = None
    """Per-sample activations, when the detector needed them."""

    def neurons_table(self) -> Any:
        """One row per selected neuron and language as a DataFrame (see
        :func:`langneurons.tables.neurons_table` for the columns)."""
        from .tables import neurons_table

        return neurons_table(self.selection, self.statistics)

    def as_run(self) -> Run:
        """The result as a :class:`~langneurons.results.Run`, for the functions that read
        a run's statistics, corpus record and neurons (its folder, when it wrote one)."""
        return Run(
            path=self.out_dir if self.out_dir is not None else Path("(computed, not saved)"),
            statistics=self.statistics,
            meta=self.meta,
            neurons=self.selection.to_json(),
            samples=self.samples,
        )


def _versions() -> dict[str, str]:
    import transformers

    return {
        "langneurons": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def counting_config(counting: CountingConfig | None, overrides: dict[str, Any]) -> CountingConfig:
    """``counting`` (or the defaults) with single settings overridden by keyword, so that
    ``compute(lm, langs, max_tokens=500)`` and ``counting=CountingConfig(max_tokens=500)``
    are the same call."""
    base = counting or CountingConfig()
    if not overrides:
        return base
    return from_mapping(CountingConfig, {**to_dict(base), **overrides}, "Counting")


def cached_languages(
    model: LoadedModel,
    languages: Sequence[str] | str,
    *,
    corpus: Corpus | str = EMBEDDED,
    counting: CountingConfig | None = None,
    cache: StatsCache | None = None,
    **overrides: Any,
) -> list[str]:
    """Which of ``languages`` :func:`compute` would read from the cache (no forward pass).

    Lets a UI show cached results at once and ask before a long computation.
    """
    settings = counting_config(counting, overrides)
    codes = parse_languages(languages)
    if isinstance(corpus, str):
        corpus = load_corpus(corpus, codes)
    cache = cache or StatsCache()
    return [
        code
        for code in codes
        if cache.path(cache_key(model, counting_windows(model, corpus, code, settings))).is_file()
    ]


class _StatisticsJob:
    """One ``compute`` call's counting: the windows of each language, its cache entries,
    checkpoints and (under a launcher) its share of the work."""

    def __init__(
        self,
        model: LoadedModel,
        codes: list[str],
        corpus: Corpus | HFSource,
        counting: CountingConfig,
        cache: StatsCache,
        use_cache: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.model, self.codes, self.corpus = model, codes, corpus
        self.counting, self.cache, self.use_cache = counting, cache, use_cache
        self.progress = progress
        self.shape = (model.num_layers, model.num_neurons)
        self.windows: dict[str, list[torch.Tensor]] = {}
        self.stream_info: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.cached: list[str] = []
        self.group = distributed.context(model.input_device)
        self.keep_windows = False  # set when a detector reads samples of the same windows

    def prepare(self) -> None:
        """Fail on bad input before any long computation: an in-memory corpus is tokenized
        now; a streamed one is opened per language and read one language at a time later,
        so only one language's tokens are ever held."""
        for code in self.codes:
            if isinstance(self.corpus, HFSource):
                emit(
                    self.progress,
                    "tokenize",
                    f"Opening {code} in {self.corpus.name}",
                    language=code,
                )
                self.corpus.check(code)
                continue
            emit(self.progress, "tokenize", f"Tokenizing {code}", language=code)
            self.windows[code] = counting_windows(self.model, self.corpus, code, self.counting)

    def check_cache(self) -> None:
        """Refuse a cache that cannot store what will be counted, before any counting (a
        read-only cache holding every language is fine)."""
        if not self.is_main:
            return
        missing = [
            code
            for code in self.codes
            if not self.use_cache
            or code not in self.windows
            or not self.cache.path(self._key(code, self.windows[code])).is_file()
        ]
        if missing:
            entry = self.shape[0] * self.shape[1] * 24  # three 8-byte values per neuron
            self.cache.check_writable(len(missing), entry)

    def _key(self, code: str, windows: list[torch.Tensor]) -> str:
        """The cache key of ``code``'s windows, hashed once per job."""
        if code not in self.keys:
            self.keys[code] = cache_key(self.model, windows)
        return self.keys[code]

    def windows_of(self, code: str) -> list[torch.Tensor]:
        if not isinstance(self.corpus, HFSource):
            return self.windows[code] if self.keep_windows else self.windows.pop(code)
        emit(self.progress, "tokenize", f"Reading and tokenizing {code}", language=code)
        assert self.counting.max_tokens is not None  # checked by compute()
        found, self.stream_info[code] = streamed_windows(
            self.model.tokenizer,
            self.corpus.records(code),
            max_tokens=self.counting.max_tokens,
            seq_len=self.counting.seq_len,
            eval_fraction=self.counting.eval_fraction,
            language=code,
        )
        return found

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main

    def cached_stats(self, code: str, key: str) -> LanguageStats | None:
        """The language's statistics from the cache, when every rank has them."""
        hit = self.cache.load(key, self.shape, self.progress) if self.use_cache else None
        if self.group is not None and not self.group.all_have(hit is not None):
            return None  # ranks decide together, or their all-reduces would not match
        if hit is not None:
            self.cached.append(code)
            emit(
                self.progress,
                "cache",
                f"{code}: statistics found in the cache",
                language=code,
                done=hit.tokens,
                total=hit.tokens,
            )
            if self.is_main:
                self.cache.drop_partial(key)  # left by a run stopped after the last save
        return hit

    def count(self, code: str) -> LanguageStats:
        """One language's statistics: from the cache, or counted (this rank's share, summed
        over ranks), stored, and its checkpoints removed."""
        language_windows = self.windows_of(code)
        key = self._key(code, language_windows)
        hit = self.cached_stats(code, key)
        if hit is not None:
            return hit
        group = self.group
        mine = language_windows if group is None else group.shard(language_windows)
        part = "all" if group is None else f"r{group.rank}of{group.world_size}"
        every = self.counting.checkpoint_tokens
        checkpoint = (
            Checkpoint(self.cache, key, every, part, resume=self.use_cache) if every else None
        )
        stats = (
            collect_language_stats(
                self.model,
                mine,
                batch_size=self.counting.batch_size,
                language=code,
                progress=self.progress,
                checkpoint=checkpoint,
            )
            if mine
            else distributed.zero_stats(*self.shape)
        )
        if group is not None:
            stats = group.sum_stats(stats)
        if self.is_main:
            try:
                self.cache.save(key, stats, code)
            except CacheError as exc:  # the counts are kept for this run, only not cached
                emit(self.progress, "cache", f"{exc} This run keeps its counts.", language=code)
        # The language is whole in the cache now: its checkpoints are obsolete, also those
        # of runs with another number of processes (rank 0 removes every share).
        self.cache.drop_partial(key, None if self.is_main else part)
        return stats

    def corpus_record(self) -> dict[str, Any]:
        """The corpus part of ``meta.json``: texts, hashes and split."""
        fraction = self.counting.eval_fraction
        if isinstance(self.corpus, Corpus):
            return self.corpus.describe(fraction)
        return {
            "name": HF_PREFIX + self.corpus.name,
            **self.corpus.describe(),
            "languages": self.stream_info,
            "split": {
                "eval_fraction": fraction,
                "rule": "record i is held out when "
                "floor((i + 1) * eval_fraction) > floor(i * eval_fraction)",
            },
        }


def run_meta(
    job: _StatisticsJob,
    per_language: dict[str, LanguageStats],
    selection: Selection,
    seconds: float,
) -> dict[str, Any]:
    """The run's ``meta.json``: what was counted, how, with what, and what was selected."""
    model, counting, codes = job.model, job.counting, job.codes
    return {
        "format": RUN_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.describe(),
        "languages": codes,
        "layers": model.num_layers,
        "neurons": model.num_neurons,
        "corpus": job.corpus_record(),
        "counting": {
            **to_dict(counting),
            "bos_prepended_and_skipped": getattr(model.tokenizer, "bos_token_id", None) is not None,
            "tokens": {code: per_language[code].tokens for code in codes},
            "value": "output of the MLP activation module: "
            + ("act_fn(gate_proj(x))" if model.adapter.gated else "act(fc_in(x))"),
        },
        "selection": selection_record(selection),
        "cache_keys": job.keys,
        "world_size": 1 if job.group is None else job.group.world_size,
        "versions": _versions(),
        "seconds": round(seconds, 2),
    }


def _resolve_corpus(
    corpus: Corpus | str,
    codes: list[str],
    counting: CountingConfig,
    dataset_options: dict[str, Any] | None,
) -> Corpus | HFSource:
    """The corpus object for a source name, checked to hold every language."""
    if isinstance(corpus, str) and corpus.startswith(HF_PREFIX):
        if counting.max_tokens is None:
            raise CorpusError("Dataset corpora are streamed: give a token budget (--max-tokens).")
        return HFSource.parse(corpus, **(dataset_options or {}))
    if isinstance(corpus, str):
        corpus = load_corpus(corpus, codes)
    missing = [c for c in codes if c not in corpus.texts]
    if missing:
        raise CorpusError(
            f"Language(s) {', '.join(missing)} not in the corpus ({', '.join(corpus.languages)})."
        )
    return corpus


def compute(
    model: LoadedModel | str | None = None,
    languages: Sequence[str] | str = ("en", "fr"),
    *,
    corpus: Corpus | str = EMBEDDED,
    counting: CountingConfig | None = None,
    selection: SelectionConfig | None = None,
    use_cache: bool = True,
    cache: StatsCache | None = None,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    load_options: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> ComputeResult:
    """Collect per-language statistics, select language neurons, optionally write a run.

    ``model`` is a :class:`LoadedModel` or a spec for :func:`load_model` (``None``: the
    embedded default; ``load_options`` go to it).  ``corpus`` is a :class:`Corpus` or a
    source (``"udhr"``, a folder, or ``"hf:NAME"``).  ``counting`` says how text becomes
    counted windows (:class:`~langneurons.config.CountingConfig`; single settings may be
    given as keywords, ``max_tokens=500``); ``selection`` is a detector's settings
    (default: LAPE with the reference thresholds).

    With ``use_cache`` (the default) each finished language is stored at once and reused
    by any later call with the same model, tokens and settings, so an interrupted call
    resumes where it stopped; ``use_cache=False`` recomputes everything and refreshes the
    cache.  Within a language the counts so far are saved every
    ``counting.checkpoint_tokens`` tokens (per rank under a launcher), so a long language
    resumes where it stopped too.

    ``corpus="hf:NAME"`` streams a Hugging Face dataset (``dataset_options``: ``config``,
    ``split``, ``text_field``, ``data_files``, with ``{lang}`` filled per language, and
    ``language_names`` for datasets that name languages their own way; see
    :mod:`langneurons.streaming`); it needs ``max_tokens``.  Streamed languages are read
    one at a time, so only one language's tokens are held.

    >>> from langneurons.tiny import tiny_model
    >>> result = compute(tiny_model(), ["en", "fr"], max_tokens=200)
    >>> result.selection.languages, tuple(result.statistics.over_zero.shape)
    (['en', 'fr'], (2, 128, 2))
    """
    start = time.perf_counter()
    if not is_reporting_rank():
        progress = None  # one progress report under a launcher: rank 0's
    settings = counting_config(counting, overrides)
    selection_config = selection if selection is not None else LapeConfig()
    codes = parse_languages(languages)
    if len(codes) < 2:
        raise CorpusError(
            f"Language neurons are found by comparing languages: give at least two (for "
            f"example --languages en,fr), not only {codes[0]!r}."
        )
    if (
        detector_for(selection_config).needs_samples
        and isinstance(corpus, str)
        and corpus.startswith(HF_PREFIX)
    ):
        raise CorpusError(_STREAMED_SAMPLES)
    if out_dir is not None:
        check_output_folder(out_dir)  # before any work, so nothing computed is lost
    source = _resolve_corpus(corpus, codes, settings, dataset_options)
    if not isinstance(model, LoadedModel):
        model = load_model(model, progress=progress, **(load_options or {}))
    job = _StatisticsJob(model, codes, source, settings, cache or StatsCache(), use_cache, progress)
    job.keep_windows = detector_for(selection_config).needs_samples
    job.prepare()
    job.check_cache()
    per_language = {code: job.count(code) for code in codes}
    statistics = Statistics.stack(per_language)
    samples = None
    if detector_for(selection_config).needs_samples:
        samples = _collect_samples(
            model,
            codes,
            source,
            settings,
            use_cache,
            progress,
            group=job.group,
            windows=job.windows,
        )
    emit(progress, "select", "Selecting neurons")
    chosen = select(statistics, selection_config, samples=samples)
    meta = run_meta(job, per_language, chosen, time.perf_counter() - start)
    if samples is not None:
        meta["samples"] = {"sample_tokens": samples.sample_tokens, "per_language": samples.counts()}
    result = ComputeResult(statistics, chosen, meta, cached_languages=job.cached, samples=samples)
    if out_dir is not None and job.is_main:
        emit(progress, "write", f"Writing {out_dir}")
        result.out_dir = write_run(out_dir, statistics, chosen, meta, samples)
    return result


_STREAMED_SAMPLES = (
    "This detector ranks texts, so it needs per-sample activations, which are taken from a "
    "corpus held in memory (the embedded UDHR or a folder), not a streamed dataset. Use "
    "--corpus udhr or a folder, or another --method."
)


def _collect_samples(
    model: LoadedModel,
    codes: list[str],
    source: Corpus | HFSource,
    counting: CountingConfig,
    use_cache: bool,
    progress: ProgressCallback | None,
    group: distributed.DistributedContext | None = None,
    windows: dict[str, list[torch.Tensor]] | None = None,
) -> SampleActivations:
    """Per-sample activations for a detector that ranks texts (same windows as counted;
    shared between the ranks under a launcher)."""
    if not isinstance(source, Corpus):
        raise CorpusError(_STREAMED_SAMPLES)
    emit(progress, "samples", "Collecting per-sample activations")
    return collect_samples(
        model,
        source,
        codes,
        counting=counting,
        use_cache=use_cache,
        progress=progress,
        group=group,
        windows=windows,
    )


def compute_samples(
    model: LoadedModel,
    languages: Sequence[str] | str,
    *,
    corpus: Corpus | str = EMBEDDED,
    counting: CountingConfig | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
) -> SampleActivations:
    """The per-sample activations :func:`compute` would collect for the same arguments
    (for a detector that ranks texts, chosen after the statistics were counted)."""
    codes = parse_languages(languages)
    settings = counting or CountingConfig()
    if isinstance(corpus, str) and corpus.startswith(HF_PREFIX):
        raise CorpusError(_STREAMED_SAMPLES)
    source = _resolve_corpus(corpus, codes, settings, None)
    return _collect_samples(model, codes, source, settings, use_cache, progress)
