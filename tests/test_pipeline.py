"""`compute` end to end on a tiny model: the file contract, caching, resume, atomicity."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from langneurons import pipeline
from langneurons.config import ConfigError
from langneurons.errors import ResultsError
from langneurons.pipeline import compute
from langneurons.results import FILES, read_run
from langneurons.selection import MeanDiffConfig
from langneurons.stats import StatsCache

from .reference_lape import reference_masks

LANGS = ["en", "fr", "de", "zh"]
SMALL = {"max_tokens": 200, "seq_len": 64, "batch_size": 4}


def test_run_folder_follows_the_contract(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = compute(tiny_model, LANGS, out_dir=out, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)

    tensors = load_file(out / "stats.safetensors")
    layers, neurons = tiny_model.num_layers, tiny_model.num_neurons
    assert tensors["over_zero"].dtype == torch.int64
    assert tensors["over_zero"].shape == (layers, neurons, len(LANGS))
    assert tensors["tokens"].tolist() == [200] * len(LANGS)
    assert tensors["activation_sum"].shape == (layers, neurons, len(LANGS))
    assert tensors["activation_sum"].is_floating_point()
    with safe_open(out / "stats.safetensors", framework="pt") as handle:
        assert json.loads(handle.metadata()["languages"]) == LANGS

    meta = json.loads((out / "meta.json").read_text())
    assert meta["languages"] == LANGS
    assert (meta["layers"], meta["neurons"]) == (layers, neurons)
    assert meta["model"]["fingerprint"] == tiny_model.fingerprint
    assert meta["corpus"]["name"] == "udhr"
    assert set(meta["corpus"]["languages"]) == set(LANGS)
    assert meta["corpus"]["split"]["eval_fraction"] == 0.2
    assert meta["selection"]["settings"] == {
        "top_rate": 0.01,
        "filter_rate": 0.95,
        "activation_bar_ratio": 0.95,
    }
    assert {"langneurons", "torch", "transformers"} <= set(meta["versions"])

    masks = torch.load(out / "activation_mask.pth", weights_only=True)
    expected = reference_masks(tensors["over_zero"], tensors["tokens"])
    assert len(masks) == len(LANGS) and all(len(m) == layers for m in masks)
    for k in range(len(LANGS)):
        for layer in range(layers):
            assert masks[k][layer].dtype == torch.int64
            assert torch.equal(masks[k][layer], expected[k][layer])

    neurons_doc = json.loads((out / "neurons.json").read_text())
    assert neurons_doc["method"] == "lape"
    assert neurons_doc["settings"]["top_rate"] == 0.01
    for k, code in enumerate(LANGS):
        assert neurons_doc["neurons"][code]["per_layer"] == [t.tolist() for t in masks[k]]
    assert result.selection.union_size() == neurons_doc["distinct_total"]

    run = read_run(out)
    assert run.statistics.languages == LANGS
    assert torch.equal(run.statistics.over_zero, tensors["over_zero"])


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
    compute(tiny_model, ["en"], **SMALL)
    assert compute(tiny_model, ["en"], **SMALL).cached_languages == ["en"]
    assert compute(tiny_model, ["en"], **{**SMALL, "max_tokens": 150}).cached_languages == []
    assert compute(tiny_model, ["en"], eval_fraction=0.5, **SMALL).cached_languages == []
    other = make_tiny_model("llama", seed=3)
    assert compute(other, ["en"], **SMALL).cached_languages == []


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

    first = compute(tiny_model, ["en"], **SMALL)
    path = StatsCache().path(first.meta["cache_keys"]["en"])
    tensors = load_file(path)
    tensors["over_zero"] = tensors["over_zero"] + 10_000  # more than the tokens counted
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, path, metadata=metadata)
    assert compute(tiny_model, ["en"], **SMALL).cached_languages == []


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
    whole = compute(tiny_model, ["en"], cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(400), **LONG)
    key = whole.meta["cache_keys"]["en"]
    partial = StatsCache().partial_path(key, "all")
    assert partial.is_file()
    with safe_open(partial, framework="pt") as handle:
        assert int(handle.metadata()["windows"]) > 0

    events = []
    resumed = compute(tiny_model, ["en"], progress=events.append, **LONG)
    resumes = [e for e in events if e.stage == "resume"]
    assert len(resumes) == 1 and 300 <= resumes[0].done < 700
    first_count = next(e for e in events if e.stage == "count")
    assert first_count.done == resumes[0].done  # counting went on from there
    for name in ("over_zero", "activation_sum", "activation_sq_sum"):
        assert torch.equal(getattr(whole.statistics, name), getattr(resumed.statistics, name))
    assert resumed.statistics.tokens.tolist() == [700]
    assert not partial.exists()  # the language is whole in the cache now


def test_finished_language_removes_checkpoints_of_other_process_counts(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(400), **LONG)
    folder = StatsCache().root / "partial"
    (only,) = folder.iterdir()
    stale = folder / only.name.replace(".all.", ".r1of4.")  # as left by a 4-process run
    only.rename(stale)
    compute(tiny_model, ["en"], **LONG)
    assert not list(folder.iterdir())


def test_checkpoint_resumes_with_another_batch_size(tiny_model, tmp_path):
    whole = compute(tiny_model, ["en"], cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(300), **LONG)
    resumed = compute(tiny_model, ["en"], **{**LONG, "batch_size": 3})
    assert torch.equal(whole.statistics.tokens, resumed.statistics.tokens)
    # Other batch shapes may round differently: a few values near zero can flip.
    assert (whole.statistics.over_zero - resumed.statistics.over_zero).abs().sum() <= 5


def test_unusable_checkpoint_is_ignored_and_counted_again(tiny_model, tmp_path):
    from safetensors.torch import save_file

    whole = compute(tiny_model, ["en"], cache=StatsCache(tmp_path / "other"), **LONG)
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(300), **LONG)
    partial = StatsCache().partial_path(whole.meta["cache_keys"]["en"], "all")
    tensors = load_file(partial)
    with safe_open(partial, framework="pt") as handle:
        metadata = handle.metadata()
    save_file(tensors, partial, metadata={**metadata, "windows": "1"})  # tokens disagree now
    events = []
    again = compute(tiny_model, ["en"], progress=events.append, **LONG)
    assert any("unusable" in e.message for e in events)
    assert not any(e.stage == "resume" for e in events)
    assert torch.equal(whole.statistics.over_zero, again.statistics.over_zero)


def test_no_cache_discards_a_checkpoint(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(300), **LONG)
    events = []
    compute(tiny_model, ["en"], use_cache=False, progress=events.append, **LONG)
    assert not any(e.stage == "resume" for e in events)
    assert not list((StatsCache().root / "partial").glob("*.safetensors"))


def test_checkpoint_tokens_zero_saves_no_checkpoint(tiny_model):
    with pytest.raises(Stop):
        compute(tiny_model, ["en"], progress=_stop_after(300), **{**LONG, "checkpoint_tokens": 0})
    assert not (StatsCache().root / "partial").exists()
    with pytest.raises(ConfigError, match="checkpoint_tokens must be at least 0"):
        compute(tiny_model, ["en"], **{**LONG, "checkpoint_tokens": -1})


def test_failed_write_leaves_nothing_behind(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "new" / "run"

    def failing_save(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("langneurons.results.torch.save", failing_save)
    with pytest.raises(ResultsError, match="No space left"):
        compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    assert not out.exists()


def test_failed_write_keeps_an_existing_run_intact(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(
        "langneurons.results.torch.save",
        lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")),
    )
    with pytest.raises(ResultsError):
        compute(tiny_model, ["en", "de"], out_dir=out, **SMALL)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_must_be_a_folder(tiny_model, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ResultsError, match="is a file"):
        compute(tiny_model, ["en", "fr"], out_dir=target, **SMALL)


def test_read_run_explains_incomplete_folders(tmp_path):
    with pytest.raises(ResultsError, match="not a folder"):
        read_run(tmp_path / "missing")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ResultsError, match=r"lacks stats\.safetensors"):
        read_run(tmp_path)


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
