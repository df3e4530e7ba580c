"""Writing files so that nobody ever reads half of one.

Every file LangNeurons writes for later (cache entries, run folders' JSON, the ablation
and steering caches) goes through :func:`write_atomically`: the content is written to a
temporary file beside the target and renamed over it only once complete, so an
interrupted run, a full disk or a crash leaves either the old file or the new one and no
stray temporary file.  Files get the permissions the process's umask gives new files
(``mkstemp`` alone would make them private), so a cache shared by a classroom server and
its users stays readable by all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's file-creation mask.

    Read from ``/proc/self/status`` where the kernel reports it: ``os.umask`` can only read
    it by setting it, and for that moment every file another thread of a shared server
    creates would get no mask at all.  Elsewhere the set-and-restore is the fallback.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: Path, write: Callable[[str], None], *, suffix: str = "") -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    The folder is created when missing.  On any exception (from ``write`` or from the file
    system) the temporary file is removed and the exception propagates; callers turn
    ``OSError`` into a message saying what to do.

    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "sub" / "note.txt"
    >>> _ = write_atomically(target, lambda tmp: Path(tmp).write_text("done"))
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('done', ['note.txt'])
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's process id in the name: a later writer removes the temporaries of a
    # killed one (langneurons.outputs.remove_stale_temporaries), never a live one's.
    prefix = f".tmp-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix or path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_file(path: Path, document: Any, *, indent: int | None = 2) -> Path:
    """Write ``document`` as UTF-8 JSON (ending in a newline), atomically and synced."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=indent, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())

    return write_atomically(path, write)
