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


def _files_and_stream(model, folder, jsonl, budget):
    """``compute`` over the same text as a folder of files and as a JSON-lines stream."""
    common = {"max_tokens": budget, "seq_len": 64, "use_cache": False}
    files = compute(model, LANGS, corpus=str(folder), **common)
    streamed = compute(
        model,
        LANGS,
        corpus="hf:json",
        dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        **common,
    )
    return files, streamed


@pytest.mark.parametrize("budget", [150, 900])
def test_streamed_dataset_equals_files(tiny_model, same_text, budget):
    folder, jsonl = same_text
    files, streamed = _files_and_stream(tiny_model, folder, jsonl, budget)
    # The same token windows (same cache keys), hence the same counts.
    assert streamed.meta["cache_keys"] == files.meta["cache_keys"]
    assert torch.equal(streamed.statistics.tokens, files.statistics.tokens)
    assert torch.equal(streamed.statistics.over_zero, files.statistics.over_zero)
    # A UDHR text is shorter than one piece of tokenization, so all of it is read.
    info = streamed.meta["corpus"]["languages"]["fr"]
    assert info["records_read"] == len(load_corpus("udhr", ["fr"]).texts["fr"].paragraphs)
    assert streamed.meta["corpus"]["source"] == "hf:json"
    assert streamed.meta["corpus"]["dataset_split"] == "train"  # not the held-out split
    assert streamed.meta["corpus"]["split"]["eval_fraction"] == 0.2


def test_stream_reads_only_what_the_budget_needs(tiny_model, same_text, monkeypatch):
    """Reading stops at the first piece of text that meets the budget (pieces of ~300
    characters here; 1 MB in use, so a small budget reads at most about 1 MB)."""
    from langneurons import corpus

    monkeypatch.setattr(corpus, "TOKENIZE_PIECE_CHARS", 300)
    _, jsonl = same_text
    result = compute(
        tiny_model,
        ["en", "ja"],
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
            ["en", "ja"],
            corpus="hf:json",
            dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        )
    with pytest.raises(CorpusError, match="no field 'body'"):
        compute(
            tiny_model,
            ["en", "ja"],
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


@pytest.mark.parametrize("budget", [150, 900, 100_000])
def test_long_texts_are_cut_into_the_same_pieces_streamed_or_not(
    tiny_model, same_text, budget, monkeypatch
):
    """With pieces of ~300 characters (1 MB in use), a file and a stream of the same text
    are tokenized piece by piece at the same places: the same windows and counts."""
    from langneurons import corpus

    monkeypatch.setattr(corpus, "TOKENIZE_PIECE_CHARS", 300)
    folder, jsonl = same_text
    files, streamed = _files_and_stream(tiny_model, folder, jsonl, budget)
    assert streamed.meta["cache_keys"] == files.meta["cache_keys"]
    assert torch.equal(streamed.statistics.over_zero, files.statistics.over_zero)
    if budget == 100_000:  # more than the text: the stream read all of it
        for code in LANGS:
            read = streamed.meta["corpus"]["languages"][code]["identify_sha256"]
            assert read == files.meta["corpus"]["languages"][code]["identify_sha256"]


def test_text_pieces_rebuild_the_text_and_bound_each_call(tiny_tokenizer, monkeypatch):
    from langneurons import corpus

    text = load_corpus("udhr", ["fr"]).identify_text("fr")
    # Shorter than one piece (all of the UDHR): tokenized whole, as before pieces existed.
    whole = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert corpus.text_ids(tiny_tokenizer, text).tolist() == whole

    monkeypatch.setattr(corpus, "TOKENIZE_PIECE_CHARS", 500)
    pieces = list(corpus.text_pieces(text.split("\n")))
    assert "".join(pieces) == text and len(pieces) > 5
    longest_line = max(len(line) for line in text.split("\n"))
    assert all(len(p) <= 500 + longest_line + 1 for p in pieces)

    calls = []

    def counting(piece, **kwargs):
        calls.append(piece)
        return tiny_tokenizer(piece, **kwargs)

    ids = corpus.text_ids(counting, text, max_tokens=100)
    assert len(ids) == 100 and len(calls) < len(pieces)  # stops once the budget is met
    assert ids.tolist() == corpus.text_ids(tiny_tokenizer, text)[:100].tolist()


def test_a_bad_language_fails_before_anything_is_counted(tiny_model, same_text):
    _, jsonl = same_text
    (jsonl / "de.jsonl").write_text("")  # no records
    events = []
    with pytest.raises(CorpusError, match="for 'de': it has no records"):
        compute(
            tiny_model,
            ["en", "de"],
            corpus="hf:json",
            max_tokens=100,
            progress=events.append,
            dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        )
    assert not any(e.stage == "count" for e in events)


def test_a_broken_record_is_reported_with_its_place(tiny_model, same_text):
    _, jsonl = same_text
    good = (jsonl / "en.jsonl").read_text().splitlines()
    (jsonl / "en.jsonl").write_text("\n".join([*good[:3], "{not json", *good[3:]]) + "\n")
    with pytest.raises(CorpusError, match=r"Cannot read record .* for 'en'"):
        compute(
            tiny_model,
            ["en", "ja"],
            corpus="hf:json",
            max_tokens=5000,
            dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        )


def test_dataset_names_for_languages_fill_the_placeholder(tiny_model, same_text, tmp_path):
    """Datasets that name languages their own way (FLORES+: eng_Latn) are reached through
    --hf-lang-map; the counts are those of the same records under the plain codes."""
    _, jsonl = same_text
    flores = tmp_path / "flores"
    flores.mkdir()
    for code, name in [("en", "eng_Latn"), ("ja", "jpn_Jpan")]:
        (flores / f"{name}.jsonl").write_text((jsonl / f"{code}.jsonl").read_text())
    common = {"max_tokens": 300, "seq_len": 64, "use_cache": False, "corpus": "hf:json"}
    plain = compute(
        tiny_model,
        ["en", "ja"],
        dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        **common,
    )
    named = compute(
        tiny_model,
        ["en", "ja"],
        dataset_options={
            "data_files": str(flores / "{lang}.jsonl"),
            "language_names": "en=eng_Latn, ja=jpn_Jpan",
        },
        **common,
    )
    assert named.meta["cache_keys"] == plain.meta["cache_keys"]
    assert named.meta["corpus"]["language_names"] == {"en": "eng_Latn", "ja": "jpn_Jpan"}


def test_unreadable_language_names_are_refused(tmp_path, capsys):
    args = ["compute", "--corpus", "hf:json", "--hf-lang-map", "en:eng_Latn", "--languages"]
    args += ["en,ja", "--max-tokens", "50", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    assert "write CODE=NAME pairs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ablation_matrix_of_a_streamed_run_reads_the_held_out_records(
    tiny_model, same_text, tmp_path
):
    """The ablation matrix of a streamed run is measured on the records compute held out: the
    same numbers as for the same text read from files."""
    from langneurons.results import read_run
    from langneurons.workflows import run_ablation_matrix

    folder, jsonl = same_text
    common = {"max_tokens": 400, "seq_len": 64}
    compute(tiny_model, LANGS, corpus=str(folder), out_dir=tmp_path / "files", **common)
    compute(
        tiny_model,
        LANGS,
        corpus="hf:json",
        out_dir=tmp_path / "stream",
        dataset_options={"data_files": str(jsonl / "{lang}.jsonl")},
        **common,
    )
    files = run_ablation_matrix(tiny_model, read_run(tmp_path / "files"), max_tokens=120)
    streamed = run_ablation_matrix(tiny_model, read_run(tmp_path / "stream"), max_tokens=120)
    assert streamed.base == files.base
    assert streamed.deactivated == files.deactivated
    assert streamed.info["held_out"]["source"] == "hf:json"
    with pytest.raises(CorpusError, match="give the held-out tokens"):
        run_ablation_matrix(tiny_model, read_run(tmp_path / "stream"))
