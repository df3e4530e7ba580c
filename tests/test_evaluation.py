"""Held-out NLL (chunked head), generation, and language identification."""

from __future__ import annotations

import math
import re

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


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda d: d.update(languages=["en", "en"]), "listed twice"),
        (lambda d: d.update(languages="en,de"), "'languages'"),
        (lambda d: d["base"].update(en="low"), "'base'['en'] is not a number"),
        (lambda d: d["base"].update(en=float("nan")), "'base'['en'] is not finite"),
        (lambda d: d["base"].pop("de"), "'base' is not one NLL per language"),
        (lambda d: d.update(deactivated=[]), "'deactivated' is not one row"),
        (lambda d: d["deactivated"]["en"].update(de=None), "'deactivated'['en']['de']"),
    ],
)
def test_a_damaged_ablation_matrix_names_its_field(damage, says):
    import copy

    from langneurons.errors import ResultsError

    good = {
        "languages": ["en", "de"],
        "base": {"en": 2.0, "de": 3.0},
        "deactivated": {"en": {"en": 4.0, "de": 3.1}, "de": {"en": 2.1, "de": 5.0}},
    }
    assert AblationMatrix.from_json(good).diagonal_ratio() > 1
    document = copy.deepcopy(good)
    damage(document)
    with pytest.raises(ResultsError, match=re.escape(says)):
        AblationMatrix.from_json(document)


def test_the_ablation_cache_recomputes_a_damaged_entry_and_says_a_failed_write(
    tiny_model, tmp_path, monkeypatch
):
    import json

    import langneurons.evaluation as evaluation
    from langneurons.evaluation import cached_ablation_matrix

    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path))
    corpus = load_corpus("udhr", ["en", "de"])
    masks = [[torch.tensor([0, 1])] * tiny_model.num_layers] * 2
    first = cached_ablation_matrix(tiny_model, masks, ["en", "de"], corpus, max_tokens=40)
    (entry,) = (tmp_path / "ablation").glob("*.json")
    document = json.loads(entry.read_text())
    document["base"]["en"] = "broken"
    entry.write_text(json.dumps(document))
    events = []
    again = cached_ablation_matrix(
        tiny_model, masks, ["en", "de"], corpus, max_tokens=40, progress=events.append
    )
    assert again.base == first.base  # computed again, not read as "broken"
    assert any(e.stage == "evaluate" for e in events)
    assert json.loads(entry.read_text())["base"]["en"] == first.base["en"]  # repaired

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    entry.unlink()
    monkeypatch.setattr(evaluation, "write_json_file", full)
    events.clear()
    cached_ablation_matrix(
        tiny_model, masks, ["en", "de"], corpus, max_tokens=40, progress=events.append
    )
    said = [e.message for e in events if e.stage == "cache"]
    assert len(said) == 1 and "No space left on device" in said[0] and "kept" in said[0]
