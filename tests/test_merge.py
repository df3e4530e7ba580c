"""Merging runs: halves sum to the whole; incompatible runs are refused."""

from __future__ import annotations

import json

import pytest
import torch

from langneurons.cli import main
from langneurons.corpus import load_corpus, tokenize_windows
from langneurons.errors import ResultsError
from langneurons.merge import merge_runs
from langneurons.pipeline import compute
from langneurons.results import read_run
from langneurons.selection import LapeConfig, lape_select
from langneurons.stats import collect_language_stats


def test_counts_of_two_halves_sum_to_the_whole(tiny_model, tiny_tokenizer):
    text = load_corpus("udhr", ["fr"]).identify_text("fr")
    windows = tokenize_windows(tiny_tokenizer, text, max_tokens=600, seq_len=64)
    half = len(windows) // 2
    whole = collect_language_stats(tiny_model, windows, batch_size=1)
    a = collect_language_stats(tiny_model, windows[:half], batch_size=1)
    b = collect_language_stats(tiny_model, windows[half:], batch_size=1)
    assert a.tokens + b.tokens == whole.tokens
    assert torch.equal(a.over_zero + b.over_zero, whole.over_zero)
    assert torch.allclose(a.activation_sum + b.activation_sum, whole.activation_sum, atol=1e-6)


def _shards(tmp_path, languages=("en", "fr", "ja")):
    """Two corpus folders holding the first and second half of each language's text."""
    udhr = load_corpus("udhr", list(languages))
    folders = [tmp_path / "shard0", tmp_path / "shard1"]
    for folder in folders:
        folder.mkdir()
    for code in languages:
        paragraphs = udhr.texts[code].paragraphs
        middle = len(paragraphs) // 2
        (folders[0] / f"{code}.txt").write_text("\n".join(paragraphs[:middle]), "utf-8")
        (folders[1] / f"{code}.txt").write_text("\n".join(paragraphs[middle:]), "utf-8")
    return folders


def test_merge_sums_shards_and_selects_again(tiny_model, tmp_path, capsys):
    shards = _shards(tmp_path)
    runs = []
    for i, folder in enumerate(shards):
        out = tmp_path / f"run{i}"
        compute(tiny_model, ["en", "fr", "ja"], corpus=str(folder), seq_len=64, out_dir=out)
        runs.append(read_run(out))
    assert (
        main(["merge", str(runs[0].path), str(runs[1].path), "--out", str(tmp_path / "merged")])
        == 0
    )
    assert "Merged 2 runs" in capsys.readouterr().out
    merged = read_run(tmp_path / "merged")
    a, b, m = runs[0].statistics, runs[1].statistics, merged.statistics
    assert torch.equal(m.tokens, a.tokens + b.tokens)
    assert torch.equal(m.over_zero, a.over_zero + b.over_zero)
    expected = lape_select(m.over_zero, m.tokens, LapeConfig(), m.languages)
    for k, code in enumerate(m.languages):
        assert merged.neurons["neurons"][code]["per_layer"] == [
            t.tolist() for t in expected.masks[k]
        ]
    assert merged.meta["merged_from"] == [str(runs[0].path), str(runs[1].path)]


def test_merge_refuses_incompatible_or_overlapping_runs(
    tiny_model, make_tiny_model, tmp_path, capsys
):
    shards = _shards(tmp_path, ("en", "fr"))
    compute(tiny_model, ["en", "fr"], corpus=str(shards[0]), seq_len=64, out_dir=tmp_path / "a")
    compute(tiny_model, ["en", "fr"], corpus=str(shards[0]), seq_len=64, out_dir=tmp_path / "b")
    compute(tiny_model, ["en", "fr"], corpus=str(shards[1]), seq_len=32, out_dir=tmp_path / "c")
    other = make_tiny_model("llama", seed=5)
    compute(other, ["en", "fr"], corpus=str(shards[1]), seq_len=64, out_dir=tmp_path / "d")
    with pytest.raises(ResultsError, match="counted the same en text"):
        merge_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    with pytest.raises(ResultsError, match="window length"):
        merge_runs([tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    assert (
        main(["merge", str(tmp_path / "a"), str(tmp_path / "d"), "--out", str(tmp_path / "out")])
        == 2
    )
    assert "model weights (fingerprint) differ" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "a"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["counting"]["seq_len"] == 64
