"""LAPE selection against a literal port of the reference, and on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.selection import (
    LapeConfig,
    MeanDiffConfig,
    lape_entropy,
    lape_select,
    mean_difference_select,
    select,
)
from langneurons.stats import Statistics

from .reference_lape import reference_masks


def _random_counts(seed: int, layers: int = 6, neurons: int = 200, langs: int = 5):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(500, 3000, (langs,), generator=gen)
    # Mostly similar rates, with a few neurons that prefer one or two languages.
    base = torch.rand(layers, neurons, 1, generator=gen) * 0.6
    rates = (base + 0.05 * torch.rand(layers, neurons, langs, generator=gen)).clamp(0, 1)
    special = torch.rand(layers, neurons, generator=gen) < 0.03
    boost = torch.zeros(layers, neurons, langs)
    boost[special, torch.randint(0, langs, (int(special.sum()),), generator=gen)] = 0.4
    rates = (rates + boost).clamp(0, 1)
    over_zero = (rates * tokens).round().to(torch.int64)
    return over_zero, tokens


def _entropy_cutoff_unique(over_zero, tokens, top_rate) -> bool:
    sel = lape_select(over_zero, tokens, LapeConfig(top_rate=top_rate))
    ordered = torch.sort(sel.scores["entropy"].flatten()).values
    k = round(ordered.numel() * top_rate)
    return bool(ordered[k - 1] != ordered[k])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rates", [(0.01, 0.95, 0.95), (0.02, 0.9, 0.95), (0.05, 0.8, 0.7)])
def test_lape_matches_reference_port(seed, rates):
    over_zero, tokens = _random_counts(seed)
    top_rate, filter_rate, bar_ratio = rates
    if not _entropy_cutoff_unique(over_zero, tokens, top_rate):
        pytest.skip("tie exactly at the cut-off: the reference's choice is unspecified there")
    ours = lape_select(over_zero, tokens, LapeConfig(top_rate, filter_rate, bar_ratio))
    theirs = reference_masks(over_zero, tokens, top_rate, filter_rate, bar_ratio)
    assert len(ours.masks) == len(theirs) == tokens.numel()
    for k in range(tokens.numel()):
        for layer in range(over_zero.shape[0]):
            assert torch.equal(ours.masks[k][layer], theirs[k][layer]), (k, layer)
    assert sum(len(t) for m in ours.masks for t in m) > 0


def test_the_random_cases_have_no_cutoff_ties():
    # The comparison above must not skip its way to green.
    for seed in range(6):
        over_zero, tokens = _random_counts(seed)
        assert _entropy_cutoff_unique(over_zero, tokens, 0.01)


def _counts(rows: list[list[int]], tokens: list[int]):
    """One layer of hand-made counts: rows are neurons, columns languages."""
    return torch.tensor([rows], dtype=torch.int64), torch.tensor(tokens, dtype=torch.int64)


def test_entropy_handles_zero_and_dead_neurons():
    probs = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.2, 0.2, 0.2]])
    entropy = lape_entropy(probs)
    assert entropy[0] == 0  # 0/0 -> 0, no NaN
    assert entropy[1] == 0
    assert entropy[2] == pytest.approx(torch.log(torch.tensor(3.0)).item(), rel=1e-6)


def test_dead_neurons_are_never_selected():
    # 20 neurons: 19 dead (never fire), one fires for language 0 only.
    rows = [[0, 0]] * 19 + [[90, 0]]
    over_zero, tokens = _counts(rows, [100, 100])
    sel = lape_select(over_zero, tokens, LapeConfig(top_rate=0.5))
    # Dead neurons have zero entropy but exceed the threshold for no language: excluded.
    assert torch.isinf(sel.scores["entropy"][0, :19]).all()
    assert sel.masks[0][0].tolist() == [19]
    assert sel.masks[1][0].tolist() == []


def test_neuron_shared_by_two_languages_belongs_to_both():
    rows = [[10, 10, 10]] * 16 + [[80, 80, 0], [0, 0, 90], [50, 50, 50], [30, 5, 5]]
    over_zero, tokens = _counts(rows, [100, 100, 100])
    sel = lape_select(
        over_zero, tokens, LapeConfig(top_rate=0.1, filter_rate=0.8, activation_bar_ratio=0.8)
    )
    # Candidates: the two lowest-entropy neurons that pass the filter: 17 (one language)
    # and 16 (two languages).  Neuron 16 goes to languages 0 and 1.
    assert sel.thresholds["candidates"] == 2
    assert sel.masks[0][0].tolist() == [16]
    assert sel.masks[1][0].tolist() == [16]
    assert sel.masks[2][0].tolist() == [17]


def test_ties_at_the_cutoff_are_taken_in_layer_neuron_order():
    # Four neurons with identical single-language profiles, only two fit the budget.
    rows = [[5, 5]] * 16 + [[0, 60], [60, 0], [0, 60], [60, 0]]
    over_zero, tokens = _counts(rows, [100, 100])
    sel = lape_select(
        over_zero, tokens, LapeConfig(top_rate=0.1, filter_rate=0.9, activation_bar_ratio=0.9)
    )
    assert sel.thresholds["candidates"] == 2
    assert sel.masks[1][0].tolist() == [16]
    assert sel.masks[0][0].tolist() == [17]


def test_every_language_gets_an_entry_even_without_neurons():
    rows = [[5, 5, 5]] * 19 + [[90, 0, 0]]
    over_zero, tokens = _counts(rows, [100, 100, 100])
    sel = lape_select(over_zero, tokens, LapeConfig(top_rate=0.05))
    assert len(sel.masks) == 3
    assert [len(m[0]) for m in sel.masks] == [1, 0, 0]
    document = sel.to_json()
    assert document["neurons"]["2"]["total"] == 0


def test_selection_spans_layers_globally_not_per_layer():
    over_zero = torch.full((3, 10, 2), 20, dtype=torch.int64)
    over_zero[2, 4] = torch.tensor([95, 0])
    over_zero[2, 7] = torch.tensor([0, 97])
    tokens = torch.tensor([100, 100])
    sel = lape_select(
        over_zero, tokens, LapeConfig(top_rate=0.07, filter_rate=0.9, activation_bar_ratio=0.9)
    )
    assert sel.counts()[:, 0].tolist() == [0, 0, 1]
    assert sel.counts()[:, 1].tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "kwargs",
    [{"top_rate": 0}, {"top_rate": 1.5}, {"filter_rate": -0.1}, {"activation_bar_ratio": 2}],
)
def test_thresholds_are_validated(kwargs):
    with pytest.raises(LangNeuronsError, match=f"{next(iter(kwargs))} must be"):
        LapeConfig(**kwargs)


def test_bad_shapes_and_empty_languages_are_refused():
    with pytest.raises(LangNeuronsError, match="layers, neurons, languages"):
        lape_select(torch.zeros(3, 4, dtype=torch.int64), torch.tensor([1, 2]))
    with pytest.raises(LangNeuronsError, match="at least one counted token"):
        lape_select(torch.zeros(1, 4, 2, dtype=torch.int64), torch.tensor([0, 2]))


def _stats_from_profiles(means: torch.Tensor, tokens: int = 400) -> Statistics:
    """Statistics whose neurons have the given mean per language and unit variance."""
    _layers, _neurons, langs = means.shape
    n = torch.full((langs,), tokens, dtype=torch.int64)
    sums = means.double() * tokens
    sq = (means.double() ** 2 + 1.0) * tokens
    over_zero = (torch.sigmoid(means) * tokens).round().to(torch.int64)
    return Statistics([f"l{k}" for k in range(langs)], over_zero, n, sums, sq)


def test_mean_difference_finds_the_neurons_that_stand_out():
    means = torch.zeros(2, 50, 3)
    means[1, 7, 0] = 3.0  # language 0
    means[0, 3, 2] = 2.5  # language 2
    stats = _stats_from_profiles(means)
    sel = mean_difference_select(stats, MeanDiffConfig(top_rate=0.03, min_effect=1.0))
    assert sel.masks[0][1].tolist() == [7]
    assert sel.masks[2][0].tolist() == [3]
    assert all(len(t) == 0 for t in sel.masks[1])
    assert sel.scores["effect"].shape == (2, 50, 3)


def test_select_dispatches_by_name_and_rejects_unknown_methods():
    stats = _stats_from_profiles(torch.randn(2, 50, 3))
    assert select(stats, "lape").method == "lape"
    assert select(stats, "mean-diff", top_rate=0.1).method == "mean-diff"
    with pytest.raises(LangNeuronsError, match="Unknown selection method 'pca'"):
        select(stats, "pca")
    with pytest.raises(LangNeuronsError, match="min_effect"):
        select(stats, "lape", min_effect=1.0)


def test_select_takes_a_settings_object_and_the_registry_names_every_detector():
    from langneurons.selection import DETECTORS, detector, detector_for, make_config

    stats = _stats_from_profiles(torch.randn(2, 50, 3))
    by_object = select(stats, MeanDiffConfig(top_rate=0.1))
    assert by_object.method == "mean-diff"
    by_name = select(stats, "mean-diff", top_rate=0.1)
    assert all(
        torch.equal(a, b)
        for x, y in zip(by_object.masks, by_name.masks, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    with pytest.raises(LangNeuronsError, match="not both"):
        select(stats, LapeConfig(), top_rate=0.1)
    from langneurons.samples import SampleActivations

    samples = SampleActivations(
        stats.languages, torch.arange(3).repeat(4), torch.randn(12, 2, 50).half(), 8
    )
    for name, found in DETECTORS.items():
        assert detector(name) is found
        assert detector_for(found.config_type()) is found
        assert select(stats, make_config(name), samples=samples).method == name
    with pytest.raises(LangNeuronsError, match="Did you mean 'lape'"):
        detector("lapee")


def test_owners_and_specificity_of_a_selection():
    over_zero = torch.zeros(2, 6, 3, dtype=torch.int64)
    tokens = torch.tensor([100, 100, 100])
    over_zero[0, 1] = torch.tensor([90, 1, 1])  # en only
    over_zero[1, 4] = torch.tensor([80, 80, 0])  # en and fr
    over_zero[1, 5] = torch.tensor([0, 0, 95])  # de only
    sel = lape_select(
        over_zero,
        tokens,
        LapeConfig(top_rate=0.25, filter_rate=0.9, activation_bar_ratio=0.9),
        languages=["en", "fr", "de"],
    )
    assert sel.owners(0, 1) == ["en"]
    assert sel.owners(1, 4) == ["en", "fr"]
    assert sel.owners(1, 5) == ["de"]
    assert sel.owners(0, 0) == []
    specificity = sel.specificity()
    assert specificity is not None and specificity.shape == (2, 6)
    # Lower entropy is more specific: a one-language neuron beats a two-language one.
    assert specificity[1, 5] > specificity[1, 4]
    assert sel.counts().tolist() == [[1, 0, 0], [1, 1, 1]]
    assert sel.language_total("en") == 2
    imported = type(sel)("imported", sel.languages, sel.masks, {})
    assert imported.specificity() is None
