"""Per-language activation statistics of every MLP neuron, in one forward pass.

For each layer ``l``, neuron ``i`` and language ``k`` LangNeurons counts, over every
token of the language's identification text:

- ``over_zero[l, i, k]``: tokens whose neuron value is > 0;
- ``tokens[k]``: tokens counted;
- ``activation_sum`` / ``activation_sq_sum``: sum of values and of squared values
  (mean activation and its spread, for steering and alternative detectors).

The pass runs the transformer body only (never the vocabulary head), batched,
without autograd, and reduces each activation tensor on its own device inside a
forward hook, so no activation is copied out.  Results are cached per language on
disk, keyed by what produced them; while a language is being counted its partial counts
are saved every ``checkpoint_tokens`` tokens, so a long language resumes mid-way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import hooks
from .atomic import write_atomically
from .config import CountingConfig
from .corpus import Corpus, tokenize_windows
from .errors import CacheError
from .models import LoadedModel
from .paths import cache_dir
from .progress import ProgressCallback, emit

STATS_FORMAT = 1


@dataclass
class LanguageStats:
    """Counts of one language: tensors ``[layers, neurons]`` and a token count."""

    over_zero: torch.Tensor  # int64 [L, N]
    tokens: int
    activation_sum: torch.Tensor  # float64 [L, N]
    activation_sq_sum: torch.Tensor  # float64 [L, N]


@dataclass
class Statistics:
    """Counts of several languages stacked on the last axis (the reference layout)."""

    languages: list[str]
    over_zero: torch.Tensor  # int64 [L, N, K]
    tokens: torch.Tensor  # int64 [K]
    activation_sum: torch.Tensor  # float64 [L, N, K]
    activation_sq_sum: torch.Tensor  # float64 [L, N, K]

    @property
    def num_layers(self) -> int:
        return int(self.over_zero.shape[0])

    @property
    def num_neurons(self) -> int:
        return int(self.over_zero.shape[1])

    def probabilities(self) -> torch.Tensor:
        """Activation probability ``over_zero / tokens``, float32 ``[L, N, K]`` as the reference."""
        return self.over_zero.to(torch.float32) / self.tokens.to(torch.float32)

    def mean_activation(self) -> torch.Tensor:
        """Mean neuron value per language, float32 ``[L, N, K]``."""
        return (self.activation_sum / self.tokens.to(torch.float64)).to(torch.float32)

    def std_activation(self) -> torch.Tensor:
        """Standard deviation of the neuron value per language, float32 ``[L, N, K]``."""
        n = self.tokens.to(torch.float64)
        mean = self.activation_sum / n
        var = (self.activation_sq_sum / n - mean * mean).clamp_min(0.0)
        return var.sqrt().to(torch.float32)

    def index(self, language: str) -> int:
        try:
            return self.languages.index(language)
        except ValueError:
            raise KeyError(
                f"Language {language!r} is not in these statistics ({', '.join(self.languages)})."
            ) from None

    @classmethod
    def stack(cls, per_language: dict[str, LanguageStats]) -> Statistics:
        langs = list(per_language)
        values = [per_language[c] for c in langs]
        return cls(
            languages=langs,
            over_zero=torch.stack([v.over_zero for v in values], dim=-1),
            tokens=torch.tensor([v.tokens for v in values], dtype=torch.int64),
            activation_sum=torch.stack([v.activation_sum for v in values], dim=-1),
            activation_sq_sum=torch.stack([v.activation_sq_sum for v in values], dim=-1),
        )


class NeuronCounter:
    """A :mod:`langneurons.hooks` client that reduces each layer's neuron values where
    they are computed, in this thread's forward passes only.

    Use as a context manager around forward passes; nothing stays attached after the
    block, also after an exception, and forward passes of other threads sharing the model
    are not counted.  ``skip_first`` drops the first position of every sequence (the BOS
    token) from the counts; set :attr:`batch_shape` to the ``(batch, length)`` of each
    forward pass, since some families (OPT) flatten positions to ``[batch * length,
    neurons]`` inside the MLP.
    """

    def __init__(
        self,
        lm: LoadedModel,
        skip_first: bool,
        initial: LanguageStats | None = None,
    ) -> None:
        self.lm = lm
        self.skip_first = skip_first
        self.initial = initial  # counts to continue from (a resumed checkpoint)
        self._binding: contextlib.ExitStack | None = None
        # Per layer, on that layer's device: [over_zero int64, sums float64, sq_sums float64].
        self.accumulators: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.tokens = initial.tokens if initial is not None else 0
        self.batch_shape: tuple[int, int] | None = None

    def _handler(self, layer: int) -> hooks.Handler:
        def handle(output: torch.Tensor) -> None:
            if self.batch_shape is not None:
                output = output.reshape(*self.batch_shape, output.shape[-1])
            values = output[:, 1:] if self.skip_first else output
            if layer not in self.accumulators:
                self.accumulators[layer] = self._start(layer, values.shape[-1], values.device)
            over_zero, sums, sq_sums = self.accumulators[layer]
            flat = values.reshape(-1, values.shape[-1])
            over_zero += (flat > 0).sum(dim=0)
            as_float = flat.float()
            sums += as_float.sum(dim=0)
            sq_sums += (as_float * as_float).sum(dim=0)

        return handle

    def _start(
        self, layer: int, width: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Accumulators of one layer on its own device: zeros, or the resumed counts."""
        if self.initial is None:
            return (
                torch.zeros(width, dtype=torch.int64, device=device),
                torch.zeros(width, dtype=torch.float64, device=device),
                torch.zeros(width, dtype=torch.float64, device=device),
            )
        return (
            self.initial.over_zero[layer].to(device, copy=True),
            self.initial.activation_sum[layer].to(device, copy=True),
            self.initial.activation_sq_sum[layer].to(device, copy=True),
        )

    def __enter__(self) -> NeuronCounter:
        stack = contextlib.ExitStack()
        handlers = {layer: self._handler(layer) for layer in range(self.lm.num_layers)}
        stack.enter_context(hooks.bound(self.lm, handlers, hooks.OBSERVE))
        self._binding = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self._binding is not None:
            self._binding.close()
            self._binding = None

    def result(self) -> LanguageStats:
        """The counts so far, on the CPU."""
        if len(self.accumulators) != self.lm.num_layers:
            raise RuntimeError("Some layers never ran: no statistics to report.")
        parts = [self.accumulators[layer] for layer in range(self.lm.num_layers)]
        return LanguageStats(
            over_zero=torch.stack([p[0].cpu() for p in parts]),
            tokens=self.tokens,
            activation_sum=torch.stack([p[1].cpu() for p in parts]),
            activation_sq_sum=torch.stack([p[2].cpu() for p in parts]),
        )


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often one language's partial counts are saved while it is counted.

    ``part`` names this process's share of the language (``"all"``, or ``"r0of2"`` for
    rank 0 of a two-process run), so the ranks of a data-parallel run each resume their
    own share.  ``resume=False`` discards an existing checkpoint instead of continuing it.
    """

    cache: StatsCache
    key: str
    every_tokens: int
    part: str = "all"
    resume: bool = True


def counting_windows(
    lm: LoadedModel, corpus: Corpus, code: str, counting: CountingConfig
) -> list[torch.Tensor]:
    """``code``'s identification text in ``corpus`` cut into the windows the statistics
    count (and the per-sample pass reads), as ``counting`` says."""
    return tokenize_windows(
        lm.tokenizer,
        corpus.identify_text(code, counting.eval_fraction),
        max_tokens=counting.max_tokens,
        seq_len=counting.seq_len,
        language=code,
    )


def counting_order(windows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The order windows are counted in: longest first, stable, so equal lengths batch.

    A checkpoint records how many windows of this order are done.
    """
    return sorted(windows, key=len, reverse=True)


def collect_language_stats(
    lm: LoadedModel,
    windows: Sequence[torch.Tensor],
    *,
    batch_size: int = 8,
    language: str = "",
    progress: ProgressCallback | None = None,
    checkpoint: Checkpoint | None = None,
) -> LanguageStats:
    """Count neuron activations of ``lm`` over token ``windows`` of one language.

    Windows of equal length are batched together (no padding, so no mask is needed
    and no pad token is counted).  The first position of each window is skipped when
    it is the tokenizer's BOS token.  With a ``checkpoint``, the counts so far are
    saved every ``checkpoint.every_tokens`` tokens and a saved checkpoint of the same
    windows is continued: after an interruption only the rest is counted.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    skip_first = bos is not None and all(int(w[0]) == bos for w in windows)
    ordered = counting_order(windows)
    counted_per_window = [len(w) - int(skip_first) for w in ordered]
    total = sum(counted_per_window)
    shape = (lm.num_layers, lm.num_neurons)
    initial: LanguageStats | None = None
    first = 0
    if checkpoint is not None:
        if checkpoint.resume:
            found = checkpoint.cache.load_partial(
                checkpoint.key, checkpoint.part, shape, counted_per_window, progress
            )
            if found is not None:
                initial, first = found
                emit(
                    progress,
                    "resume",
                    f"{language}: resuming after {initial.tokens} of {total} tokens",
                    language=language,
                    done=initial.tokens,
                    total=total,
                )
        else:
            checkpoint.cache.drop_partial(checkpoint.key, checkpoint.part)
    if initial is not None and first == len(ordered):
        return initial
    body = lm.body
    device = lm.input_device
    counter = NeuronCounter(lm, skip_first=skip_first, initial=initial)
    saved_at = counter.tokens
    emit(
        progress,
        "count",
        f"Counting {language}",
        language=language,
        done=counter.tokens,
        total=total,
    )
    with counter, torch.inference_mode():
        index = first
        while index < len(ordered):
            length = len(ordered[index])
            stop = min(index + batch_size, len(ordered))
            while len(ordered[stop - 1]) != length:  # a batch holds one length only
                stop -= 1
            batch = torch.stack(ordered[index:stop]).to(device)
            counter.batch_shape = (batch.shape[0], length)
            body(input_ids=batch, use_cache=False)
            counter.tokens += sum(counted_per_window[index:stop])
            index = stop
            if (
                checkpoint is not None
                and index < len(ordered)
                and counter.tokens - saved_at >= checkpoint.every_tokens
            ):
                checkpoint.cache.save_partial(
                    checkpoint.key, checkpoint.part, counter.result(), index, language
                )
                saved_at = counter.tokens
            emit(progress, "count", "", language=language, done=counter.tokens, total=total)
    return counter.result()


def tokens_digest(windows: Sequence[torch.Tensor]) -> str:
    """Hash of the exact token windows (captures text, tokenizer, budget and chunking)."""
    digest = hashlib.sha256()
    for window in windows:
        digest.update(len(window).to_bytes(4, "little"))
        digest.update(window.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def cache_key(lm: LoadedModel, windows: Sequence[torch.Tensor]) -> str:
    """Key of one language's statistics: model weights, dtype, exact tokens, format."""
    payload = {
        "format": STATS_FORMAT,
        "model": lm.fingerprint,
        "dtype": lm.dtype,
        "tokens": tokens_digest(windows),
        "bos_skipped": getattr(lm.tokenizer, "bos_token_id", None) is not None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class StatsCache:
    """Per-language statistics on disk as safetensors files named by their cache key.

    Writes are atomic (temporary file then rename), so an interrupted run leaves
    only complete entries; a corrupt or mismatching entry is reported and ignored.
    Checkpoints of languages being counted live in ``partial/`` until the language is
    whole.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_dir() / "stats"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(
        self, key: str, shape: tuple[int, int], progress: ProgressCallback | None = None
    ) -> LanguageStats | None:
        """The entry for ``key``, or ``None`` when missing or unusable (then it is removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        stats, metadata, reason = self._read(path, shape)
        if stats is not None and metadata.get("key") != key:
            stats, reason = None, "contents do not match their key"
        if stats is None:
            emit(progress, "cache", f"Cache entry {path.name} is corrupt ({reason}); recomputing.")
            with contextlib.suppress(OSError):  # a read-only cache keeps it; it is ignored
                path.unlink(missing_ok=True)
            return None
        return stats

    def check_writable(self, entries: int, entry_bytes: int) -> None:
        """Refuse, before any counting, a cache that cannot take ``entries`` new entries of
        about ``entry_bytes`` each (see :func:`~langneurons.outputs.check_cache_folder`)."""
        from .outputs import check_cache_folder

        try:
            check_cache_folder(self.root, 2 * entries * entry_bytes, ("partial",))
        except OSError as exc:
            raise CacheError(
                f"{exc.strerror} Free disk space or point LANGNEURONS_CACHE to a writable "
                "folder with room."
            ) from exc

    def save(self, key: str, stats: LanguageStats, language: str) -> Path:
        path = self.path(key)
        self._write(path, stats, {"key": key, "language": language})
        return path

    # Partial counts of a language being counted (checkpoints), one file per share.

    def partial_path(self, key: str, part: str) -> Path:
        return self.root / "partial" / f"{key}.{part}.safetensors"

    def save_partial(
        self, key: str, part: str, stats: LanguageStats, windows_done: int, language: str
    ) -> Path:
        """Store the counts of the first ``windows_done`` windows (in counting order)."""
        path = self.partial_path(key, part)
        metadata = {"key": key, "part": part, "language": language, "windows": str(windows_done)}
        self._write(path, stats, metadata)
        return path

    def load_partial(
        self,
        key: str,
        part: str,
        shape: tuple[int, int],
        counted_per_window: Sequence[int],
        progress: ProgressCallback | None = None,
    ) -> tuple[LanguageStats, int] | None:
        """A checkpoint of ``key``/``part`` and how many windows it covers, if usable.

        It is usable when it is whole and its token count is exactly that of its first
        ``windows`` windows (``counted_per_window`` in counting order); otherwise it is
        reported, removed, and ``None`` is returned.
        """
        path = self.partial_path(key, part)
        if not path.is_file():
            return None
        stats, metadata, reason = self._read(path, shape)
        if stats is not None:
            try:
                windows = int(metadata.get("windows", "-1"))
            except ValueError:
                windows = -1
            if (
                metadata.get("key") != key
                or metadata.get("part") != part
                or not 0 < windows <= len(counted_per_window)
                or stats.tokens != sum(counted_per_window[:windows])
            ):
                stats, reason = None, "it does not match these windows"
        if stats is None:
            emit(progress, "cache", f"Checkpoint {path.name} is unusable ({reason}); ignoring it.")
            path.unlink(missing_ok=True)
            return None
        return stats, windows

    def drop_partial(self, key: str, part: str | None = None) -> None:
        """Remove the checkpoints of ``key`` (one share, or all of them)."""
        folder = self.root / "partial"
        pattern = f"{key}.{part}.safetensors" if part else f"{key}.*.safetensors"
        for path in folder.glob(pattern) if folder.is_dir() else []:
            path.unlink(missing_ok=True)

    def _read(
        self, path: Path, shape: tuple[int, int]
    ) -> tuple[LanguageStats | None, dict[str, str], str]:
        """Counts, metadata and, when they are unusable, why."""
        try:
            tensors = load_file(str(path))
            over_zero = tensors["over_zero"]
            tokens = int(tensors["tokens"].item())
            sums, sq_sums = tensors["activation_sum"], tensors["activation_sq_sum"]
            metadata = read_metadata(path)
            valid = (
                tuple(over_zero.shape) == shape
                and tuple(sums.shape) == shape
                and tuple(sq_sums.shape) == shape
                and tokens > 0
                and int(over_zero.min()) >= 0
                and int(over_zero.max()) <= tokens
                and bool(torch.isfinite(sums).all())
            )
        except OSError as exc:
            # Not the entry's fault (permissions, a lost mount): keep it, say what to do.
            raise CacheError(
                f"Cannot read the statistics cache entry {path}: {exc.strerror or exc}. Fix "
                "its permissions, or point LANGNEURONS_CACHE to a folder you can read."
            ) from exc
        except (SafetensorError, KeyError, ValueError, RuntimeError) as exc:
            return None, {}, str(exc)
        if not valid:
            return None, metadata, "contents do not match their shape or token count"
        return LanguageStats(over_zero, tokens, sums, sq_sums), metadata, ""

    def _write(self, path: Path, stats: LanguageStats, metadata: dict[str, str]) -> None:
        """Write counts atomically (temporary file, then rename)."""
        tensors = {
            "over_zero": stats.over_zero.contiguous(),
            "tokens": torch.tensor([stats.tokens], dtype=torch.int64),
            "activation_sum": stats.activation_sum.contiguous(),
            "activation_sq_sum": stats.activation_sq_sum.contiguous(),
        }
        metadata = {**metadata, "format": str(STATS_FORMAT)}
        try:
            write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        except (OSError, SafetensorError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise CacheError(
                f"Cannot write the statistics cache in {self.root}: {reason}. Free disk "
                "space or point LANGNEURONS_CACHE to a writable folder."
            ) from exc


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}
