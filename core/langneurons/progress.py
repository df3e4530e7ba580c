"""Progress reporting shared by the library, the CLI and the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of long work.

    ``stage`` is one of ``"load"``, ``"tokenize"``, ``"cache"``, ``"resume"``, ``"count"``,
    ``"select"``, ``"write"``, ``"evaluate"``; for ``"count"`` and ``"resume"``,
    ``done``/``total`` are tokens of ``language``.
    """

    stage: str
    message: str = ""
    language: str | None = None
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[ProgressEvent], None]


def emit(
    callback: ProgressCallback | None, stage: str, message: str = "", **fields: object
) -> None:
    """Send an event to ``callback`` if there is one."""
    if callback is not None:
        callback(ProgressEvent(stage, message, **fields))  # type: ignore[arg-type]
