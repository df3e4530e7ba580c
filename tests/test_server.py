"""What a dashboard server shares between sessions: the bounded model pool, the queue of
long jobs, private upload folders, and Markdown-safe text (no browser needed)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import pytest

from langneurons.dashboard.live import Producer, snapshot_trace
from langneurons.dashboard.server import BusyError, JobQueue, ModelPool, UploadFolder
from langneurons.dashboard.widgets import JOINER, plain
from langneurons.errors import CorpusError

from .helpers import Upload


def test_the_model_pool_keeps_at_most_its_capacity_and_loads_each_model_once():
    loads = []

    def loader(spec, dtype, device, progress=None):
        loads.append(spec)
        time.sleep(0.05)
        return object()

    pool = ModelPool(1, loader)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(pool.get("a", "f", "c"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["a"] and len({id(r) for r in results}) == 1  # loaded once, shared
    pool.get("b", "f", "c")
    assert list(pool.models) == [("b", "f", "c")]  # the least recently used one let go
    pool.capacity = 2
    pool.get("a", "f", "c")
    pool.get("b", "f", "c")
    assert loads == ["a", "b", "a"]


def test_long_jobs_take_turns_and_show_their_place():
    queue = JobQueue()
    order, places = [], []
    started = threading.Event()

    def first():
        with queue.turn():
            started.set()
            time.sleep(0.6)
            order.append("first")

    def second():
        started.wait()
        with queue.turn(on_wait=places.append):
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order == ["first", "second"]
    assert places and places[0] == 1  # one job ahead


def test_a_job_that_waits_too_long_gives_up_and_leaves_the_queue():
    queue = JobQueue()
    hold, done = threading.Event(), threading.Event()

    def holder():
        with queue.turn():
            hold.set()
            done.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    hold.wait(5)
    with pytest.raises(BusyError, match="The server is busy"), queue.turn(timeout=0.3):
        pass
    assert queue.waiting == []
    done.set()
    thread.join()
    with queue.turn(timeout=1):  # free again
        pass


class _Stopped(BaseException):
    """What Streamlit raises in a session's script thread when its tab closes or it
    reruns (a BaseException, like its StopException)."""


def test_a_waiting_session_that_leaves_gives_up_its_place_at_once():
    queue = JobQueue()
    hold, release = threading.Event(), threading.Event()
    left = threading.Event()

    def holder():
        with queue.turn():
            hold.set()
            release.wait(5)

    def leaving(ahead: int) -> None:
        left.set()
        raise _Stopped()  # the tab was closed while it waited

    def abandoned():
        with pytest.raises(_Stopped), queue.turn(on_wait=leaving):
            raise AssertionError("never its turn")

    first = threading.Thread(target=holder)
    first.start()
    assert hold.wait(5)
    gone = threading.Thread(target=abandoned)
    gone.start()
    assert left.wait(5)
    gone.join(5)
    assert queue.waiting == []  # its place was given up
    release.set()
    first.join(5)
    start = time.monotonic()
    with queue.turn(timeout=1.0):  # the next session runs at once
        assert time.monotonic() - start < 0.5


@pytest.mark.parametrize(
    "name", ["../../x.txt", "/etc/passwd.txt", "german.doc", "fr.txt.exe", "a.txt", "FR.txt"]
)
def test_uploads_keep_only_language_named_files_inside_the_session_folder(name, tmp_path):
    folder = UploadFolder()
    try:
        if name in ("../../x.txt", "/etc/passwd.txt"):
            # The name is cut to its last part: never written outside the folder.
            with pytest.raises(CorpusError, match="name each file after its language code"):
                folder.save([Upload(name, b"One.\nTwo.\n")], 1000)
        else:
            with pytest.raises(CorpusError, match="name each file after its language code"):
                folder.save([Upload(name, b"x")], 1000)
        assert list(folder.path.iterdir()) == []
    finally:
        folder.remove()


def test_an_upload_folder_is_private_capped_and_removed_with_its_session():
    folder = UploadFolder()
    path = folder.path
    assert path.stat().st_mode & 0o077 == 0  # this session's only
    saved = folder.save([Upload("fr.txt", b"Un.\nDeux.\n"), Upload("zh-Hant.txt", b"a\nb\n")], 100)
    assert sorted(p.name for p in Path(saved).iterdir()) == ["fr.txt", "zh-Hant.txt"]
    with pytest.raises(CorpusError, match=r"the limit is 0\.0001 MB"):
        folder.save([Upload("de.txt", b"x" * 101)], 100)
    del folder  # the session's state lets it go
    gc.collect()
    assert not path.exists()


def test_plain_text_cannot_become_a_link_an_image_or_markup():
    crafted = "![x](http://evil.example/t.png) [click](http://evil) **bold** $x^2$ <b>"
    escaped = plain(crafted)
    for i, char in enumerate(escaped):
        if char in "![]()*$<>":
            assert escaped[i - 1] == "\\", escaped[: i + 1]  # every sign escaped
    assert escaped.replace("\\", "").replace(JOINER, "") == crafted
    # Bare addresses, which Markdown links even when escaped, are broken up.
    for address in ("http://a.example/x", "https://a.example", "www.a.example", "me@a.example"):
        shown = plain(f"see {address} now")
        assert JOINER in shown and shown.replace("\\", "").replace(JOINER, "") == (
            f"see {address} now"
        )


def test_live_pictures_come_less_often_while_many_sessions_stream():
    from langneurons.dashboard.server import LiveStreams

    streams = LiveStreams()
    assert streams.interval(0.5) == 0.5
    with streams.streaming(), streams.streaming():
        assert streams.interval(0.5) == 0.5  # two at once: as often as alone
        with streams.streaming(), streams.streaming():
            assert streams.active == 4 and streams.interval(0.5) == 1.0
    assert streams.active == 0
    with pytest.raises(RuntimeError), streams.streaming():
        raise RuntimeError("a failed stream still leaves the count")
    assert streams.active == 0


def test_the_session_that_loads_a_model_hears_its_stages():
    heard = []

    def loader(spec, dtype, device, progress=None):
        if progress is not None:
            progress(f"converting {spec}")
        return object()

    pool = ModelPool(2, loader)
    first = pool.get("a", "f", "c", heard.append)
    assert heard == ["converting a"]
    assert pool.get("a", "f", "c", heard.append) is first  # already loaded: nothing to hear
    assert heard == ["converting a"]
    pool.get("b", "f", "c")  # no listener: loads all the same
    assert list(pool.models) == [("a", "f", "c"), ("b", "f", "c")]


def test_the_producer_runs_ahead_of_a_slow_reader_and_keeps_only_the_newest_state():
    def states():
        for i in range(1, 21):
            time.sleep(0.005)
            yield i

    producer = Producer(states()).start()
    first = producer.latest.wait(0, 0.0)
    time.sleep(0.3)  # a slow picture: generation goes on meanwhile
    later = producer.latest.wait(first.version, 0.0)
    assert later.finished and later.state == 20 and later.version == 20
    assert later.error is None


def test_the_producer_hands_a_failure_to_the_reader():
    def states():
        yield 1
        raise ValueError("bad step")

    sample = Producer(states()).start().latest.wait(1, 0.0)
    assert sample.finished and isinstance(sample.error, ValueError) and sample.state == 1


def test_a_stopped_producer_closes_its_generator_instead_of_generating_on():
    steps, closed = [], threading.Event()

    def states():
        try:
            for i in range(10_000):
                steps.append(i)
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    producer = Producer(states()).start()
    producer.latest.wait(3, 0.0)
    producer.stop()  # the page reran or its session ended
    assert closed.wait(2)
    producer.thread.join(2)
    assert not producer.thread.is_alive() and len(steps) < 100
    assert producer.latest.now().finished


def test_a_snapshot_of_a_growing_trace_keeps_only_complete_columns():
    import numpy as np

    from langneurons.trace import Trace

    trace = Trace(["en", "fr"], np.ones((2, 2), dtype=np.int64))
    trace.extend(["a", "b"], [1, 2], np.ones((2, 2, 2)), np.zeros((2, 2, 2)))
    trace.tokens.append("c")  # another thread is half-way through extending it
    copy = snapshot_trace(trace)
    assert copy is not None and copy.tokens == ["a", "b"] and copy.fired.shape == (2, 2, 2)
    trace.extend(["d"], [4], np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    assert copy.tokens == ["a", "b"] and len(copy.fired) == 2  # the copy does not grow


def test_live_heatmaps_follow_the_texts_at_a_slower_pace_and_the_last_is_always_drawn(
    monkeypatch,
):
    """Texts are redrawn with every live picture; a heatmap (a Plotly chart, far dearer
    for the browser, which shares a small server's cores with generation) at most every
    MAP_INTERVAL seconds, and the finished pair's always."""
    import numpy as np

    from langneurons.dashboard import traces
    from langneurons.dashboard.views import pair_view
    from langneurons.trace import Trace

    drawn: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        traces,
        "heatmap",
        lambda where, key, trace, *a, **k: drawn.append((len(trace.tokens), k["hover"])),
    )
    monkeypatch.setattr(pair_view.Outputs, "_box", lambda *a, **k: None)
    clock = [100.0]
    monkeypatch.setattr(pair_view.time, "monotonic", lambda: clock[0])

    def pair(n: int) -> dict:
        fired = np.zeros((n, 2, 1), np.float32)
        trace = Trace(["fr"], np.ones((2, 1), int), ["x"] * n, list(range(n)), fired, fired)
        return {
            "baseline_trace": trace,
            "modified_trace": trace,
            "prompt_tokens": 1,
            "baseline": "a" * n,
            "modified": "b" * n,
        }

    outputs = pair_view.Outputs("deactivate fr", with_lines=False)
    view = traces.TraceView("fr", False, False)
    outputs.draw(None, pair(2), view, final=False)  # the first picture: maps at once
    clock[0] += pair_view.MAP_INTERVAL / 3
    outputs.draw(None, pair(3), view, final=False)  # too soon for the maps
    clock[0] += pair_view.MAP_INTERVAL
    outputs.draw(None, pair(4), view, final=False)
    outputs.draw(None, pair(5), view, final=True)  # the finished pair, at once, in full
    assert drawn == [(2, False), (2, False), (4, False), (4, False), (5, True), (5, True)]


def test_a_long_intervention_header_stays_on_one_line_and_is_escaped():
    from langneurons.dashboard.views.pair_view import header
    from langneurons.dashboard.views.playground import PAGE_CSS

    shown = header("Modified", "steer towards ja <b>x</b> http://a.example")
    assert 'class="ln-side-head"' in shown and "&lt;b&gt;x&lt;/b&gt;" in shown
    assert "http://" not in shown  # a bare address is broken up
    assert "white-space:nowrap" in PAGE_CSS and "text-overflow:ellipsis" in PAGE_CSS


def test_an_error_about_an_upload_names_the_file_not_the_private_folder(monkeypatch):
    import types

    from langneurons.corpus import read_text_file
    from langneurons.dashboard import state
    from langneurons.errors import CorpusError

    folder = UploadFolder()
    try:
        monkeypatch.setattr(state, "st", types.SimpleNamespace(session_state={"_uploads": folder}))
        bad = folder.path / "fr.txt"
        bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
        with pytest.raises(CorpusError) as failed:
            read_text_file(bad)
        shown = state.without_private_paths(failed.value)
        assert str(folder.path) in str(failed.value)  # the library names the real path
        assert shown.startswith("fr.txt is not valid UTF-8") and str(folder.path) not in shown
    finally:
        folder.remove()
