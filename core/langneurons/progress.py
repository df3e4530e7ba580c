"""Progress reporting shared by the library, the CLI and the dashboard."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of long work.

    ``stage`` is one of ``"load"``, ``"tokenize"``, ``"cache"``, ``"resume"``, ``"count"``,
    ``"samples"``, ``"select"``, ``"write"``, ``"evaluate"``, ``"steer"``; for ``"count"``,
    ``"samples"`` and ``"resume"``, ``done``/``total`` are tokens of ``language``.
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


def format_duration(seconds: float) -> str:
    """``95`` -> ``"1 min 35 s"``; hours for long runs."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


class ComputeProgress:
    """How far a :func:`~langneurons.pipeline.compute` over several languages is, and
    about how long it has left, from its progress events.

    Tokens counted per second are measured on the languages counted so far (cached ones
    cost nothing and are left out of the rate); languages not started yet are assumed
    to be as long as the mean of those seen.  Feed every event to :meth:`update`.

    >>> clock = iter([0.0, 10.0]).__next__
    >>> tracker = ComputeProgress(["en", "fr"], clock=clock)
    >>> tracker.update(ProgressEvent("count", language="en", done=0, total=1000))
    True
    >>> tracker.update(ProgressEvent("count", language="en", done=500, total=1000))
    True
    >>> round(tracker.seconds_left or 0)
    30
    """

    def __init__(self, languages: Sequence[str], clock: Callable[[], float] = time.perf_counter):
        self.languages = list(languages)
        self.clock = clock
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.cached: set[str] = set()
        self.current: str | None = None
        self._start: dict[str, tuple[float, int]] = {}  # language -> (time, done) first seen
        self._counted_time = 0.0
        self._counted_tokens = 0
        self._last: tuple[float, int] | None = None

    def update(self, event: ProgressEvent) -> bool:
        """Take one event; ``True`` when it moved the counts (a count or cache event)."""
        if event.stage not in ("count", "cache", "resume") or not event.language:
            return False
        code = event.language
        now = self.clock()
        self.totals[code] = max(event.total, 1)
        if event.stage == "cache":
            self.cached.add(code)
            self.done[code] = self.totals[code]
            return True
        if code not in self._start or event.stage == "resume":
            self._start[code] = (now, event.done)
        elif self._last is not None and self.current == code:
            last_time, last_done = self._last
            self._counted_time += now - last_time
            self._counted_tokens += max(event.done - last_done, 0)
        self.current = code
        self._last = (now, event.done)
        self.done[code] = event.done
        return True

    @property
    def finished_languages(self) -> int:
        return sum(1 for c in self.totals if self.done.get(c, 0) >= self.totals[c])

    @property
    def fraction(self) -> float:
        """Share of the work done, by tokens, with unseen languages estimated."""
        known = sum(self.totals.values())
        if not known:
            return 0.0
        unseen = len(self.languages) - len(self.totals)
        estimate = known + unseen * known / len(self.totals)
        return min(sum(self.done.values()) / estimate, 1.0)

    @property
    def rate(self) -> float | None:
        """Tokens counted per second so far (``None`` before two events of one language)."""
        if self._counted_time <= 0 or self._counted_tokens <= 0:
            return None
        return self._counted_tokens / self._counted_time

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        if rate is None:
            return None
        left = float(sum(self.totals[c] - self.done.get(c, 0) for c in self.totals))
        unseen = len(self.languages) - len(self.totals)
        counted = [self.totals[c] for c in self.totals if c not in self.cached]
        if unseen and counted:
            left += unseen * sum(counted) / len(counted)
        return left / rate

    def describe(self) -> str:
        """One line for a progress bar: the language, its tokens, languages done, time left."""
        if self.current is None:
            return "Preparing..."
        code = self.current
        parts = [
            f"{code}: {self.done.get(code, 0):,}/{self.totals[code]:,} tokens",
            f"{self.finished_languages} of {len(self.languages)} languages done",
        ]
        left = self.seconds_left
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return " · ".join(parts)
