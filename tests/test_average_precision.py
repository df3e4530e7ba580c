"""The average-precision detector (Kojima et al. 2024) and the per-sample activations it
reads: AP against a literal loop over thresholds, the selection on a constructed case,
and the samples of a tiny model against a naive capture, cached and reused."""

from __future__ import annotations

import pytest
import torch

from langneurons.corpus import load_corpus
from langneurons.errors import LangNeuronsError
from langneurons.samples import SampleActivations, SampleConfig, collect_samples
from langneurons.selection import (
    DETECTORS,
    AveragePrecisionConfig,
    average_precision,
    average_precision_select,
    select,
)


def _literal_ap(scores: list[float], positive: list[bool]) -> float:
    """AP = sum over distinct thresholds t (descending) of (R(t) - R(previous t)) * P(t),
    where everything scoring >= t is predicted positive."""
    total = sum(positive)
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        predicted = [p for s, p in zip(scores, positive, strict=True) if s >= threshold]
        true_pos = sum(predicted)
        recall = true_pos / total
        ap += (recall - previous_recall) * (true_pos / len(predicted))
        previous_recall = recall
    return ap


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_a_literal_loop_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    # Values rounded to a few levels so that many samples tie.
    scores = torch.randint(0, 6, (40, 25), generator=generator).float() / 5
    positive = torch.rand(40, generator=generator) < 0.3
    positive[0] = True
    ours = average_precision(scores, positive)
    for column in range(scores.shape[1]):
        expected = _literal_ap(scores[:, column].tolist(), positive.tolist())
        assert float(ours[column]) == pytest.approx(expected, abs=1e-6)


def test_average_precision_of_perfect_useless_and_reversed_rankings():
    positive = torch.tensor([True, True, False, False, False])
    perfect = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    constant = torch.zeros(5)
    reversed_ = -perfect
    ap = average_precision(torch.stack([perfect, constant, reversed_], dim=1), positive)
    assert float(ap[0]) == pytest.approx(1.0)
    assert float(ap[1]) == pytest.approx(2 / 5)  # one threshold: everything predicted
    assert float(ap[2]) == pytest.approx((1 / 4 + 2 / 5) / 2)
    with pytest.raises(LangNeuronsError, match="positive"):
        average_precision(perfect[:, None], torch.zeros(5, dtype=torch.bool))


def _constructed() -> SampleActivations:
    """Three languages, 20 samples each, one layer of six neurons: neuron 0 is high on en
    only, neuron 1 on fr only, neuron 2 on en and de, neuron 3 high on all but de,
    neurons 4-5 noise."""
    generator = torch.Generator().manual_seed(0)
    language = torch.arange(3).repeat_interleave(20)
    means = torch.rand(60, 1, 6, generator=generator) * 0.1
    means[language == 0, 0, 0] += 1
    means[language == 1, 0, 1] += 1
    means[language != 1, 0, 2] += 1
    means[language != 2, 0, 3] += 1
    return SampleActivations(["en", "fr", "de"], language, means.to(torch.float16), 8)


def test_the_selection_takes_the_neurons_that_rank_their_language_first():
    samples = _constructed()
    # 6 neurons * 0.5 / 3 languages = one neuron per language.
    chosen = average_precision_select(samples, AveragePrecisionConfig(top_rate=0.5, min_ap=0.9))
    assert chosen.masks[0][0].tolist() == [0]
    assert chosen.masks[1][0].tolist() == [1]
    assert chosen.masks[2][0].tolist() == []  # no neuron ranks de first with AP >= 0.9
    bottom = average_precision_select(
        samples, AveragePrecisionConfig(top_rate=0.5, min_ap=0.9, bottom=True)
    )
    assert bottom.masks[2][0].tolist() == [3]  # quiet on de, high on everything else
    ap = chosen.scores["average_precision"]
    assert ap.shape == (1, 6, 3)
    assert float(ap[0, 0, 0]) == pytest.approx(1.0)
    assert float(ap[0, 2, 0]) == pytest.approx(0.5, abs=0.15)  # en and de share it


def test_select_asks_for_samples_and_names_the_way_to_get_them(tiny_model):
    assert DETECTORS["average-precision"].needs_samples
    with pytest.raises(LangNeuronsError, match="compute --method average-precision"):
        select(None, "average-precision")
    chosen = select(None, "average-precision", samples=_constructed(), top_rate=0.5)
    assert chosen.method == "average-precision"


def _naive_means(lm, windows, size):
    captured = {i: [] for i in range(lm.num_layers)}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, i=i: captured[i].append(out.detach()))
        for i, module in enumerate(lm.modules)
    ]
    try:
        with torch.no_grad():
            for window in sorted(windows, key=len, reverse=True):
                lm.model(input_ids=window[None])
    finally:
        for handle in handles:
            handle.remove()
    per_layer = []
    for layer in range(lm.num_layers):
        rows = []
        for values in captured[layer]:
            values = values.reshape(-1, values.shape[-1])[1:]  # BOS skipped
            for start in range(0, len(values), size):
                part = values[start : start + size]
                if 2 * len(part) >= size:
                    rows.append(part.float().mean(dim=0))
        per_layer.append(torch.stack(rows))
    return torch.stack(per_layer, dim=1)


def test_samples_of_a_tiny_model_equal_a_naive_capture_and_are_cached(tiny_model, monkeypatch):
    from langneurons import samples as samples_module
    from langneurons.config import CountingConfig
    from langneurons.corpus import tokenize_windows

    corpus = load_corpus("udhr", ["en", "fr"])
    counting = CountingConfig(max_tokens=300, seq_len=64)
    got = collect_samples(
        tiny_model, corpus, ["en", "fr"], config=SampleConfig(sample_tokens=16), counting=counting
    )
    assert got.languages == ["en", "fr"]
    windows = tokenize_windows(
        tiny_model.tokenizer, corpus.identify_text("en"), max_tokens=300, seq_len=64
    )
    expected = _naive_means(tiny_model, windows, 16)
    en = got.means[got.language == 0].float()
    assert en.shape == expected.shape
    assert torch.allclose(en, expected, atol=2e-3, rtol=1e-2)
    counts = got.counts()
    assert counts["en"] == expected.shape[0] and counts["fr"] > 0

    def fail(*_args, **_kwargs):
        raise AssertionError("cached samples must not be computed again")

    monkeypatch.setattr(samples_module, "language_sample_means", fail)
    again = collect_samples(
        tiny_model, corpus, ["en", "fr"], config=SampleConfig(sample_tokens=16), counting=counting
    )
    assert torch.equal(again.means, got.means)
    # Another sample size is another key: computed, not read.
    with pytest.raises(AssertionError, match="computed again"):
        collect_samples(
            tiny_model,
            corpus,
            ["en", "fr"],
            config=SampleConfig(sample_tokens=8),
            counting=counting,
        )
