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
from .corpus import (
    DEFAULT_EVAL_FRACTION,
    EMBEDDED,
    Corpus,
    load_corpus,
    parse_languages,
    tokenize_windows,
)
from .errors import CorpusError
from .models import LoadedModel, load_model
from .progress import ProgressCallback, emit
from .results import RUN_FORMAT, write_run
from .selection import Selection, select
from .stats import (
    DEFAULT_CHECKPOINT_TOKENS,
    Checkpoint,
    LanguageStats,
    Statistics,
    StatsCache,
    cache_key,
    collect_language_stats,
)
from .streaming import PREFIX as HF_PREFIX
from .streaming import HFSource, streamed_windows

DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 8


@dataclass
class ComputeResult:
    """What :func:`compute` produced; ``out_dir`` is set when it wrote a run folder."""

    statistics: Statistics
    selection: Selection
    meta: dict[str, Any]
    cached_languages: list[str] = field(default_factory=list)
    out_dir: Path | None = None


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "langneurons": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def cached_languages(
    model: LoadedModel,
    languages: Sequence[str] | str,
    *,
    corpus: Corpus | str = EMBEDDED,
    max_tokens: int | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    cache: StatsCache | None = None,
) -> list[str]:
    """Which of ``languages`` :func:`compute` would read from the cache (no forward pass).

    Lets a UI show cached results at once and ask before a long computation.
    """
    codes = parse_languages(languages)
    if isinstance(corpus, str):
        corpus = load_corpus(corpus, codes)
    cache = cache or StatsCache()
    found = []
    for code in codes:
        windows = tokenize_windows(
            model.tokenizer,
            corpus.identify_text(code, eval_fraction),
            max_tokens=max_tokens,
            seq_len=seq_len,
            language=code,
        )
        if cache.path(cache_key(model, windows)).is_file():
            found.append(code)
    return found


def compute(
    model: LoadedModel | str | None = None,
    languages: Sequence[str] | str = ("en", "fr"),
    *,
    corpus: Corpus | str = EMBEDDED,
    max_tokens: int | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = DEFAULT_BATCH_SIZE,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    method: str = "lape",
    settings: dict[str, float] | None = None,
    use_cache: bool = True,
    cache: StatsCache | None = None,
    out_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    load_options: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    checkpoint_tokens: int = DEFAULT_CHECKPOINT_TOKENS,
) -> ComputeResult:
    """Collect per-language statistics, select language neurons, optionally write a run.

    ``model`` is a :class:`LoadedModel` or a spec for :func:`load_model` (``None``: the
    embedded default).  ``corpus`` is a :class:`Corpus` or a source (``"udhr"`` or a
    folder).  ``max_tokens`` caps the counted tokens per language (``None``: the whole
    identification part).  With ``use_cache`` (the default) each finished language is
    stored at once and reused by any later call with the same model, tokens and
    settings, so an interrupted call resumes where it stopped; ``use_cache=False``
    recomputes everything and refreshes the cache.  Within a language the counts so far
    are saved every ``checkpoint_tokens`` tokens (``0``: never), per rank under a
    launcher, so a long language resumes where it stopped too.

    ``corpus="hf:NAME"`` streams a Hugging Face dataset (``dataset_options``: ``config``,
    ``split``, ``text_field``, ``data_files``, with ``{lang}`` filled per language, and
    ``language_names`` for datasets that name languages their own way; see
    :mod:`langneurons.streaming`); it needs ``max_tokens``.  Streamed languages are read
    one at a time, so only one language's tokens are held.
    """
    start = time.perf_counter()
    if distributed.launched_world_size() > 1 and distributed.launched_rank() != 0:
        progress = None  # one progress report under a launcher: rank 0's
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if checkpoint_tokens < 0:
        raise ValueError(f"checkpoint_tokens must be 0 (never) or more, got {checkpoint_tokens}.")
    codes = parse_languages(languages)
    streamed: HFSource | None = None
    if isinstance(corpus, str) and corpus.startswith(HF_PREFIX):
        if max_tokens is None:
            raise CorpusError("Dataset corpora are streamed: give a token budget (--max-tokens).")
        streamed = HFSource.parse(corpus, **(dataset_options or {}))
    elif isinstance(corpus, str):
        corpus = load_corpus(corpus, codes)
    missing = [] if streamed else [c for c in codes if c not in corpus.texts]
    if missing:
        raise CorpusError(
            f"Language(s) {', '.join(missing)} not in the corpus ({', '.join(corpus.languages)})."
        )
    if not isinstance(model, LoadedModel):
        model = load_model(model, progress=progress, **(load_options or {}))
    cache = cache or StatsCache()
    shape = (model.num_layers, model.num_neurons)

    # Bad input fails before any long computation: an in-memory corpus is tokenized now;
    # a streamed one is opened per language and read one language at a time later, so
    # only one language's tokens are ever held.
    windows: dict[str, list[torch.Tensor]] = {}
    stream_info: dict[str, Any] = {}
    for code in codes:
        if streamed is not None:
            emit(progress, "tokenize", f"Opening {code} in {streamed.name}", language=code)
            streamed.check(code)
            continue
        emit(progress, "tokenize", f"Tokenizing {code}", language=code)
        windows[code] = tokenize_windows(
            model.tokenizer,
            corpus.identify_text(code, eval_fraction),
            max_tokens=max_tokens,
            seq_len=seq_len,
            language=code,
        )

    def windows_of(code: str) -> list[torch.Tensor]:
        if streamed is None:
            return windows.pop(code)
        emit(progress, "tokenize", f"Reading and tokenizing {code}", language=code)
        found, stream_info[code] = streamed_windows(
            model.tokenizer,
            streamed.records(code),
            max_tokens=max_tokens,  # type: ignore[arg-type]
            seq_len=seq_len,
            eval_fraction=eval_fraction,
            language=code,
        )
        return found

    group = distributed.context(model.input_device)
    per_language: dict[str, LanguageStats] = {}
    keys: dict[str, str] = {}
    cached: list[str] = []
    for code in codes:
        language_windows = windows_of(code)
        keys[code] = cache_key(model, language_windows)
        hit = cache.load(keys[code], shape, progress) if use_cache else None
        if group is not None and not group.all_have(hit is not None):
            hit = None  # ranks decide together, or their all-reduces would not match
        if hit is not None:
            cached.append(code)
            emit(
                progress,
                "cache",
                f"{code}: statistics found in the cache",
                language=code,
                done=hit.tokens,
                total=hit.tokens,
            )
            per_language[code] = hit
            if group is None or group.is_main:
                cache.drop_partial(keys[code])  # left by a run stopped after the last save
            continue
        mine = language_windows if group is None else group.shard(language_windows)
        part = "all" if group is None else f"r{group.rank}of{group.world_size}"
        checkpoint = (
            Checkpoint(cache, keys[code], part, checkpoint_tokens, resume=use_cache)
            if checkpoint_tokens
            else None
        )
        stats = (
            collect_language_stats(
                model,
                mine,
                batch_size=batch_size,
                language=code,
                progress=progress,
                checkpoint=checkpoint,
            )
            if mine
            else distributed.zero_stats(*shape)
        )
        if group is not None:
            stats = group.sum_stats(stats)
        if group is None or group.is_main:
            cache.save(keys[code], stats, code)
        # The language is whole in the cache now: its checkpoints are obsolete, also those
        # of runs with another number of processes (rank 0 removes every share).
        cache.drop_partial(keys[code], None if group is None or group.is_main else part)
        per_language[code] = stats
    statistics = Statistics.stack(per_language)
    emit(progress, "select", f"Selecting neurons ({method})")
    selection = select(statistics, method, **(settings or {}))
    meta = {
        "format": RUN_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.describe(),
        "languages": codes,
        "layers": model.num_layers,
        "neurons": model.num_neurons,
        "corpus": corpus.describe(eval_fraction)
        if streamed is None
        else {
            "name": corpus,
            **streamed.describe(),
            "languages": stream_info,
            "split": {
                "eval_fraction": eval_fraction,
                "rule": "record i is held out when "
                "floor((i + 1) * eval_fraction) > floor(i * eval_fraction)",
            },
        },
        "counting": {
            "max_tokens": max_tokens,
            "seq_len": seq_len,
            "batch_size": batch_size,
            "bos_prepended_and_skipped": getattr(model.tokenizer, "bos_token_id", None) is not None,
            "tokens": {code: per_language[code].tokens for code in codes},
            "value": "output of the MLP activation module: "
            + ("act_fn(gate_proj(x))" if model.adapter.gated else "act(fc_in(x))"),
        },
        "selection": {
            "method": selection.method,
            "settings": selection.settings,
            "thresholds": selection.thresholds,
            "per_language": {
                code: int(sum(len(t) for t in selection.masks[k])) for k, code in enumerate(codes)
            },
        },
        "cache_keys": keys,
        "world_size": 1 if group is None else group.world_size,
        "versions": _versions(),
        "seconds": round(time.perf_counter() - start, 2),
    }
    result = ComputeResult(statistics, selection, meta, cached_languages=cached)
    if out_dir is not None and (group is None or group.is_main):
        emit(progress, "write", f"Writing {out_dir}")
        result.out_dir = write_run(out_dir, statistics, selection, meta)
    return result
