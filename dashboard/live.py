"""Generation off the drawing path: a producer thread consumes a stream of states
(``stream_side_by_side``) as fast as the model yields them and keeps only the newest,
copied, in a small thread-safe holder; the page samples it at its own pace.  A slow
browser or a slow picture never delays the next token, and the page draws the newest
state rather than every one.

Nothing here draws or imports Streamlit: the producer thread must never call ``st.*``
(it has no script context), so it is tested without a browser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from langneurons.generation import SideBySide
from langneurons.trace import Trace


def snapshot_trace(trace: Trace | None) -> Trace | None:
    """A copy of ``trace`` that no longer grows: the generator extends its trace in place
    (possibly from another thread), so the page draws a copy cut to the columns that are
    complete in every field."""
    if trace is None:
        return None
    tokens, ids = list(trace.tokens), list(trace.token_ids)
    fired, after = trace.fired, trace.fired_after  # replaced, never written in place
    n = min(len(tokens), len(ids), len(fired), len(after))
    return Trace(
        list(trace.languages),
        trace.selected,
        tokens[:n],
        ids[:n],
        fired[:n].copy(),
        after[:n].copy(),
    )


def snapshot(state: SideBySide) -> SideBySide:
    """``state`` with its traces copied (texts are immutable already)."""
    return replace(
        state,
        baseline_trace=snapshot_trace(state.baseline_trace),
        modified_trace=snapshot_trace(state.modified_trace),
    )


@dataclass(frozen=True)
class Sample:
    """What the page reads from the holder: the newest state, its number (states counted
    from 1), and whether the stream has ended (``error`` when it failed)."""

    version: int
    state: Any
    finished: bool
    error: BaseException | None = None


class Latest:
    """The newest state of a stream and whether it has ended, shared by one producer
    thread and one reader."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sample = Sample(0, None, False)

    def put(self, state: Any) -> None:
        with self._condition:
            self._sample = Sample(self._sample.version + 1, state, False)
            self._condition.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._condition:
            current = self._sample
            self._sample = Sample(current.version, current.state, True, error)
            self._condition.notify_all()

    def now(self) -> Sample:
        with self._condition:
            return self._sample

    def wait(self, newer_than: int, not_before: float, timeout: float = 30.0) -> Sample:
        """The newest sample once it is newer than ``newer_than`` and the clock
        (``time.monotonic``) has passed ``not_before``, or at once when the stream has
        ended; after ``timeout`` seconds without either, the current sample."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                sample, now = self._sample, time.monotonic()
                if sample.finished or (sample.version > newer_than and now >= not_before):
                    return sample
                if now >= deadline:
                    return sample
                wake = not_before if sample.version > newer_than else deadline
                self._condition.wait(timeout=max(0.001, min(wake, deadline) - now))


class Producer:
    """Consumes ``steps`` in a thread of its own, copying each state into :attr:`latest`.

    :meth:`stop` asks it to end: it closes the generator (which ends the generation)
    after the step in progress, instead of generating on for a page nobody reads."""

    def __init__(self, steps: Iterator[Any], name: str = "langneurons-playground") -> None:
        self.steps = steps
        self.latest = Latest()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Producer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            for state in self.steps:
                if self._stop.is_set():
                    break
                self.latest.put(snapshot(state) if isinstance(state, SideBySide) else state)
        except BaseException as exc:  # handed to the page, which shows it
            error = exc
        finally:
            close = getattr(self.steps, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # pragma: no cover - a generator's own cleanup
                    error = error or exc
            self.latest.finish(error)
