"""Detectors side by side: selections, overlap, and their neurons' measured effects."""

from __future__ import annotations

import json
import math

import pytest

from langneurons.comparison import compare_detectors, jaccard
from langneurons.errors import LangNeuronsError
from langneurons.pipeline import compute
from langneurons.results import read_run
from langneurons.selection import DETECTORS, METHODS, select


@pytest.fixture
def tiny_folder(tiny_model, tmp_path):
    compute(tiny_model, ["en", "fr", "de"], max_tokens=400, out_dir=tmp_path / "run")
    return read_run(tmp_path / "run")


def test_selections_alone_need_no_model(tiny_folder):
    comparison = compare_detectors(None, tiny_folder, effects=False)
    # Without the model, the detectors that read per-sample activations cannot run.
    from_statistics = [m for m in METHODS if not DETECTORS[m].needs_samples]
    assert comparison.methods == from_statistics
    with pytest.raises(LangNeuronsError, match="load the model"):
        compare_detectors(None, tiny_folder, ["average-precision"], effects=False)
    counts = comparison.neurons()
    assert list(counts.columns) == ["en", "fr", "de", "distinct"]
    for method in from_statistics:
        expected = select(tiny_folder.statistics, method)
        assert counts.loc[method, "fr"] == expected.language_total("fr")
        assert counts.loc[method, "distinct"] == expected.union_size()
    overlap = comparison.overlap()
    assert len(overlap) == 3 * 3  # three pairs of methods, three languages
    assert overlap["jaccard"].between(0, 1).all()
    per_layer = comparison.per_layer()
    assert (
        per_layer.groupby(["method", "language"])["neurons"].sum().loc["lape", "fr"]
        == (counts.loc["lape", "fr"])
    )
    assert math.isnan(comparison.effects()["own_nll_increase"].iloc[0])
    square = comparison.overlap_matrix("fr")
    assert list(square.index) == list(square.columns) == from_statistics
    assert (square.to_numpy().diagonal() == 1).all()
    pair = overlap[(overlap["method_a"] == "lape") & (overlap["method_b"] == "mean-diff")]
    assert square.loc["lape", "mean-diff"] == pair.set_index("language").loc["fr", "jaccard"]


def test_the_comparison_figures_show_each_detector(tiny_folder):
    from langneurons.plots import detector_layers, detector_overlap

    comparison = compare_detectors(None, tiny_folder, ["lape", "mean-diff"], effects=False)
    fig = detector_layers(comparison, "fr")
    assert [t.name for t in fig.data] == ["lape", "mean-diff"]
    per_layer = comparison.selections["lape"].counts()[:, 1].tolist()
    assert list(fig.data[0].y) == per_layer
    summed = detector_layers(comparison)
    assert list(summed.data[0].y) == comparison.selections["lape"].counts().sum(1).tolist()
    heat = detector_overlap(comparison, "fr")
    assert heat.data[0].z.tolist() == comparison.overlap_matrix("fr").to_numpy().tolist()


def test_with_the_model_the_average_precision_detector_joins(tiny_model, tiny_folder):
    from langneurons.workflows import run_samples

    comparison = compare_detectors(tiny_model, tiny_folder, effects=False)
    assert comparison.methods == list(METHODS)
    samples = run_samples(tiny_model, tiny_folder)
    assert samples.languages == ["en", "fr", "de"]
    expected = select(tiny_folder.statistics, "average-precision", samples=samples)
    got = comparison.selections["average-precision"]
    assert [[t.tolist() for t in m] for m in got.masks] == [
        [t.tolist() for t in m] for m in expected.masks
    ]
    assert got.scores["average_precision"].shape == (
        tiny_model.num_layers,
        tiny_model.num_neurons,
        3,
    )


def test_effects_are_measured_per_method_and_cached(tiny_model, tiny_folder):
    events = []
    small = {"max_tokens": 40, "prompts": ["The weather today is", "Every child has"]}
    small |= {"max_new_tokens": 4, "progress": events.append}
    comparison = compare_detectors(tiny_model, tiny_folder, ["lape", "mean-diff"], **small)
    effects = comparison.effects()
    assert list(effects.columns) == [
        "method", "language", "neurons", "own_nll_increase", "diagonal_ratio", "steering_success",
    ]  # fmt: skip
    assert len(effects) == 2 * 3
    for method in ("lape", "mean-diff"):
        matrix = comparison.ablations[method]
        row = effects[(effects["method"] == method) & (effects["language"] == "fr")].iloc[0]
        assert row["own_nll_increase"] == pytest.approx(
            matrix.deactivated["fr"]["fr"] - matrix.base["fr"]
        )
        assert row["diagonal_ratio"] == pytest.approx(matrix.diagonal_ratio(), nan_ok=True)
    # Steered: every language but the prompts' own (English) that has neurons.
    for row in effects.itertuples():
        steered = row.language != "en" and row.neurons > 0
        assert math.isnan(row.steering_success) != steered, row
        if steered:
            assert 0 <= row.steering_success <= 1
    assert effects["steering_success"].notna().sum() >= 1  # something was steered
    document = json.loads(json.dumps(comparison.to_json()))
    assert set(document) >= {"methods", "neurons", "overlap", "effects", "per_layer"}
    events.clear()
    compare_detectors(tiny_model, tiny_folder, ["lape", "mean-diff"], **small)
    assert {e.stage for e in events} <= {"cache", "evaluate", "steer"}
    assert not [e for e in events if e.stage == "steer" and e.message.endswith("generating")]


def test_bad_requests_are_refused(tiny_folder):
    with pytest.raises(LangNeuronsError, match="Unknown selection method 'lapee'"):
        compare_detectors(None, tiny_folder, ["lapee"], effects=False)
    with pytest.raises(LangNeuronsError, match="needs the model"):
        compare_detectors(None, tiny_folder)
    assert jaccard(set(), set()) == 1.0 and jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)


def test_the_command_compares_without_the_model(tiny_folder, capsys):
    from langneurons.cli import main

    assert main(["compare-detectors", "--run", str(tiny_folder.path), "--no-effects"]) == 0
    out = capsys.readouterr().out
    assert "neurons per language" in out and "three-way" in out and "Jaccard" in out
    argv = ["compare-detectors", "--run", str(tiny_folder.path), "--no-effects", "--json"]
    assert main([*argv, "--methods", "lape,three-way"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["methods"] == ["lape", "three-way"]
