"""Output folders: written whole or not at all, and never at the cost of a user's files.

A run folder is written beside its target (``.NAME.writing-XXXXXXXX``) and swapped in
only once every file is on disk, so a kill or a full disk leaves the earlier run or the
new one, never a mix.  Around that swap three promises hold:

- **Only our own folders are replaced.**  An ``--out`` that exists must be empty or a
  LangNeurons run (a ``meta.json`` whose ``format`` is ``langneurons-run/...``); any
  other folder (``~/Documents``, the current folder) is refused, by
  :func:`check_output_folder` before the work starts and again under the lock just
  before the swap.  Files and folders that a user added to an earlier run are carried
  into the new one.  A symbolic link is followed: the run is written where it points
  and the link stays.
- **Writers clean up after writers, readers never touch anything.**  A writer holds a
  lock on the folder's parent (``flock``) from its first leftover check until its swap
  is done; leftovers of an interrupted write of the same name (a staging folder, an
  earlier run moved aside) are cleaned only by the next writer holding that lock, when
  the writer that left them is necessarily gone.  Names are matched exactly, never
  globbed.
- **Stray temporaries of killed writes are removed** (:func:`remove_stale_temporaries`)
  once the process that made them is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .atomic import current_umask
from .errors import ResultsError

RUN_FORMAT_PREFIX = "langneurons-run/"
LOCK_WAIT_SECONDS = 120.0
"""How long a writer waits for another writer of the same parent folder to finish."""

_TOKEN = r"[A-Za-z0-9_]{8}"  # what tempfile.mkdtemp puts after the prefix


def _staging_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.writing-{_TOKEN}")


def _aside_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.old-{_TOKEN}")


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder LangNeurons wrote as a run (its ``meta.json`` says
    so), complete or not."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith(RUN_FORMAT_PREFIX)


def _listing(folder: Path, limit: int = 4) -> str:
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _replaceable(target: Path, option: str, shown: str) -> None:
    """Refuse ``target`` (``shown`` as the user gave it) when it is an existing folder
    that is neither empty nor a run."""
    if not target.is_dir() or is_run_folder(target):
        return
    try:
        empty = not any(target.iterdir())
    except OSError as exc:
        raise ResultsError(
            f"{option} {shown!r} cannot be read ({exc.strerror}). Choose another folder."
        ) from exc
    if not empty:
        raise ResultsError(
            f"{option} {shown!r} is a folder that is not a LangNeurons run (it holds "
            f"{_listing(target)}); LangNeurons never replaces a folder it did not write. "
            "Choose a new or empty folder, or a run folder written by LangNeurons."
        )


def resolve_output_folder(path: str | Path, option: str = "--out") -> Path:
    """The absolute folder ``path`` names (a symbolic link followed to where it points);
    an empty path, the current folder or a broken link is refused."""
    text = str(path)
    if not text.strip():
        raise ResultsError(f"{option} is empty: name a folder for the run, e.g. runs/my-run.")
    target = Path(text).expanduser().absolute()
    if target.is_symlink():
        if not target.exists():
            raise ResultsError(
                f"{option} {text!r} is a symbolic link to {os.readlink(target)!r}, which does "
                "not exist. Create its target or choose another folder."
            )
        target = Path(os.path.realpath(target))
    if target == Path.cwd().absolute() or target == Path(target.anchor):
        raise ResultsError(
            f"{option} {text!r} is the current folder (or the file system's root); a run "
            "needs a folder of its own, e.g. runs/my-run."
        )
    return target


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work is done, an output folder that cannot or must not be
    written: an empty path or the current folder, a file, a path under a file, a place
    without write permission, a broken link, or a folder that is neither empty nor a
    LangNeurons run.  Returns the folder the run will be written to."""
    target = resolve_output_folder(path, option)
    if target.exists() and not target.is_dir():
        raise ResultsError(f"{option} {str(path)!r} is a file; pass a folder.")
    _replaceable(target, option, str(path))
    check_can_create(target, str(path), option)
    return target


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_can_create(target: Path, shown: str, option: str = "--out") -> None:
    """Refuse ``target`` (``shown`` as the user gave it) when it cannot be created: the
    nearest existing ancestor of its folder is a file, or not writable."""
    probe = _nearest_existing(target.parent)
    if not probe.is_dir():
        raise ResultsError(
            f"{option} {shown!r} cannot be created: {str(probe)!r} is a file, not a folder."
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ResultsError(
            f"{option} {shown!r} cannot be written: no permission to write in "
            f"{str(probe)!r}. Choose another path."
        )


@contextlib.contextmanager
def parent_lock(folder: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the write lock of ``folder`` (an existing folder): one writer at a time
    in it, across threads and processes.  Waits up to ``wait`` seconds
    (:data:`LOCK_WAIT_SECONDS`), then refuses with a message."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform: no lock
        yield
        return
    limit = LOCK_WAIT_SECONDS if wait is None else wait
    fd = os.open(folder, os.O_RDONLY)
    try:
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    break  # a file system without locks: go on unlocked
                if time.monotonic() > deadline:
                    raise ResultsError(
                        f"Another LangNeurons process has been writing in {str(folder)!r} "
                        f"for over {limit:.0f} s. Wait for it to finish, then try again."
                    ) from exc
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def recover_interrupted(out: Path) -> list[str]:
    """Clean what an interrupted write of ``out`` left beside it: its staging folder
    (incomplete: removed) and the earlier run moved aside (put back when ``out`` is
    missing, else removed).  Only for a writer holding :func:`parent_lock` of
    ``out.parent``: then whoever left these is gone.  Returns what was done, in words."""
    done: list[str] = []
    if not out.parent.is_dir():
        return done
    staging, aside = _staging_pattern(out.name), _aside_pattern(out.name)
    entries = sorted(out.parent.iterdir())
    for entry in entries:
        if staging.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed the incomplete {entry.name}")
    for entry in entries:
        if not (aside.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()):
            continue
        if not out.exists() and is_run_folder(entry):
            os.replace(entry, out)
            done.append(f"restored the previous run from {entry.name}")
        elif is_run_folder(entry):
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry.name}")
    return done


def interrupted_hint(out: Path) -> str:
    """For a reader finding no folder at ``out``: where an interrupted write left the
    earlier run, if it did (readers change nothing; the next write puts it back)."""
    if not out.parent.is_dir():
        return ""
    aside = _aside_pattern(out.name)
    for entry in sorted(out.parent.iterdir()):
        if aside.fullmatch(entry.name) and is_run_folder(entry):
            return (
                f" An interrupted write left the earlier run as {entry.name!r} beside it: "
                "rename it back, or write the run again (which puts it back first)."
            )
    return ""


def _carry(source: Path, staging: Path, written: set[str], skip: set[str]) -> None:
    """Copy what an earlier run holds besides the files this write makes (a user's notes,
    an ablation matrix saved in it, folders added to it) into ``staging``."""
    for extra in source.iterdir():
        if extra.name in written or extra.name in skip:
            continue
        destination = staging / extra.name
        if extra.is_symlink():
            os.symlink(os.readlink(extra), destination)
        elif extra.is_dir():
            shutil.copytree(extra, destination, symlinks=True)
        else:
            shutil.copy2(extra, destination)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk (a folder's fsync makes renames in it durable)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - platforms without folder descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that do not support it
        pass
    finally:
        os.close(fd)


def write_folder(
    out_dir: str | Path,
    writers: dict[str, Callable[[Path], object]],
    *,
    never_carried: frozenset[str] = frozenset(),
    option: str = "--out",
) -> Path:
    """Write a whole run folder beside its target, then swap it in (see the module's
    text): each of ``writers`` writes its file into the staging folder; whatever an
    earlier run in ``out_dir`` holds besides those files (and ``never_carried``) is
    carried over.  Returns the folder written."""
    out = resolve_output_folder(out_dir, option)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{option} {str(out_dir)!r} is a file; pass a folder.")
    staging: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with parent_lock(out.parent):
            recover_interrupted(out)
            _replaceable(out, option, str(out_dir))  # the folder may have changed meanwhile
            staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.writing-"))
            for name, writer in writers.items():
                writer(staging / name)
                os.chmod(staging / name, 0o666 & ~current_umask())
                _fsync(staging / name)
            if out.is_dir():
                _carry(out, staging, set(writers), set(never_carried))
            os.chmod(staging, 0o777 & ~current_umask())
            _fsync(staging)
            if out.exists():
                _replaceable(out, option, str(out_dir))  # and the moment before the swap
                aside = out.parent / f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}"
                os.replace(out, aside)
                os.replace(staging, out)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(staging, out)
            staging = None
            _fsync(out.parent)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = (
            "Free disk space or choose"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else ("Check the folder's permissions or choose")
        )
        raise ResultsError(
            f"Cannot write results into {str(out)!r}: {reason}. {hint} another {option}; "
            "an earlier run there is left as it was."
        ) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return out


_TEMPORARY = re.compile(r"\.tmp-(\d+)-.*")


def remove_stale_temporaries(folder: Path, min_age: float = 60.0) -> int:
    """Remove the temporary files of killed writes in ``folder`` (``.tmp-PID-*``, see
    :func:`langneurons.atomic.write_atomically`): those whose process is gone and that
    are at least ``min_age`` seconds old, and any older than a day.  Returns how many."""
    removed = 0
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMPORARY.fullmatch(entry.name)
            if not match and not entry.name.startswith(".tmp-"):
                continue
            try:
                age = now - entry.lstat().st_mtime
            except OSError:
                continue
            gone = match is not None and not _alive(int(match.group(1)))
            if (gone and age >= min_age) or age >= 86400:
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def check_cache_folder(root: Path, needed: int, subfolders: tuple[str, ...] = ()) -> None:
    """Check, before any work, that the cache folder ``root`` can take about ``needed``
    more bytes: not a file, writable, enough free space (with a margin).  Temporaries
    left by killed writes in it (and in ``subfolders``) are removed on the way.  Raises
    ``OSError`` whose ``strerror`` says what is wrong, in a sentence."""
    probe = _nearest_existing(root)
    if not probe.is_dir():
        raise OSError(
            errno.ENOTDIR, f"The cache {str(root)!r} cannot be created: {str(probe)!r} is a file."
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        for folder in (root, *(root / name for name in subfolders)):
            remove_stale_temporaries(folder)
        with tempfile.NamedTemporaryFile(dir=root, prefix=f".tmp-{os.getpid()}-"):
            pass  # a file can be created (and is removed again)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise OSError(
            exc.errno, f"Cannot write the cache in {str(root)!r}: {exc.strerror or exc}."
        ) from exc
    needed += 16 << 20
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"The cache {str(root)!r} has {free >> 20} MB free and this needs about "
            f"{needed >> 20} MB.",
        )
