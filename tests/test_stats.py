"""Counting one language's statistics, and their cache: entries reused, keyed by what
produced them, corrupt ones recomputed, interrupted languages resumed from checkpoints."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from langneurons import pipeline
from langneurons.config import ConfigError
from langneurons.pipeline import compute
from langneurons.stats import StatsCache

LANGS = ["en", "fr", "de", "zh"]
SMALL = {"max_tokens": 200, "seq_len": 64, "batch_size": 4}
PAIR = ["en", "fr"]  # the fewest languages compute takes


def test_second_call_reads_the_cache_without_a_forward_pass(tiny_model, monkeypatch):
    first = compute(tiny_model, LANGS, **SMALL)
    assert first.cached_languages == []

    def no_forward(*_args, **_kwargs):
        raise AssertionError("statistics were recomputed")

    monkeypatch.setattr(pipeline, "collect_language_stats", no_forward)
    second = compute(tiny_model, LANGS, **SMALL)
    assert second.cached_languages == LANGS
    assert torch.equal(first.statistics.over_zero, second.statistics.over_zero)
    assert torch.equal(first.statistics.activation_sum, second.statistics.activation_sum)


def test_cache_key_covers_budget_text_and_weights(tiny_model, make_tiny_model):
    compute(tiny_model, PAIR, **SMALL)
    assert compute(tiny_model, PAIR, **SMALL).cached_languages == PAIR
    assert compute(tiny_model, PAIR, **{**SMALL, "max_tokens": 150}).cached_languages == []
    assert compute(tiny_model, PAIR, eval_fraction=0.5, **SMALL).cached_languages == []
    other = make_tiny_model("llama", seed=3)
    assert compute(other, PAIR, **SMALL).cached_languages == []


def test_no_cache_recomputes_and_refreshes(tiny_model):
    compute(tiny_model, ["en", "fr"], **SMALL)
    fresh = compute(tiny_model, ["en", "fr"], use_cache=False, **SMALL)
    assert fresh.cached_languages == []
    assert compute(tiny_model, ["en", "fr"], **SMALL).cached_languages == ["en", "fr"]


def test_corrupt_cache_entry_is_detected_and_recomputed(tiny_model, isolated_cache):
    first = compute(tiny_model, ["en", "fr"], **SMALL)
    fr_entry = StatsCache().path(first.meta["cache_keys"]["fr"])
    fr_entry.write_bytes(fr_entry.read_bytes()[:100])  # truncated, as by a full disk
    messages = []
    again = compute(
        tiny_model, ["en", "fr"], progress=lambda e: messages.append(e.message), **SMALL
    )
    assert again.cached_languages == ["en"]
    assert any("corrupt" in m for m in messages)
    assert torch.equal(first.statistics.over_zero, again.statistics.over_zero)
    assert fr_entry.is_file()  # rewritten


def test_cache_entry_with_impossible_counts_is_rejected(tiny_model):
    from safetensors.torch import save_file

    first = compute(tiny_model, PAIR, **SMALL)
    path = StatsCache().path(first.meta["cache_keys"]["en"])
    tensors = load_file(path)
    tensors["over_zero"] = tensors["over_zero"] + 10_000  # more than the tokens counted
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, path, metadata=metadata)
    assert compute(tiny_model, PAIR, **SMALL).cached_languages == ["fr"]  # en was rejected


def test_interrupted_run_resumes_without_redoing_finished_languages(tiny_model):
    def interrupt_on_fr(event):
        if event.stage == "count" and event.language == "fr" and event.done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute(tiny_model, ["en", "fr", "de"], progress=interrupt_on_fr, **SMALL)
    resumed = compute(tiny_model, ["en", "fr", "de"], **SMALL)
    assert resumed.cached_languages == ["en"]
    assert not list(StatsCache().root.glob(".tmp-*"))  # no half-written entry


LONG = {"max_tokens": 700, "seq_len": 64, "batch_size": 2, "checkpoint_tokens": 150}


class Stop(Exception):
    pass


def _stop_after(tokens: int):
    def progress(event):
        if event.stage == "count" and event.done >= tokens:
            raise Stop

    return progress


def test_interrupted_language_resumes_from_its_last_checkpoint(tiny_model, tmp_path):
    whole = compute(tiny_model, PAIR, cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(400), **LONG)
    key = whole.meta["cache_keys"]["en"]
    partial = StatsCache().partial_path(key, "all")
    assert partial.is_file()
    with safe_open(partial, framework="pt") as handle:
        assert int(handle.metadata()["windows"]) > 0

    events = []
    resumed = compute(tiny_model, PAIR, progress=events.append, **LONG)
    resumes = [e for e in events if e.stage == "resume"]
    assert len(resumes) == 1 and 300 <= resumes[0].done < 700
    first_count = next(e for e in events if e.stage == "count")
    assert first_count.done == resumes[0].done  # counting went on from there
    for name in ("over_zero", "activation_sum", "activation_sq_sum"):
        assert torch.equal(getattr(whole.statistics, name), getattr(resumed.statistics, name))
    assert resumed.statistics.tokens.tolist() == [700, 700]
    assert not partial.exists()  # the language is whole in the cache now


def test_finished_language_removes_checkpoints_of_other_process_counts(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(400), **LONG)
    folder = StatsCache().root / "partial"
    (only,) = folder.iterdir()
    stale = folder / only.name.replace(".all.", ".r1of4.")  # as left by a 4-process run
    only.rename(stale)
    compute(tiny_model, PAIR, **LONG)
    assert not list(folder.iterdir())


def test_checkpoint_resumes_with_another_batch_size(tiny_model, tmp_path):
    whole = compute(tiny_model, PAIR, cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(300), **LONG)
    resumed = compute(tiny_model, PAIR, **{**LONG, "batch_size": 3})
    assert torch.equal(whole.statistics.tokens, resumed.statistics.tokens)
    # Other batch shapes may round differently: a few values near zero can flip.
    assert (whole.statistics.over_zero - resumed.statistics.over_zero).abs().sum() <= 5


def test_unusable_checkpoint_is_ignored_and_counted_again(tiny_model, tmp_path):
    from safetensors.torch import save_file

    whole = compute(tiny_model, PAIR, cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(300), **LONG)
    partial = StatsCache().partial_path(whole.meta["cache_keys"]["en"], "all")
    tensors = load_file(partial)
    with safe_open(partial, framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, partial, metadata={**metadata, "windows": "1"})  # tokens disagree now
    events = []
    again = compute(tiny_model, PAIR, progress=events.append, **LONG)
    assert any("unusable" in e.message for e in events)
    assert not any(e.stage == "resume" for e in events)
    assert torch.equal(whole.statistics.over_zero, again.statistics.over_zero)


def test_no_cache_discards_a_checkpoint(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(300), **LONG)
    events = []
    compute(tiny_model, PAIR, use_cache=False, progress=events.append, **LONG)
    assert not any(e.stage == "resume" for e in events)
    assert not list((StatsCache().root / "partial").glob("*.safetensors"))


def test_checkpoint_tokens_zero_saves_no_checkpoint(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, PAIR, progress=_stop_after(300), **{**LONG, "checkpoint_tokens": 0})
    assert not (StatsCache().root / "partial").exists()
    with pytest.raises(ConfigError, match="checkpoint_tokens must be at least 0"):
        compute(tiny_model, PAIR, **{**LONG, "checkpoint_tokens": -1})


def test_counts_equal_a_naive_capture_and_skip_the_bos_position(tiny_model):
    from langneurons.stats import collect_language_stats

    bos = tiny_model.tokenizer.bos_token_id
    windows = [torch.cat([torch.tensor([bos]), torch.randint(4, 300, (n,))]) for n in (9, 9, 5)]
    captured: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out, k=k: captured.append((k, out[0, 1:])))
        for k, m in enumerate(tiny_model.modules)
    ]
    try:
        with torch.inference_mode():
            for window in windows:
                tiny_model.body(input_ids=window[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    expected = torch.zeros(tiny_model.num_layers, tiny_model.num_neurons, dtype=torch.int64)
    sums = torch.zeros(tiny_model.num_layers, tiny_model.num_neurons, dtype=torch.float64)
    for layer, values in captured:
        expected[layer] += (values > 0).sum(0)
        sums[layer] += values.double().sum(0)
    stats = collect_language_stats(tiny_model, windows, batch_size=2)
    assert stats.tokens == 9 + 9 + 5  # the BOS positions are not counted
    assert torch.equal(stats.over_zero, expected)
    assert torch.allclose(stats.activation_sum, sums, atol=1e-4)
    assert not any(m._forward_hooks for m in tiny_model.modules)


def test_a_missing_entry_is_a_miss_and_an_unwritable_cache_is_explained(tiny_model, tmp_path):
    from langneurons.errors import CacheError
    from langneurons.stats import LanguageStats

    cache = StatsCache(tmp_path / "cache")
    assert cache.load("0" * 32, (tiny_model.num_layers, tiny_model.num_neurons)) is None
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    blocked = StatsCache(tmp_path / "blocked" / "stats")
    zeros = torch.zeros(2, 3, dtype=torch.int64)
    stats = LanguageStats(zeros, 1, zeros.double(), zeros.double())
    with pytest.raises(CacheError, match="Cannot write the statistics cache"):
        blocked.save("k", stats, "en")
