"""Held-out NLL (chunked head), generation, and language identification."""

from __future__ import annotations

import math

import pytest
import torch

from langneurons.corpus import load_corpus
from langneurons.errors import CorpusError, LangNeuronsError
from langneurons.evaluation import AblationMatrix, ablation_matrix, eval_windows, mean_nll
from langneurons.generation import GenerationConfig, generate, stream
from langneurons.interventions import deactivate
from langneurons.langid import detect_language

from .conftest import FAMILY_TYPES
from .test_corpus import REQUIRED


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_chunked_nll_equals_the_models_own_loss(make_tiny_model, tiny_tokenizer, model_type):
    lm = make_tiny_model(model_type)
    text = load_corpus("udhr", ["fr"]).evaluate_text("fr")
    windows = eval_windows(lm, text, seq_len=64, max_tokens=None)
    ours = mean_nll(lm, windows, batch_size=3, chunk_positions=17)
    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            loss = lm.model(input_ids=window[None], labels=window[None]).loss
            total += float(loss) * (len(window) - 1)
            count += len(window) - 1
    assert ours == pytest.approx(total / count, rel=1e-4)


def test_deactivation_changes_nll_and_matrix_shape(tiny_model):
    corpus = load_corpus("udhr", ["en", "de"])
    everything = [torch.arange(tiny_model.num_neurons)] * tiny_model.num_layers
    masks = [everything, [torch.tensor([], dtype=torch.int64)] * tiny_model.num_layers]
    result = ablation_matrix(tiny_model, masks, ["en", "de"], corpus, max_tokens=60)
    assert result.languages == ["en", "de"]
    assert set(result.deactivated) == {"en", "de"}
    # Switching every neuron off changes the NLL; an empty set changes nothing.
    assert result.deactivated["en"]["de"] != pytest.approx(result.base["de"])
    assert result.deactivated["de"]["en"] == pytest.approx(result.base["en"])
    # The three scales of one matrix, and its JSON round trip.
    nll, ppl, increase = (result.grid(s) for s in ("nll", "perplexity", "increase"))
    assert ppl[0][1] == pytest.approx(math.exp(nll[0][1]))
    assert increase[1][0] == pytest.approx(0.0, abs=1e-9)
    assert increase[0][1] == pytest.approx(nll[0][1] - result.base["de"])
    assert AblationMatrix.from_json(result.to_json()) == result


def test_diagonal_ratio_of_a_hand_made_matrix():
    matrix = AblationMatrix(
        ["a", "b"],
        {"a": 1.0, "b": 2.0},
        {"a": {"a": 2.0, "b": 2.1}, "b": {"a": 1.3, "b": 3.0}},
    )
    # Diagonal increases 1.0 and 1.0, off-diagonal 0.1 and 0.3: ratio 1.0 / 0.2.
    assert matrix.diagonal_ratio() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="scale"):
        matrix.grid("log")


def test_too_little_held_out_text_is_explained(tiny_model):
    with pytest.raises(CorpusError, match="held-out tokens"):
        eval_windows(tiny_model, "Hi.", seq_len=64, max_tokens=None, language="en")


def test_generation_is_deterministic_streams_and_validates(tiny_model):
    config = GenerationConfig(max_new_tokens=15)
    first = generate(tiny_model, "All human beings", config)
    assert first == generate(tiny_model, "All human beings", config)
    assert "".join(stream(tiny_model, "All human beings", config)) == first
    assert len(list(stream(tiny_model, "All human beings", config))) > 1  # token by token
    sampled = GenerationConfig(max_new_tokens=15, do_sample=True, seed=7, temperature=1.5)
    assert generate(tiny_model, "All", sampled) == generate(tiny_model, "All", sampled)
    other_seed = GenerationConfig(max_new_tokens=15, do_sample=True, seed=8, temperature=1.5)
    assert generate(tiny_model, "All", other_seed) != generate(tiny_model, "All", sampled)
    off = deactivate({layer: torch.arange(48) for layer in range(2)})
    assert generate(tiny_model, "All human beings", config, off) != first
    with pytest.raises(LangNeuronsError, match="prompt is empty"):
        generate(tiny_model, "   ", config)
    for absurd in (0, -3, 10**9):
        with pytest.raises(LangNeuronsError, match="max_new_tokens"):
            GenerationConfig(max_new_tokens=absurd)
    with pytest.raises(LangNeuronsError, match="temperature"):
        GenerationConfig(temperature=0)


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
