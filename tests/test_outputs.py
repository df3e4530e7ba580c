"""Output folders and caches: a user's files are never deleted or replaced, a reader never
touches a run being written, leftovers are cleaned only by writers, and every check of
a location happens before the work."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from langneurons import outputs
from langneurons.errors import CacheError, ResultsError
from langneurons.outputs import (
    check_output_folder,
    parent_lock,
    recover_interrupted,
    remove_stale_temporaries,
    write_folder,
)
from langneurons.pipeline import compute
from langneurons.results import read_run
from langneurons.stats import StatsCache

SMALL = {"max_tokens": 200, "seq_len": 64, "batch_size": 4}


def _users_folder(root: Path) -> dict[str, bytes]:
    """A folder of a user's own files (as ``~/Documents`` would be)."""
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (root / "thesis.tex").write_text("chapter 1")
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def no_counting(monkeypatch):
    """Fail the test if any counting starts: refusals must come before the work."""
    import langneurons.pipeline as pipeline

    def counting(*args, **kwargs):
        raise AssertionError("counting started before the location was checked")

    monkeypatch.setattr(pipeline, "collect_language_stats", counting)


def test_a_folder_that_is_not_a_run_is_refused_before_any_work(tiny_model, tmp_path, no_counting):
    documents = tmp_path / "Documents"
    before = _users_folder(documents)
    with pytest.raises(
        ResultsError, match=r"not a LangNeurons run \(it holds photos/, thesis\.tex\)"
    ):
        compute(tiny_model, ["en", "fr"], out_dir=documents, **SMALL)
    assert _snapshot(documents) == before


@pytest.mark.parametrize("given", ["", " ", ".", "./"])
def test_an_empty_out_or_the_current_folder_is_refused(tiny_model, tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    before = _users_folder(tmp_path)
    with pytest.raises(ResultsError, match=r"empty|current folder"):
        check_output_folder(given)
    assert _snapshot(tmp_path) == before


def test_an_empty_folder_is_written_and_a_users_files_in_an_earlier_run_are_kept(
    tiny_model, tmp_path
):
    out = tmp_path / "run"
    out.mkdir()
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    (out / "notes.md").write_text("my notes")
    (out / "figures").mkdir()
    (out / "figures" / "heatmap.png").write_bytes(b"png")
    os.symlink("figures/heatmap.png", out / "latest.png")
    compute(tiny_model, ["en", "de"], out_dir=out, **SMALL)
    assert read_run(out).languages == ["en", "de"]
    assert (out / "notes.md").read_text() == "my notes"
    assert (out / "figures" / "heatmap.png").read_bytes() == b"png"
    assert os.readlink(out / "latest.png") == "figures/heatmap.png"


def test_a_symbolic_link_is_followed_never_replaced(tiny_model, tmp_path):
    target = tmp_path / "disk" / "run"
    target.mkdir(parents=True)
    link = tmp_path / "run"
    link.symlink_to(target)
    compute(tiny_model, ["en", "fr"], out_dir=link, **SMALL)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_run(link).languages == ["en", "fr"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ResultsError, match=r"symbolic link .* which does not exist"):
        check_output_folder(broken)
    assert broken.is_symlink()


def test_merge_and_import_refuse_a_users_folder_before_reading(tiny_model, tmp_path):
    from langneurons.merge import merge_runs
    from langneurons.workflows import import_mask

    documents = tmp_path / "Documents"
    before = _users_folder(documents)
    with pytest.raises(ResultsError, match="not a LangNeurons run"):
        merge_runs([tmp_path / "a", tmp_path / "b"], documents)  # inputs not even read
    with pytest.raises(ResultsError, match="not a LangNeurons run"):
        import_mask(tmp_path / "missing.pth", "en,fr", tiny_model, documents)
    assert _snapshot(documents) == before


def _slow_writer(started: threading.Event, release: threading.Event, text: str):
    def write(path: Path) -> None:
        started.set()
        assert release.wait(30)
        path.write_text(text)

    return write


def _meta(path: Path) -> None:
    path.write_text('{"format": "langneurons-run/1"}')


def test_a_reader_and_a_second_writer_leave_a_first_write_alone(tmp_path):
    out = tmp_path / "x"
    started, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = write_folder(
            out, {"meta.json": _meta, "a.txt": _slow_writer(started, release, "first")}
        )

    def second() -> None:
        results["second"] = write_folder(
            out, {"meta.json": _meta, "a.txt": lambda p: p.write_text("second")}
        )
        results["second at"] = time.monotonic()

    one = threading.Thread(target=first)
    one.start()
    assert started.wait(30)
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".x.writing-")]
    with pytest.raises(ResultsError, match="not a folder with results"):
        read_run(out)  # a reader while the first run is written
    assert staging.is_dir()  # ... did not remove the writer's folder
    two = threading.Thread(target=second)
    two.start()
    time.sleep(0.3)
    assert "second" not in results and staging.is_dir()  # the second writer waits its turn
    released_at = time.monotonic()
    release.set()
    one.join(30)
    two.join(30)
    assert results["first"] == out and results["second"] == out
    assert results["second at"] >= released_at  # type: ignore[operator]
    assert (out / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_leftovers_are_matched_by_exact_name_never_globbed(tmp_path):
    others = [".a.old-AbCdEf12", ".b.writing-Zz09_xyZ", ".a.writing-b.writing-12345678"]
    for name in others:
        (tmp_path / name).mkdir()
        _meta(tmp_path / name / "meta.json")
    star = tmp_path / "*"
    with parent_lock(tmp_path):
        assert recover_interrupted(star) == []
        assert recover_interrupted(tmp_path / "a.writing-b") == [
            "removed the incomplete .a.writing-b.writing-12345678"
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others[:2])


def test_a_folder_that_stops_being_a_run_during_the_work_is_refused_at_the_swap(tmp_path):
    out = tmp_path / "run"
    write_folder(out, {"meta.json": _meta})

    def meanwhile(path: Path) -> None:  # the user turns the folder into something else
        (out / "meta.json").unlink()
        (out / "thesis.tex").write_text("chapter 1")
        _meta(path)

    with pytest.raises(ResultsError, match="not a LangNeurons run"):
        write_folder(out, {"meta.json": meanwhile})
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_temporaries_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    dead = 2**22 + 12345  # above the default pid limit: no such process
    old = time.time() - 3600
    stale = tmp_path / f".tmp-{dead}-abc.safetensors"
    live = tmp_path / f".tmp-{os.getpid()}-def.safetensors"
    fresh = tmp_path / f".tmp-{dead}-ghi.safetensors"
    mine = tmp_path / "entry.safetensors"
    for path in (stale, live, fresh, mine):
        path.write_bytes(b"x")
    for path in (stale, live):
        os.utime(path, (old, old))
    assert remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and live.exists() and fresh.exists() and mine.exists()


def test_a_cache_that_cannot_take_the_counts_is_refused_before_counting(
    tiny_model, tmp_path, monkeypatch, no_counting
):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="is a file"):
        compute(tiny_model, ["en", "fr"], cache=StatsCache(blocker / "stats"), **SMALL)
    monkeypatch.setattr(
        outputs.shutil, "disk_usage", lambda path: type("U", (), {"free": 1 << 20})()
    )
    with pytest.raises(CacheError, match=r"1 MB free .* Free disk space"):
        compute(tiny_model, ["en", "fr"], cache=StatsCache(tmp_path / "full"), **SMALL)


def test_counts_are_kept_when_the_cache_fails_after_counting(tiny_model, tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise CacheError("Cannot write the statistics cache: No space left on device.")

    monkeypatch.setattr(StatsCache, "save", full)
    said: list[str] = []
    result = compute(
        tiny_model,
        ["en", "fr"],
        out_dir=tmp_path / "run",
        progress=lambda event: said.append(event.message),
        **SMALL,
    )
    assert read_run(tmp_path / "run").languages == ["en", "fr"]
    assert result.statistics.tokens.tolist() == [200, 200]
    assert any("No space left" in m and "keeps its counts" in m for m in said)


def test_a_corrupt_entry_in_a_read_only_cache_is_ignored_not_fatal(
    tiny_model, tmp_path, monkeypatch
):
    cache = StatsCache(tmp_path / "stats")
    compute(tiny_model, ["en", "fr"], cache=cache, **SMALL)
    for entry in cache.root.glob("*.safetensors"):
        entry.write_bytes(b"garbage")
    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):
        if self.parent == cache.root:
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    monkeypatch.setattr(StatsCache, "check_writable", lambda self, *a: None)
    monkeypatch.setattr(
        StatsCache, "save", lambda self, *a: (_ for _ in ()).throw(CacheError("read-only"))
    )
    result = compute(tiny_model, ["en", "fr"], cache=cache, **SMALL)
    assert result.statistics.tokens.tolist() == [200, 200]
