"""The decode loop's batch: rows that share one KV cache, and how rows join and leave it.

The batch is left-padded: each row's tokens sit at the right end of the cache, padding is
masked out, and each row's positions count its own tokens only, so a row computes what
it computes alone.  The cache is transformers' own ``DynamicCache``: rows join by padding
its layers on the left to one length and concatenating them (a sliding-window layer keeps
at most its window, and its token count is the batch's), and leave through its
``batch_select_indices``; columns that have become padding in every row are dropped.
Caches of other layouts are not joined (:meth:`Cohort.mergeable`): their rows run in
forward passes of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def _layers_of(cache: Any) -> list[Any] | None:
    """The cache's layers when rows can be added to and removed from it (transformers'
    dynamic full-attention and sliding-window layers), else ``None``."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(x) not in (DynamicLayer, DynamicSlidingWindowLayer) for x in layers):
        return None
    if any(not x.is_initialized for x in layers):
        return None
    return list(layers)


def _pad_left(tensor: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - tensor.shape[-2]
    if missing <= 0:
        return tensor
    shape = (*tensor.shape[:-2], missing, tensor.shape[-1])
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)


def _pad_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - mask.shape[1]
    if missing <= 0:
        return mask
    return torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


@dataclass
class Cohort:
    """Rows that share one cache: ``mask[b, c]`` is 1 where row ``b`` has a token in
    column ``c`` (its tokens sit at the right end)."""

    rows: list[Any]  # the rows (the engine's lanes), in batch order
    cache: Any
    mask: torch.Tensor  # [B, C] long

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])

    def mergeable(self) -> bool:
        return _layers_of(self.cache) is not None

    def absorb(self, other: Cohort) -> None:
        """Add ``other``'s rows below this cohort's (both caches left-padded to one length)."""
        ours, theirs = _layers_of(self.cache), _layers_of(other.cache)
        assert ours is not None and theirs is not None
        total = max(self.columns, other.columns)
        for mine, their in zip(ours, theirs, strict=True):
            sliding = getattr(mine, "is_sliding", False)
            stored = min(total, mine.sliding_window - 1) if sliding else total
            mine.keys = torch.cat([_pad_left(mine.keys, stored), _pad_left(their.keys, stored)])
            mine.values = torch.cat(
                [_pad_left(mine.values, stored), _pad_left(their.values, stored)]
            )
            if sliding:
                mine.cumulative_length = total
        self.mask = torch.cat([_pad_mask(self.mask, total), _pad_mask(other.mask, total)])
        self.rows = self.rows + other.rows

    def keep(self, keep: list[int]) -> None:
        """Keep only these rows; drop columns that are now padding in every row."""
        if not keep:
            self.rows, self.cache = [], None
            return
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.rows = [self.rows[i] for i in keep]
        layers = _layers_of(self.cache)
        if layers is None or not self.rows:
            return
        empty = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading padding
        if empty == 0:
            return
        total = self.columns - empty
        for layer in layers:
            if getattr(layer, "is_sliding", False):
                layer.cumulative_length = total
                stored = min(total, layer.keys.shape[-2])
            else:
                stored = total
            layer.keys = layer.keys[..., -stored:, :]
            layer.values = layer.values[..., -stored:, :]
        self.mask = self.mask[:, empty:]
