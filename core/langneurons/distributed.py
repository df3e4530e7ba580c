"""Data-parallel statistics with PyTorch distributed (torchrun, accelerate launch).

When ``compute`` runs under a launcher (``WORLD_SIZE`` > 1 in the environment), each
rank counts every ``world_size``-th token window of a language and the counts are
summed with one all-reduce per language; rank 0 writes the cache and the outputs.
Token counts equal a single-process run exactly.  Activation counts equal it
exactly when windows are counted one at a time (``--batch-size 1``); with batching,
other batch shapes can change floating-point rounding, so a value within about
1e-7 of zero may fall on the other side: a handful of counts out of millions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from .launch import launched_world_size
from .stats import LanguageStats


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel group."""

    rank: int
    world_size: int
    device: torch.device  # where collective tensors live (CPU for gloo, the GPU for nccl)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """Every ``world_size``-th item, starting at this rank."""
        return items[self.rank :: self.world_size]

    def shard_all(self, items: list) -> list[list]:
        """Every rank's :meth:`shard` of ``items``, in rank order."""
        return [items[r :: self.world_size] for r in range(self.world_size)]

    def all_have(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (decides cache hits together)."""
        value = torch.tensor([1 if flag else 0], device=self.device)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
        return bool(value.item())

    def gather(self, part: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``part`` (any shape), in rank order, on every rank (CPU tensors)."""
        parts: list[torch.Tensor | None] = [None] * self.world_size
        torch_dist.all_gather_object(parts, part.cpu())
        return [p for p in parts if p is not None]

    def sum_stats(self, stats: LanguageStats) -> LanguageStats:
        """Sum one language's partial counts over all ranks."""
        tensors = [
            stats.over_zero.to(self.device),
            torch.tensor([stats.tokens], dtype=torch.int64, device=self.device),
            stats.activation_sum.to(self.device),
            stats.activation_sq_sum.to(self.device),
        ]
        for tensor in tensors:
            torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
        over_zero, tokens, sums, sq_sums = (t.cpu() for t in tensors)
        return LanguageStats(over_zero, int(tokens.item()), sums, sq_sums)


def context(model_device: torch.device) -> DistributedContext | None:
    """Join the launcher's process group (once) and describe this rank; ``None`` alone."""
    if launched_world_size() <= 1 or not torch_dist.is_available():
        return None
    if model_device.type == "cuda":
        # NCCL works on the current device: make it this rank's, not GPU 0 for all.
        torch.cuda.set_device(model_device)
    if not torch_dist.is_initialized():
        backend = "nccl" if model_device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend)
    device = model_device if torch_dist.get_backend() == "nccl" else torch.device("cpu")
    return DistributedContext(torch_dist.get_rank(), torch_dist.get_world_size(), device)


def zero_stats(layers: int, neurons: int) -> LanguageStats:
    """Counts of a rank that received no window."""
    return LanguageStats(
        torch.zeros(layers, neurons, dtype=torch.int64),
        0,
        torch.zeros(layers, neurons, dtype=torch.float64),
        torch.zeros(layers, neurons, dtype=torch.float64),
    )


def shutdown() -> None:
    """Leave the process group cleanly (all ranks together), if one was joined.

    Exiting with the group still up can abort a rank at interpreter exit while gloo's
    threads are alive ("terminate called without an active exception").
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        if torch_dist.get_backend() == "nccl":
            torch_dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            torch_dist.barrier()
        torch_dist.destroy_process_group()
