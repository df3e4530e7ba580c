"""Per-sample activations: each neuron's mean value over short stretches of text.

The statistics pass (:mod:`langneurons.stats`) sums over every token of a language, which
is all LAPE and the mean-difference detector need.  Detectors that rank *texts* by a
neuron's value, as the average-precision detector of Kojima et al. (2024) does, need one
value per neuron and text instead.  Here a *sample* is a stretch of ``sample_tokens``
consecutive tokens of a counting window (the language's identification text, cut and
BOS-prefixed exactly as for the statistics), and its value is the mean of the neuron's
output over those tokens, computed in context in the same kind of forward pass.  A
window's last stretch counts when it holds at least half of ``sample_tokens``.

Results are cached per language on disk (safetensors, float16 values), keyed by the model
weights, the exact tokens and ``sample_tokens``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import hooks
from .atomic import write_atomically
from .config import CountingConfig, setting, validate
from .corpus import Corpus
from .distributed import DistributedContext
from .errors import LangNeuronsError
from .models import LoadedModel
from .paths import cache_dir
from .progress import ProgressCallback, emit
from .stats import counting_order, counting_windows, read_metadata, tokens_digest

SAMPLES_FORMAT = 1


@dataclass(frozen=True)
class SampleConfig:
    """How text is cut into samples."""

    sample_tokens: int = setting(
        32,
        "tokens per sample: a neuron's value on a sample is its mean over this many "
        "consecutive tokens (about a sentence)",
        minimum=2,
        maximum=4096,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class SampleActivations:
    """Mean neuron values per sample of several languages.

    ``means`` is float16 ``[samples, layers, neurons]``; ``language[s]`` is the index in
    ``languages`` of sample ``s``'s language.
    """

    languages: list[str]
    language: torch.Tensor  # int64 [S]
    means: torch.Tensor  # float16 [S, L, N]
    sample_tokens: int

    @property
    def num_layers(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_neurons(self) -> int:
        return int(self.means.shape[2])

    def counts(self) -> dict[str, int]:
        """Samples per language."""
        return {code: int((self.language == k).sum()) for k, code in enumerate(self.languages)}

    @classmethod
    def stack(cls, per_language: dict[str, torch.Tensor], sample_tokens: int) -> SampleActivations:
        """Join per-language ``[S_k, L, N]`` means in the order given."""
        codes = list(per_language)
        if not codes:
            raise LangNeuronsError("No languages to join.")
        empty = [code for code in codes if per_language[code].shape[0] == 0]
        if empty:
            raise LangNeuronsError(
                f"No samples for {', '.join(empty)}: the text is shorter than one sample; "
                "use a smaller sample size or more text."
            )
        return cls(
            languages=codes,
            language=torch.cat(
                [
                    torch.full((per_language[code].shape[0],), k, dtype=torch.int64)
                    for k, code in enumerate(codes)
                ]
            ),
            means=torch.cat([per_language[code] for code in codes]).to(torch.float16),
            sample_tokens=sample_tokens,
        )


def _chunk_means(values: torch.Tensor, sample_tokens: int) -> torch.Tensor:
    """``values`` ``[B, T, N]`` -> means over consecutive stretches ``[B, C, N]`` (a last
    stretch shorter than half a sample is dropped)."""
    batch, length, width = values.shape
    whole = length // sample_tokens
    parts = []
    if whole:
        cut = values[:, : whole * sample_tokens].float()
        parts.append(cut.reshape(batch, whole, sample_tokens, width).mean(dim=2))
    rest = length - whole * sample_tokens
    if rest and rest * 2 >= sample_tokens:
        parts.append(values[:, whole * sample_tokens :].float().mean(dim=1, keepdim=True))
    if not parts:
        return values.new_zeros((batch, 0, width), dtype=torch.float32)
    return torch.cat(parts, dim=1)


def _skips_bos(lm: LoadedModel, windows: Sequence[torch.Tensor]) -> bool:
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    return bos is not None and all(int(w[0]) == bos for w in windows)


def samples_in(length: int, sample_tokens: int) -> int:
    """How many samples a window of ``length`` counted tokens gives (see the module)."""
    whole, rest = divmod(length, sample_tokens)
    return whole + int(rest > 0 and rest * 2 >= sample_tokens)


def language_sample_means(
    lm: LoadedModel,
    windows: Sequence[torch.Tensor],
    sample_tokens: int = 32,
    *,
    batch_size: int = 8,
    language: str = "",
    progress: ProgressCallback | None = None,
    skip_bos: bool | None = None,
) -> torch.Tensor:
    """Mean neuron values per sample of one language's token ``windows``, float16
    ``[samples, layers, neurons]`` (windows in counting order), in this thread's forward
    passes only.  A window's first position is skipped when every window starts with the
    BOS token (``skip_bos`` decides instead when given: a rank's share of the windows
    follows what holds for all of them)."""
    if sample_tokens < 2:
        raise LangNeuronsError(f"sample_tokens must be at least 2, got {sample_tokens}.")
    skip = int(_skips_bos(lm, windows) if skip_bos is None else skip_bos)
    ordered = counting_order(windows)
    collected: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(lm.num_layers)}
    shape: list[tuple[int, int]] = []

    def handler(layer: int) -> hooks.Handler:
        def handle(output: torch.Tensor) -> None:
            values = output.reshape(*shape[0], output.shape[-1])[:, skip:]
            means = _chunk_means(values, sample_tokens).to(torch.float16).cpu()
            collected[layer].append(means.reshape(-1, means.shape[-1]))

        return handle

    handlers = {layer: handler(layer) for layer in range(lm.num_layers)}
    done = 0
    total = sum(len(w) - skip for w in ordered)
    emit(
        progress,
        "samples",
        f"Per-sample activations of {language}",
        language=language,
        done=0,
        total=total,
    )
    with hooks.bound(lm, handlers, hooks.OBSERVE), torch.inference_mode():
        index = 0
        while index < len(ordered):
            length = len(ordered[index])
            stop = min(index + batch_size, len(ordered))
            while len(ordered[stop - 1]) != length:
                stop -= 1
            batch = torch.stack(list(ordered[index:stop])).to(lm.input_device)
            shape[:] = [(batch.shape[0], length)]
            lm.body(input_ids=batch, use_cache=False)
            done += (length - skip) * (stop - index)
            index = stop
            emit(progress, "samples", "", language=language, done=done, total=total)
    if not ordered:
        return torch.zeros((0, lm.num_layers, lm.num_neurons), dtype=torch.float16)
    per_layer = [torch.cat(parts) for parts in collected.values()]
    return torch.stack(per_layer, dim=1)


def shared_sample_means(
    lm: LoadedModel,
    windows: Sequence[torch.Tensor],
    sample_tokens: int,
    group: DistributedContext,
    *,
    batch_size: int = 8,
    language: str = "",
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """:func:`language_sample_means` under a launcher: each rank takes every
    ``world_size``-th window (in counting order), and the ranks' samples are gathered and
    put back in the order one process gives, on every rank."""
    skip = _skips_bos(lm, windows)
    ordered = counting_order(windows)
    mine = group.shard(ordered)
    part = language_sample_means(
        lm,
        mine,
        sample_tokens,
        batch_size=batch_size,
        language=language,
        progress=progress,
        skip_bos=skip,
    )
    per_rank = group.gather(part)
    pieces = [
        list(torch.split(per_rank[r], [samples_in(len(w) - skip, sample_tokens) for w in share]))
        for r, share in enumerate(group.shard_all(ordered))
    ]
    world = group.world_size
    return torch.cat([pieces[i % world][i // world] for i in range(len(ordered))])


def samples_key(lm: LoadedModel, windows: Sequence[torch.Tensor], sample_tokens: int) -> str:
    """Cache key of one language's samples: weights, dtype, exact tokens, sample size."""
    payload = {
        "format": SAMPLES_FORMAT,
        "model": lm.fingerprint,
        "dtype": lm.dtype,
        "tokens": tokens_digest(windows),
        "sample_tokens": sample_tokens,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _load(path: Path, key: str, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached means, or ``None`` when missing, unreadable or not what ``key`` names."""
    try:
        if read_metadata(path).get("key") != key:
            return None
        means = load_file(str(path))["means"]
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError):
        return None
    if means.dim() != 3 or tuple(means.shape[1:]) != shape:
        return None
    return means


def _save(path: Path, key: str, means: torch.Tensor) -> None:
    """Atomically; a cache that cannot be written is skipped, the result is kept."""
    tensors = {"means": means.contiguous()}
    with contextlib.suppress(OSError, SafetensorError):
        write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={"key": key}))


def collect_samples(
    lm: LoadedModel,
    corpus: Corpus,
    languages: Sequence[str],
    *,
    config: SampleConfig | None = None,
    counting: CountingConfig | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    group: DistributedContext | None = None,
    windows: Mapping[str, Sequence[torch.Tensor]] | None = None,
) -> SampleActivations:
    """Per-sample mean neuron values of ``languages``' identification text in ``corpus``
    (cut into windows as ``counting`` says, as for the statistics), each language cached
    on disk once computed.  Under a launcher (``group``) the ranks share each language's
    windows and all receive the whole result; rank 0 writes the cache.  ``windows`` are
    the languages' counting windows when the caller has them (``compute`` just made them),
    so they are not cut again.

    >>> from langneurons.config import CountingConfig
    >>> from langneurons.corpus import load_corpus
    >>> from langneurons.tiny import tiny_model
    >>> corpus, counting = load_corpus("udhr", ["en", "fr"]), CountingConfig(max_tokens=200)
    >>> samples = collect_samples(tiny_model(), corpus, ["en", "fr"], counting=counting)
    >>> samples.languages, tuple(samples.means.shape[1:])
    (['en', 'fr'], (2, 128))
    """
    config = config or SampleConfig()
    counting = counting or CountingConfig()
    missing = [code for code in languages if code not in corpus.texts]
    if missing:
        raise LangNeuronsError(
            f"Language(s) {', '.join(missing)} not in the corpus ({', '.join(corpus.languages)})."
        )
    per_language: dict[str, torch.Tensor] = {}
    shape = (lm.num_layers, lm.num_neurons)
    for code in languages:
        made = windows.get(code) if windows is not None else None
        language_windows = (
            list(made) if made is not None else counting_windows(lm, corpus, code, counting)
        )
        key = samples_key(lm, language_windows, config.sample_tokens)
        path = cache_dir() / "samples" / f"{key}.safetensors"
        found = _load(path, key, shape) if use_cache and path.is_file() else None
        if group is not None and not group.all_have(found is not None):
            found = None  # the ranks compute together or not at all
        if found is not None:
            emit(progress, "cache", f"{code}: samples found in the cache", language=code)
            per_language[code] = found
            continue
        if group is None:
            means = language_sample_means(
                lm,
                language_windows,
                config.sample_tokens,
                batch_size=counting.batch_size,
                language=code,
                progress=progress,
            )
        else:
            means = shared_sample_means(
                lm,
                language_windows,
                config.sample_tokens,
                group,
                batch_size=counting.batch_size,
                language=code,
                progress=progress,
            )
        if group is None or group.is_main:
            _save(path, key, means)
        per_language[code] = means
    return SampleActivations.stack(per_language, config.sample_tokens)


SAMPLES_FILE = "samples.safetensors"
"""The per-sample activations in a run folder, written when its detector needs them."""


def samples_tensors(samples: SampleActivations) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of ``samples`` for a safetensors file."""
    metadata = {
        "languages": json.dumps(samples.languages),
        "sample_tokens": str(samples.sample_tokens),
        "format": str(SAMPLES_FORMAT),
    }
    return {
        "means": samples.means.contiguous(),
        "language": samples.language.contiguous(),
    }, metadata


def read_samples(path: Path) -> SampleActivations:
    """Samples written with :func:`samples_tensors`; a clear error when unreadable."""
    try:
        metadata = read_metadata(path)
        tensors = load_file(str(path))
        languages = json.loads(metadata["languages"])
        samples = SampleActivations(
            languages=list(languages),
            language=tensors["language"].to(torch.int64),
            means=tensors["means"],
            sample_tokens=int(metadata["sample_tokens"]),
        )
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise LangNeuronsError(
            f"{str(path)!r} holds unreadable samples ({exc}). Delete it and compute again."
        ) from exc
    if (
        samples.means.dim() != 3
        or samples.language.shape != (samples.means.shape[0],)
        or bool((samples.language < 0).any())
        or bool((samples.language >= len(languages)).any())
        or not bool(torch.isfinite(samples.means).all())
    ):
        raise LangNeuronsError(
            f"{str(path)!r} holds samples of inconsistent shapes or values that are not "
            "finite; delete it."
        )
    return samples
