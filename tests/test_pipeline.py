"""`compute`: its settings, its detectors and what it reports (the run folder, the cache and
resumption have their own modules)."""

from __future__ import annotations

import pytest
import torch

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


def test_average_precision_through_compute_keeps_its_samples_with_the_run(
    tiny_model, tmp_path, monkeypatch
):
    from langneurons.errors import CorpusError, ResultsError
    from langneurons.merge import merge_runs
    from langneurons.results import read_run
    from langneurons.samples import SAMPLES_FILE
    from langneurons.selection import AveragePrecisionConfig, LapeConfig

    config = AveragePrecisionConfig(top_rate=0.05, min_ap=0.3)
    result = compute(tiny_model, LANGS, selection=config, out_dir=tmp_path / "ap", **SMALL)
    assert result.selection.method == "average-precision"
    assert result.samples is not None and result.samples.languages == LANGS
    assert result.meta["samples"]["per_language"] == result.samples.counts()
    assert (tmp_path / "ap" / SAMPLES_FILE).is_file()
    run = read_run(tmp_path / "ap")
    assert run.samples is not None and torch.equal(run.samples.means, result.samples.means)
    assert "probabilities" in result.selection.scores  # shown beside the AP in the heatmaps
    # The samples come from the windows compute() counted, not from cutting the text again,
    # and equal what compute_samples collects on its own for the same settings.
    from langneurons import samples as samples_module
    from langneurons.config import CountingConfig
    from langneurons.pipeline import compute_samples

    alone = compute_samples(tiny_model, LANGS, counting=CountingConfig(**SMALL), use_cache=False)
    assert torch.equal(alone.means, result.samples.means)
    monkeypatch.setattr(samples_module, "counting_windows", None)  # a call would fail
    again = compute(tiny_model, LANGS, selection=config, use_cache=False, **SMALL)
    assert again.samples is not None and torch.equal(again.samples.means, result.samples.means)
    monkeypatch.undo()
    # Merging loses the texts behind the samples: refused with the way out.
    compute(tiny_model, ["es", "ru"], selection=config, out_dir=tmp_path / "ap2", **SMALL)
    with pytest.raises(ResultsError, match="merge with another method"):
        merge_runs([tmp_path / "ap", tmp_path / "ap2"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    # Rewritten with another method, the folder drops the samples that no longer belong.
    compute(tiny_model, LANGS, selection=LapeConfig(), out_dir=tmp_path / "ap", **SMALL)
    assert not (tmp_path / "ap" / SAMPLES_FILE).exists()
    # A streamed corpus cannot be sampled: refused before the model is loaded.
    with pytest.raises(CorpusError, match="streamed"):
        compute(None, LANGS, corpus="hf:some/dataset", selection=config, max_tokens=100)
