"""The three-way split (language-specific / related / general) against a plain port of
the authors' formula and search, and on a constructed case whose answer is known."""

from __future__ import annotations

import pytest
import torch

from langneurons.config import ConfigError
from langneurons.selection import ThreeWayConfig, select, three_way_select
from langneurons.selection.three_way import GENERAL, RELATED, SPECIFIC, three_way_score

from . import reference_three_way as reference
from .test_selection import _random_counts


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weight", [0.0, 0.05, 0.15])
def test_score_and_selection_match_the_plain_port(seed, weight):
    over_zero, tokens = _random_counts(seed, layers=3, neurons=60, langs=4)
    probs = over_zero.float() / tokens.float()
    assert torch.allclose(
        three_way_score(probs, weight), reference.scores(probs, weight), atol=1e-6
    )
    config = ThreeWayConfig(top_rate=0.05, fixed_weight=True, weight=weight)
    ours = three_way_select(over_zero, tokens, config)
    theirs = reference.masks(probs, weight, 0.05, 0.95)
    assert [[m.tolist() for m in per] for per in ours.masks] == theirs


@pytest.mark.parametrize("seed", range(3))
def test_the_weight_search_matches_the_plain_port(seed):
    over_zero, tokens = _random_counts(seed, layers=3, neurons=60, langs=4)
    probs = over_zero.float() / tokens.float()
    config = ThreeWayConfig(top_rate=0.05, max_weight=0.5, tolerance=0.01)
    ours = three_way_select(over_zero, tokens, config)
    expected = reference.search(probs, 0.05, 0.95, high=0.5, eps=0.01)
    assert ours.thresholds["weight"] == pytest.approx(expected if expected is not None else 0.0)


def _constructed():
    """Ten neurons per layer, three languages: two fire for one language only, one for two
    languages, one for all three, six barely fire.  The general neuron fires most, so a
    large enough weight takes it in: the search must stop just below that weight."""
    tokens = torch.tensor([1000, 1000, 1000])
    rates = torch.full((1, 10, 3), 0.01)
    rates[0, 0] = torch.tensor([0.6, 0.0, 0.0])  # en only
    rates[0, 1] = torch.tensor([0.0, 0.6, 0.0])  # fr only
    rates[0, 2] = torch.tensor([0.5, 0.5, 0.0])  # en and fr
    rates[0, 3] = torch.tensor([0.9, 0.9, 0.9])  # everyone's
    return (rates * tokens).round().to(torch.int64), tokens


def test_the_search_stops_just_before_a_neuron_of_every_language_gets_in():
    over_zero, tokens = _constructed()
    # Three of ten neurons are selected; the general one (entropy 1, peak 0.9) overtakes
    # the two-language one (entropy log2/log3, peak 0.5) once the weight passes w*.
    harmonic = (1 + 1 / 2 + 1 / 3) / 3
    entropy_two = torch.log(torch.tensor(2.0)) / torch.log(torch.tensor(3.0))
    w_star = float((1 - entropy_two) * harmonic / (0.9 - 0.5))
    config = ThreeWayConfig(top_rate=0.3, activation_bar_ratio=0.75, max_weight=1.0, tolerance=1e-4)
    selection = three_way_select(over_zero, tokens, config, ["en", "fr", "ja"])
    assert selection.thresholds["weight"] == pytest.approx(w_star, abs=2e-4)
    assert selection.thresholds["weight"] < w_star
    assert [m[0].tolist() for m in selection.masks] == [[0, 2], [1, 2], []]
    kind = selection.scores["kind"][0].tolist()
    assert kind[:4] == [SPECIFIC, SPECIFIC, RELATED, GENERAL] and set(kind[4:]) == {0}
    assert selection.thresholds["specific"] == 2 and selection.thresholds["related"] == 1
    assert selection.thresholds["general"] == 1
    # Past w*, the general neuron is selected, for every language.
    past = ThreeWayConfig(
        top_rate=0.3, activation_bar_ratio=0.75, fixed_weight=True, weight=w_star * 1.01
    )
    assert 3 in three_way_select(over_zero, tokens, past).masks[2][0].tolist()


def test_registered_and_validated():
    from langneurons.stats import Statistics

    over_zero, tokens = _constructed()
    zeros = torch.zeros(over_zero.shape, dtype=torch.float64)
    stats = Statistics(["en", "fr", "ja"], over_zero, tokens, zeros, zeros)
    selection = select(stats, "three-way", top_rate=0.3, activation_bar_ratio=0.75)
    assert selection.method == "three-way" and selection.languages == ["en", "fr", "ja"]
    assert selection.specificity() is not None
    with pytest.raises(ConfigError):
        ThreeWayConfig(top_rate=0.0)
    with pytest.raises(ConfigError):
        ThreeWayConfig(weight=-1.0)
