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


def test_the_line_pass_rate_agrees_with_the_benchmarks_on_its_own_completions():
    """The Language Confusion Benchmark's released completions (``../shared/lcb``, text
    no one here wrote): the line pass rate per language, as this project computes it,
    next to the benchmark's definition with fastText's identifier (computed once with
    ``scripts/lcb_agreement.py``, kept in ``docs/lcb-line-pass.json``)."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    lcb = root.parent / "shared" / "lcb"
    assert lcb.is_dir(), f"the benchmark's files belong beside the checkout: {lcb}"
    spec = importlib.util.spec_from_file_location(
        "lcb_agreement", root / "scripts" / "lcb_agreement.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    recorded = json.loads((root / "docs" / "lcb-line-pass.json").read_text())
    for name in script.FILES:
        rows = script.read_completions(lcb / name)
        for task in ("monolingual", "crosslingual"):
            chosen = [r for r in rows if r["task"] == task]
            ours = script.by_language(chosen, script.line_verdict)
            theirs = recorded[f"{name.removesuffix('.csv')} {task}"]["benchmark_fasttext"]
            assert set(ours) == set(theirs) and len(ours) >= 14
            gaps = {code: abs(ours[code] - theirs[code]) for code in ours}
            assert sum(gaps.values()) / len(gaps) < 0.02, (name, task, gaps)
            assert max(gaps.values()) <= 0.105, (name, task, gaps)
