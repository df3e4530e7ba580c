"""Views of statistics and single neurons (tiny models and hand-made selections)."""

from __future__ import annotations

import numpy as np
import torch

from langneurons import analysis
from langneurons.corpus import load_corpus
from langneurons.selection import Selection


def _selection() -> Selection:
    masks = [
        [torch.tensor([1, 2]), torch.tensor([0])],
        [torch.tensor([2]), torch.tensor([], dtype=torch.int64)],
    ]
    return Selection("lape", ["en", "fr"], masks, {})


def test_overlap_counts_and_jaccard():
    counts, jaccard = analysis.overlap(_selection())
    assert counts.tolist() == [[3, 1], [1, 1]]
    assert jaccard[0, 1] == 1 / 3 and jaccard[1, 1] == 1.0
    assert analysis.single_language_share(_selection()) == 2 / 3


def test_pool_columns_keeps_extremes():
    matrix = np.arange(20, dtype=float).reshape(2, 10)
    pooled, width = analysis.pool_columns(matrix, max_columns=4)
    assert width == 3 and pooled.shape == (2, 4)
    assert pooled[0].tolist() == [2, 5, 8, 9]
    same, one = analysis.pool_columns(matrix, max_columns=10)
    assert one == 1 and same is matrix


def test_membership_mask():
    mask = analysis.membership_mask(_selection(), None, (2, 4))
    assert mask.tolist() == [[False, True, True, False], [True, False, False, False]]
    assert analysis.membership_mask(_selection(), 1, (2, 4)).sum() == 1


def test_promoted_tokens_and_passages_on_every_layout(make_tiny_model):
    corpus = load_corpus("udhr", ["en", "fr"])
    for model_type in ("llama", "gpt2", "opt", "bloom", "gpt_neox"):
        lm = make_tiny_model(model_type)
        tokens = analysis.promoted_tokens(lm, 1, 5, k=4)
        assert len(tokens["up"]) == len(tokens["down"]) == 4
        assert tokens["up"][0][1] >= tokens["up"][-1][1]
        activations = analysis.layer_activations(lm, corpus, ["en", "fr"], 0, 2)
        assert len(activations) == 4
        code, words, values = activations[0]
        assert code == "en" and values.shape == (len(words), lm.num_neurons)
        top = analysis.top_passages(activations, neuron=3, k=2)
        assert top[0].peak >= top[1].peak


def test_projections():
    vectors = np.random.default_rng(0).random((300, 4))
    assert analysis.pca_2d(vectors).shape == (300, 2)
    coords = analysis.umap_2d(vectors)
    assert coords.shape == (300, 2) and np.isfinite(coords).all()


def test_most_specific_neuron_follows_the_score():
    selection = _selection()
    assert analysis.most_specific_neuron(selection, (2, 3)) == (0, 1)  # no score: first
    entropy = torch.full((2, 3), 5.0)
    entropy[0, 2] = 0.1
    selection.scores, selection.score_key = {"entropy": entropy}, "entropy"
    assert analysis.most_specific_neuron(selection, (2, 3)) == (0, 2)
    empty = Selection("lape", ["en"], [[torch.tensor([], dtype=torch.int64)] * 2], {})
    assert analysis.most_specific_neuron(empty, (2, 3)) == (1, 0)


def test_map_points_keep_every_selected_neuron_and_sample_the_rest():
    from langneurons.stats import Statistics

    over_zero = torch.randint(0, 100, (2, 3, 2))
    stats = Statistics(
        ["en", "fr"],
        over_zero,
        torch.tensor([100, 100]),
        torch.zeros(2, 3, 2, dtype=torch.float64),
        torch.zeros(2, 3, 2, dtype=torch.float64),
    )
    points = analysis.map_points(stats, _selection(), limit=4)
    assert len(points.index) == 4
    assert {1, 2, 3} <= set(points.index.tolist())  # selected: (0,1), (0,2), (1,0)
    assert points.selected.sum() == 3
    assert points.vectors.shape == (4, 2)
    assert points.labels[0].startswith("layer 0, neuron")
    everything = analysis.map_points(stats, _selection(), limit=100)
    assert len(everything.index) == 6
    expected = (over_zero.reshape(-1, 2).float() / 100).argmax(1).numpy()
    assert (everything.dominant == expected).all()
