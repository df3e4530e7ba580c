"""`compute`: its settings, its detectors and what it reports (the run folder, the cache and
resumption have their own modules)."""

from __future__ import annotations

import pytest

from langneurons.config import ConfigError
from langneurons.pipeline import compute
from langneurons.selection import MeanDiffConfig

LANGS = ["en", "fr", "de", "zh"]
SMALL = {"max_tokens": 200, "seq_len": 64, "batch_size": 4}


def test_mean_difference_method_through_compute(tiny_model):
    result = compute(
        tiny_model,
        LANGS,
        selection=MeanDiffConfig(top_rate=0.05, min_effect=0.1),
        **SMALL,
    )
    assert result.selection.method == "mean-diff"
    assert result.meta["selection"]["method"] == "mean-diff"
    assert sum(len(t) for m in result.selection.masks for t in m) > 0


def test_counting_settings_as_an_object_or_as_keywords_are_the_same_call(tiny_model):
    from langneurons.config import CountingConfig
    from langneurons.pipeline import cached_languages

    counting = CountingConfig(max_tokens=200, seq_len=64, batch_size=4)
    assert cached_languages(tiny_model, LANGS, counting=counting) == []
    first = compute(tiny_model, LANGS, counting=counting)
    assert first.meta["counting"]["seq_len"] == 64
    assert cached_languages(tiny_model, LANGS, **SMALL) == LANGS
    again = compute(tiny_model, LANGS, **SMALL)
    assert again.cached_languages == LANGS
    with pytest.raises(ConfigError, match="takes the settings max_tokens"):
        compute(tiny_model, LANGS, max_token=200)
