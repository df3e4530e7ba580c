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
disk, keyed by what produced them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CacheError
from .families import _body
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
    """Forward hooks that reduce each layer's neuron values where they are computed.

    Use as a context manager around forward passes; the hooks are removed on exit,
    also after an exception.  ``skip_first`` drops the first position of every
    sequence (the BOS token) from the counts; set :attr:`batch_shape` to the
    ``(batch, length)`` of each forward pass, since some families (OPT) flatten
    positions to ``[batch * length, neurons]`` inside the MLP.
    """

    def __init__(self, modules: Sequence[nn.Module], skip_first: bool) -> None:
        self.modules = list(modules)
        self.skip_first = skip_first
        self._handles: list[Any] = []
        self.over_zero: list[torch.Tensor | None] = [None] * len(self.modules)
        self.sums: list[torch.Tensor | None] = [None] * len(self.modules)
        self.sq_sums: list[torch.Tensor | None] = [None] * len(self.modules)
        self.tokens = 0
        self.batch_shape: tuple[int, int] | None = None

    def _hook(self, layer: int):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            if self.batch_shape is not None:
                output = output.reshape(*self.batch_shape, output.shape[-1])
            values = output[:, 1:] if self.skip_first else output
            if self.over_zero[layer] is None:
                width = values.shape[-1]
                self.over_zero[layer] = torch.zeros(width, dtype=torch.int64, device=values.device)
                self.sums[layer] = torch.zeros(width, dtype=torch.float64, device=values.device)
                self.sq_sums[layer] = torch.zeros(width, dtype=torch.float64, device=values.device)
            flat = values.reshape(-1, values.shape[-1])
            self.over_zero[layer] += (flat > 0).sum(dim=0)
            as_float = flat.float()
            self.sums[layer] += as_float.sum(dim=0)
            self.sq_sums[layer] += (as_float * as_float).sum(dim=0)

        return hook

    def __enter__(self) -> NeuronCounter:
        try:
            for layer, module in enumerate(self.modules):
                self._handles.append(module.register_forward_hook(self._hook(layer)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def result(self) -> LanguageStats:
        if any(t is None for t in self.over_zero):
            raise RuntimeError("Some layers never ran: no statistics to report.")
        return LanguageStats(
            over_zero=torch.stack([t.cpu() for t in self.over_zero]),  # type: ignore[union-attr]
            tokens=self.tokens,
            activation_sum=torch.stack([t.cpu() for t in self.sums]),  # type: ignore[union-attr]
            activation_sq_sum=torch.stack([t.cpu() for t in self.sq_sums]),  # type: ignore[union-attr]
        )


def collect_language_stats(
    lm: LoadedModel,
    windows: Sequence[torch.Tensor],
    *,
    batch_size: int = 8,
    language: str = "",
    progress: ProgressCallback | None = None,
) -> LanguageStats:
    """Count neuron activations of ``lm`` over token ``windows`` of one language.

    Windows of equal length are batched together (no padding, so no mask is needed
    and no pad token is counted).  The first position of each window is skipped when
    it is the tokenizer's BOS token.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    skip_first = bos is not None and all(int(w[0]) == bos for w in windows)
    total = sum(len(w) - int(skip_first) for w in windows)
    by_length: dict[int, list[torch.Tensor]] = {}
    for window in windows:
        by_length.setdefault(len(window), []).append(window)
    body = _body(lm.model)
    device = lm.input_device
    counter = NeuronCounter(lm.modules, skip_first=skip_first)
    done = 0
    emit(progress, "count", f"Counting {language}", language=language, done=0, total=total)
    with counter, torch.inference_mode():
        for length in sorted(by_length, reverse=True):
            group = by_length[length]
            for start in range(0, len(group), batch_size):
                batch = torch.stack(group[start : start + batch_size]).to(device)
                counter.batch_shape = (batch.shape[0], length)
                body(input_ids=batch, use_cache=False)
                counted = batch.shape[0] * (length - int(skip_first))
                counter.tokens += counted
                done += counted
                emit(progress, "count", "", language=language, done=done, total=total)
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
        try:
            tensors = load_file(str(path))
            over_zero = tensors["over_zero"]
            tokens = int(tensors["tokens"].item())
            sums, sq_sums = tensors["activation_sum"], tensors["activation_sq_sum"]
            stored_key = _read_metadata(path).get("key")
            valid = (
                stored_key == key
                and tuple(over_zero.shape) == shape
                and tuple(sums.shape) == shape
                and tuple(sq_sums.shape) == shape
                and tokens > 0
                and int(over_zero.min()) >= 0
                and int(over_zero.max()) <= tokens
                and bool(torch.isfinite(sums).all())
            )
        except (SafetensorError, KeyError, OSError, ValueError, RuntimeError) as exc:
            valid, reason = False, str(exc)
        else:
            reason = "contents do not match their key"
        if not valid:
            emit(progress, "cache", f"Cache entry {path.name} is corrupt ({reason}); recomputing.")
            path.unlink(missing_ok=True)
            return None
        return LanguageStats(over_zero, tokens, sums, sq_sums)

    def save(self, key: str, stats: LanguageStats, language: str) -> Path:
        tmp: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".safetensors")
            os.close(fd)
            save_file(
                {
                    "over_zero": stats.over_zero.contiguous(),
                    "tokens": torch.tensor([stats.tokens], dtype=torch.int64),
                    "activation_sum": stats.activation_sum.contiguous(),
                    "activation_sq_sum": stats.activation_sq_sum.contiguous(),
                },
                tmp,
                metadata={"key": key, "language": language, "format": str(STATS_FORMAT)},
            )
            os.replace(tmp, self.path(key))
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise CacheError(
                f"Cannot write the statistics cache in {self.root}: {exc.strerror}. Free disk "
                "space or point LANGNEURONS_CACHE to a writable folder."
            ) from exc
        return self.path(key)


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}
