"""What one dashboard server shares between its sessions: the classroom settings, the
loaded models (a bounded pool), the queue of long jobs, and each session's private
upload folder.

Nothing here draws; the pool and the queue are plain thread-safe objects, so they are
tested without a browser.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langneurons.classroom import ENVIRONMENT, ClassroomConfig, load_classroom
from langneurons.errors import CorpusError, LangNeuronsError

UPLOAD_NAME = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*\.txt$")
OPEN_MODEL_LIMIT = 2  # models held at once on a server of one user's own


class BusyError(LangNeuronsError):
    """The server's queue did not reach this job in time."""


class ModelPool:
    """Loaded models by (spec, dtype, device), at most ``capacity`` of them; the least
    recently used one is let go when another is needed (its memory is freed once no
    session still holds it)."""

    def __init__(self, capacity: int, loader: Callable[[str, str, str, Any], Any]) -> None:
        self.capacity = capacity
        self.loader = loader
        self.models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self.loading: dict[tuple[str, str, str], threading.Lock] = {}
        self.lock = threading.Lock()

    def get(self, spec: str, dtype: str, device: str, progress: Any = None) -> Any:
        """The model for these settings, loaded now if no one has; ``progress`` hears the
        load's stages when this call is the one loading (others wait without them)."""
        key = (spec, dtype, device)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            loading = self.loading.setdefault(key, threading.Lock())
        with loading:  # one session loads; others asking for the same model wait for it
            with self.lock:
                if key in self.models:
                    return self.models[key]
            model = self.loader(spec, dtype, device, progress)
            with self.lock:
                self.models[key] = model
                while len(self.models) > self.capacity:
                    self.models.popitem(last=False)
                self.loading.pop(key, None)
            return model


class JobQueue:
    """Long jobs (counting, the ablation matrix) take turns on the server, first come
    first served; a job that has waited ``timeout`` seconds gives up with
    :class:`BusyError` instead of waiting on."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.waiting: list[object] = []
        self.running: object | None = None

    def position(self, ticket: object) -> int:
        """How many jobs are ahead of ``ticket`` (the running one included)."""
        with self.condition:
            ahead = self.waiting.index(ticket) if ticket in self.waiting else 0
            return ahead + (1 if self.running is not None else 0)

    @contextmanager
    def turn(
        self, timeout: float | None = None, on_wait: Callable[[int], None] | None = None
    ) -> Iterator[None]:
        """Wait for this job's turn (calling ``on_wait(jobs ahead)`` now and then), run the
        block, then let the next one go."""
        ticket = object()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.condition:
            self.waiting.append(ticket)
            try:
                while self.running is not None or self.waiting[0] is not ticket:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise BusyError(
                            f"The server is busy: other jobs kept it for {timeout:.0f} s. Try "
                            "again in a minute; cached results appear at once."
                        )
                    if on_wait is not None:
                        ahead = self.waiting.index(ticket) + (1 if self.running is not None else 0)
                        self.condition.release()
                        try:
                            on_wait(ahead)  # a session that left raises here (Streamlit's stop)
                        finally:
                            self.condition.acquire()
                    self.condition.wait(timeout=min(0.5, left) if left is not None else 0.5)
            except BaseException:
                # Whoever stops waiting (timeout, closed tab, rerun) gives up its place now,
                # or the jobs behind it would wait for a turn nobody takes.
                self.waiting.remove(ticket)
                self.condition.notify_all()
                raise
            self.waiting.remove(ticket)
            self.running = ticket
        try:
            yield
        finally:
            with self.condition:
                self.running = None
                self.condition.notify_all()


class LiveStreams:
    """How many sessions are streaming generation right now: each redraws its live
    pictures less often when many do, so the server spends its time generating rather
    than drawing (a class pressing Generate together)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    @contextmanager
    def streaming(self) -> Iterator[None]:
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def interval(self, base: float, per: int = 2) -> float:
        """``base`` seconds between pictures, times one for each ``per`` sessions
        streaming at once (``base`` while at most ``per`` do)."""
        return base * max(1.0, self.active / per)


class UploadFolder:
    """One session's private folder for uploaded ``<code>.txt`` files; removed when the
    session ends (its state, which holds this object, is let go) or the server stops."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="langneurons-upload-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def save(self, files: list[Any], max_bytes: int) -> str:
        """Write uploaded files under sanitised names; the folder's path (a corpus)."""
        names = []
        for upload in files:
            name = Path(str(upload.name)).name  # never a path: no folders, no '..'
            if not UPLOAD_NAME.match(name):
                raise CorpusError(
                    f"{name[:60]!r}: name each file after its language code, e.g. fr.txt or "
                    "zh-Hant.txt."
                )
            data = upload.getvalue()
            if len(data) > max_bytes:
                raise CorpusError(
                    f"{name} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB "
                    "per language."
                )
            names.append((name, data))
        for stale in self.path.glob("*.txt"):
            stale.unlink()
        for name, data in names:
            (self.path / name).write_bytes(data)
        return str(self.path)

    def remove(self) -> None:
        self._finalizer()


def read_classroom() -> ClassroomConfig | None:
    """The classroom settings the server was started with (``None``: one user, no limits),
    read once per file (the file is named at start, in the environment)."""
    return _classroom_at(os.environ.get(ENVIRONMENT, ""))


@functools.lru_cache(maxsize=4)
def _classroom_at(path: str) -> ClassroomConfig | None:
    return load_classroom(path) if path else None
