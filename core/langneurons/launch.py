"""Where a launcher (torchrun, accelerate launch, Slurm through torchrun) placed this
process: read from the environment only, so any module may ask without importing
``torch.distributed`` or the statistics code."""

from __future__ import annotations

import os


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun / accelerate (1 when run directly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_rank() -> int:
    """``RANK`` set by the launcher (0 when run directly)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_reporting_rank() -> bool:
    """Whether this process reports progress: alone, or rank 0 of a launched group."""
    return launched_world_size() <= 1 or launched_rank() == 0


def local_device() -> str | None:
    """The GPU of this rank (``cuda:LOCAL_RANK``) under a launcher, else ``None``."""
    if launched_world_size() <= 1:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
