"""Results as DataFrames: the neurons table, per-layer counts, overlap, the ablation
matrix and the trace, each against the structure it is built from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langneurons.evaluation import AblationMatrix
from langneurons.pipeline import compute
from langneurons.tables import language_overlap, layer_counts, neurons_table


@pytest.fixture
def result(tiny_model):
    from langneurons.selection import LapeConfig

    return compute(
        tiny_model, ["en", "fr", "de"], max_tokens=300, selection=LapeConfig(top_rate=0.05)
    )


def test_the_neurons_table_has_a_row_per_neuron_and_language(result):
    selection, stats = result.selection, result.statistics
    table = result.neurons_table()
    assert list(table.columns) == ["language", "layer", "neuron", "entropy", "p_en", "p_fr", "p_de"]
    for code in selection.languages:
        assert (table["language"] == code).sum() == selection.language_total(code)
    row = table.iloc[0]
    layer, neuron = int(row["layer"]), int(row["neuron"])
    assert row["entropy"] == pytest.approx(float(selection.scores["entropy"][layer, neuron]))
    k = stats.languages.index("fr")
    assert row["p_fr"] == pytest.approx(float(stats.probabilities()[layer, neuron, k]))
    counts = layer_counts(selection)
    assert counts.to_numpy().tolist() == selection.counts().tolist()
    assert (
        counts.sum().to_dict()
        == table.groupby("language").size().reindex(selection.languages, fill_value=0).to_dict()
    )
    shared = language_overlap(selection, "shared")
    assert [shared.loc[c, c] for c in selection.languages] == [
        selection.language_total(c) for c in selection.languages
    ]
    assert np.allclose(np.diag(language_overlap(selection).to_numpy()), 1.0)
    with pytest.raises(ValueError, match="kind"):
        language_overlap(selection, "cosine")


def test_a_score_per_language_is_the_rows_own_language(tiny_model):
    from langneurons.selection import MeanDiffConfig

    found = compute(
        tiny_model, ["en", "fr"], max_tokens=300, selection=MeanDiffConfig(min_effect=0.0)
    )
    table = neurons_table(found.selection, found.statistics)
    effect = found.selection.scores["effect"]
    for row in table.head(20).itertuples():
        k = found.selection.languages.index(row.language)
        assert row.effect == pytest.approx(float(effect[row.layer, row.neuron, k]))


def test_the_ablation_matrix_as_a_frame():
    matrix = AblationMatrix(
        ["a", "b"],
        {"a": 1.0, "b": 2.0},
        {"a": {"a": 2.0, "b": 2.1}, "b": {"a": 1.3, "b": 3.0}},
    )
    frame = matrix.to_frame()
    assert list(frame.index) == ["unmodified", "a", "b"]
    assert frame.loc["a", "b"] == 2.1 and frame.loc["unmodified", "b"] == 2.0
    assert frame.loc["b", "b"] == matrix.grid()[1][1]
    increase = matrix.to_frame("increase")
    assert increase.loc["unmodified"].tolist() == [0.0, 0.0]
    assert increase.loc["b", "b"] == pytest.approx(1.0)
    assert matrix.to_frame("perplexity").loc["unmodified", "a"] == pytest.approx(math.e)


def test_the_trace_in_long_form(tiny_model, result):
    from langneurons.trace import TraceSpec, trace_text

    spec = TraceSpec.from_masks(result.selection.masks, result.selection.languages)
    trace = trace_text(tiny_model, spec, "Everyone has the right to life")
    frame = trace.to_frame()
    tokens, layers, langs = len(trace.tokens), trace.layers, len(trace.languages)
    assert len(frame) == tokens * layers * langs
    assert list(frame.columns) == ["position", "token", "layer", "language", "activity", "dominant"]
    values = trace.activity()
    pick = frame[(frame["position"] == 2) & (frame["layer"] == 1) & (frame["language"] == "fr")]
    expected = values[2, 1, trace.languages.index("fr")]
    got = float(pick["activity"].iloc[0])
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
    assert pick["token"].iloc[0] == trace.tokens[2]
    assert pick["dominant"].iloc[0] == trace.dominant()[2]
