"""Corpora: the embedded UDHR, user folders, the split, tokenization and bad input."""

from __future__ import annotations

import pytest

from langneurons.corpus import (
    MIN_IDENTIFY_TOKENS,
    available_languages,
    embedded_languages,
    load_corpus,
    split_indices,
    tokenize_windows,
)
from langneurons.errors import CorpusError

REQUIRED = [
    "en",
    "fr",
    "de",
    "es",
    "it",
    "pt",
    "nl",
    "pl",
    "ru",
    "uk",
    "tr",
    "ar",
    "fa",
    "hi",
    "bn",
    "zh",
    "ja",
    "ko",
    "vi",
    "id",
    "th",
    "sw",
    "el",
    "he",
]


def test_embedded_corpus_has_the_required_languages_as_clean_utf8():
    assert set(REQUIRED) <= set(embedded_languages())
    corpus = load_corpus("udhr", REQUIRED)
    for code in REQUIRED:
        paragraphs = corpus.texts[code].paragraphs
        assert len(paragraphs) >= 40, code
        assert all("<" not in p and "\n" not in p for p in paragraphs)
    assert "人" in corpus.texts["zh"].paragraphs[0]
    assert corpus.texts["ru"].paragraphs[0][0] in "ПпВв"  # Cyrillic, not mojibake


def test_split_is_deterministic_even_and_disjoint():
    split = split_indices(60, 0.2)
    assert split.evaluate == (4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 59)
    assert set(split.identify) | set(split.evaluate) == set(range(60))
    assert not set(split.identify) & set(split.evaluate)
    assert split_indices(60, 0.2) == split
    assert split_indices(10, 0.0).evaluate == ()
    with pytest.raises(CorpusError, match="eval_fraction"):
        split_indices(10, 1.0)


def test_describe_records_hashes_and_split():
    corpus = load_corpus("udhr", ["en", "fr"])
    record = corpus.describe(0.2)
    assert record["name"] == "udhr"
    en = record["languages"]["en"]
    assert en["evaluate_paragraphs"] == list(corpus.split("en").evaluate)
    assert len(en["sha256"]) == len(en["identify_sha256"]) == 64
    assert en["identify_sha256"] != en["evaluate_sha256"]


def test_unknown_language_says_what_is_available_and_suggests():
    with pytest.raises(CorpusError) as info:
        load_corpus("udhr", ["en", "frr"])
    assert "'frr' is not in the embedded UDHR corpus" in str(info.value)
    assert "Did you mean 'fr'" in str(info.value)
    assert "Available: af, am" in str(info.value)


@pytest.mark.parametrize(
    ("languages", "message"),
    [
        ("", "No languages given"),
        ("en,en", "listed twice"),
        ("english", "not a language code"),
        ("en,FR", "not a language code"),
    ],
)
def test_malformed_language_lists_are_refused(languages, message):
    with pytest.raises(CorpusError, match=message):
        load_corpus("udhr", languages)


def test_folder_corpus(tmp_path):
    (tmp_path / "en.txt").write_text("First paragraph.\n\nSecond one.\nThird.\n", "utf-8")
    (tmp_path / "xx-test.txt").write_text("a\nb\n", "utf-8")
    assert available_languages(str(tmp_path)) == ["en", "xx-test"]
    corpus = load_corpus(str(tmp_path), "en")
    assert corpus.texts["en"].paragraphs == ("First paragraph.", "Second one.", "Third.")
    assert corpus.texts["en"].source.endswith("en.txt")


def test_folder_with_a_byte_order_mark_reads_cleanly(tmp_path):
    (tmp_path / "fr.txt").write_bytes("\ufeffBonjour.\nSalut.\n".encode())
    assert load_corpus(str(tmp_path), "fr").texts["fr"].paragraphs[0] == "Bonjour."


def test_non_utf8_file_names_file_line_and_fix(tmp_path):
    (tmp_path / "de.txt").write_bytes("Straße\nGrüße aus Köln\n".encode("latin-1"))
    with pytest.raises(CorpusError) as info:
        load_corpus(str(tmp_path), "de")
    message = str(info.value)
    assert "de.txt is not valid UTF-8" in message and "line 1" in message
    assert "iconv" in message


def test_empty_and_one_line_files_are_refused(tmp_path):
    (tmp_path / "en.txt").write_text("\n\n   \n", "utf-8")
    (tmp_path / "fr.txt").write_text("Une seule ligne.", "utf-8")
    with pytest.raises(CorpusError, match="has 0 non-empty line"):
        load_corpus(str(tmp_path), "en")
    with pytest.raises(CorpusError, match="at least two"):
        load_corpus(str(tmp_path), "fr")


def test_missing_folder_and_folder_without_texts(tmp_path):
    with pytest.raises(CorpusError, match="neither 'udhr'"):
        load_corpus(str(tmp_path / "nope"), "en")
    with pytest.raises(CorpusError, match=r"has no <code>\.txt files"):
        load_corpus(str(tmp_path), "en")


def test_windows_start_with_bos_and_respect_budget(tiny_tokenizer):
    text = load_corpus("udhr", ["en"]).identify_text("en")
    windows = tokenize_windows(tiny_tokenizer, text, max_tokens=250, seq_len=100)
    assert [len(w) for w in windows] == [100, 100, 53]
    assert all(int(w[0]) == tiny_tokenizer.bos_token_id for w in windows)
    assert sum(len(w) - 1 for w in windows) == 250


def test_too_short_text_is_refused_with_the_numbers(tiny_tokenizer):
    with pytest.raises(CorpusError) as info:
        tokenize_windows(tiny_tokenizer, "Hello world.", max_tokens=None, seq_len=64, language="en")
    assert "'en' has only" in str(info.value)
    assert str(MIN_IDENTIFY_TOKENS) in str(info.value)
