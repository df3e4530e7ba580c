"""Streamed dataset corpora give the same windows and counts as the same text from files."""

from __future__ import annotations

import json

import pytest
import torch

from langneurons.cli import main
from langneurons.corpus import load_corpus
from langneurons.errors import CorpusError
from langneurons.pipeline import compute

LANGS = ["en", "fr", "ja"]


@pytest.fixture
def same_text(tmp_path):
    """The UDHR paragraphs as a folder of .txt files and as JSON-lines records."""
    udhr = load_corpus("udhr", LANGS)
    folder, jsonl = tmp_path / "txt", tmp_path / "jsonl"
    folder.mkdir()
    jsonl.mkdir()
    for code in LANGS:
        paragraphs = udhr.texts[code].paragraphs
        (folder / f"{code}.txt").write_text("\n".join(paragraphs), "utf-8")
        with open(jsonl / f"{code}.jsonl", "w", encoding="utf-8") as handle:
            for paragraph in paragraphs:
                handle.write(json.dumps({"text": paragraph, "id": len(paragraph)}) + "\n")
    return folder, jsonl


@pytest.mark.parametrize("budget", [150, 900])
def test_streamed_dataset_equals_files(tiny_model, same_text, budget):
    folder, jsonl = same_text
    files = compute(
        tiny_model, LANGS, corpus=str(folder), max_tokens=budget, seq_len=64, use_cache=False
    )
    streamed = compute(
        tiny_model,
        LANGS,
        corpus="hf:json",
        max_tokens=budget,
        seq_len=64,
        use_cache=False,
        dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
    )
    # The same token windows (same cache keys), hence the same counts.
    assert streamed.meta["cache_keys"] == files.meta["cache_keys"]
    assert torch.equal(streamed.statistics.tokens, files.statistics.tokens)
    assert torch.equal(streamed.statistics.over_zero, files.statistics.over_zero)
    info = streamed.meta["corpus"]["languages"]["fr"]
    assert info["records_read"] < len(load_corpus("udhr", ["fr"]).texts["fr"].paragraphs) or (
        budget == 900
    )
    assert streamed.meta["corpus"]["source"] == "hf:json"


def test_stream_reads_only_what_the_budget_needs(tiny_model, same_text):
    _, jsonl = same_text
    result = compute(
        tiny_model,
        ["en"],
        corpus="hf:json",
        max_tokens=60,
        seq_len=64,
        dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
    )
    assert result.meta["corpus"]["languages"]["en"]["records_read"] <= 6


def test_dataset_errors_are_clear(tiny_model, same_text, tmp_path, capsys):
    _, jsonl = same_text
    with pytest.raises(CorpusError, match="give a token budget"):
        compute(
            tiny_model,
            ["en"],
            corpus="hf:json",
            dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        )
    with pytest.raises(CorpusError, match="no field 'body'"):
        compute(
            tiny_model,
            ["en"],
            corpus="hf:json",
            max_tokens=50,
            dataset_options={"data_files": str(jsonl / "{lang}.jsonl"), "text_field": "body"},
        )
    assert (
        main(
            [
                "compute",
                "--corpus",
                "hf:json",
                "--hf-data-files",
                str(tmp_path / "none" / "{lang}.jsonl"),
                "--languages",
                "en,fr",
                "--max-tokens",
                "50",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "Cannot open dataset 'json'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_large_local_text_files_stream_line_by_line(tiny_model, same_text):
    """hf:text reads plain .txt files lazily, one record per line: the same counts as the
    in-memory folder corpus."""
    folder, _ = same_text
    files = compute(
        tiny_model, LANGS, corpus=str(folder), max_tokens=400, seq_len=64, use_cache=False
    )
    streamed = compute(
        tiny_model,
        LANGS,
        corpus="hf:text",
        max_tokens=400,
        seq_len=64,
        use_cache=False,
        dataset_options={"data_files": str(folder / "{lang}.txt")},
    )
    assert streamed.meta["cache_keys"] == files.meta["cache_keys"]
    assert torch.equal(streamed.statistics.over_zero, files.statistics.over_zero)
