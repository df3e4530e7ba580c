"""Held-out NLL (chunked head), generation, and language identification."""

from __future__ import annotations

import math

import pytest
import torch

from langneurons.corpus import load_corpus
from langneurons.errors import CorpusError
from langneurons.evaluation import AblationMatrix, ablation_matrix, eval_windows, mean_nll

from .conftest import FAMILY_TYPES


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
