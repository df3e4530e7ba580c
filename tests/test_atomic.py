"""Atomic writes: a failed write leaves the old file and no temporary one; new files are
readable as the umask says (a classroom's shared cache)."""

from __future__ import annotations

import os
import stat

import pytest

from langneurons.atomic import write_atomically, write_json_file


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "entry.json"
    write_json_file(target, {"value": 1})

    def broken(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write('{"value": 2, "half')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, broken)
    assert target.read_text() == '{\n  "value": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_files_are_as_readable_as_the_umask_says(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_json_file(tmp_path / "a" / "b.json", ["ü"])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text(encoding="utf-8") == '[\n  "ü"\n]\n'
