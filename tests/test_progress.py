"""Progress: the time left of a computation over several languages."""

from __future__ import annotations

import pytest

from langneurons.progress import ComputeProgress, ProgressEvent, format_duration


def _clock(times):
    values = iter(times)
    return lambda: next(values)


def test_rate_and_time_left_from_counted_languages():
    tracker = ComputeProgress(["en", "fr", "de"], clock=_clock([0, 10, 20, 20, 30]))
    tracker.update(ProgressEvent("count", language="en", done=0, total=1000))
    tracker.update(ProgressEvent("count", language="en", done=500, total=1000))
    assert tracker.rate == pytest.approx(50.0)
    # 500 left of en, fr and de estimated at en's 1000 each: 2500 tokens at 50 per second.
    assert tracker.seconds_left == pytest.approx(50.0)
    tracker.update(ProgressEvent("count", language="en", done=1000, total=1000))
    tracker.update(ProgressEvent("count", language="fr", done=0, total=2000))
    tracker.update(ProgressEvent("count", language="fr", done=500, total=2000))
    assert tracker.finished_languages == 1
    assert tracker.fraction == pytest.approx(1500 / 4500)
    assert "fr: 500/2,000 tokens" in tracker.describe()
    assert "1 of 3 languages done" in tracker.describe()
    assert "left" in tracker.describe()


def test_cached_languages_cost_no_time_and_other_events_are_ignored():
    tracker = ComputeProgress(["en", "fr"], clock=_clock([0, 1, 2]))
    assert not tracker.update(ProgressEvent("tokenize", "Tokenizing en", language="en"))
    assert tracker.update(ProgressEvent("cache", language="en", done=800, total=800))
    assert tracker.finished_languages == 1 and tracker.seconds_left is None
    assert tracker.describe() == "Preparing..."


def test_a_resumed_language_measures_from_where_it_resumed():
    tracker = ComputeProgress(["en"], clock=_clock([0, 0, 10]))
    tracker.update(ProgressEvent("resume", language="en", done=600, total=1000))
    tracker.update(ProgressEvent("count", language="en", done=600, total=1000))
    tracker.update(ProgressEvent("count", language="en", done=800, total=1000))
    assert tracker.rate == pytest.approx(20.0)
    assert tracker.seconds_left == pytest.approx(10.0)


def test_durations_read_naturally():
    assert [format_duration(s) for s in (42.4, 95, 7260)] == ["42 s", "1 min 35 s", "2 h 1 min"]
