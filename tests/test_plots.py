"""The library's figures of a selection and its statistics: each drawn from the object
it is given, the same call the dashboard makes."""

from __future__ import annotations

import numpy as np
import pytest

from langneurons import analysis, plots
from langneurons.evaluation import AblationMatrix
from langneurons.pipeline import compute
from langneurons.tables import language_overlap


@pytest.fixture
def result(tiny_model):
    from langneurons.selection import LapeConfig

    return compute(
        tiny_model, ["en", "fr", "de"], max_tokens=300, selection=LapeConfig(top_rate=0.05)
    )


def test_counts_distribution_and_overlap_figures(result):
    selection = result.selection
    counts = selection.counts().numpy()
    assert np.array_equal(plots.counts_heatmap(selection).data[0].z, counts)
    bars = plots.layer_distribution(selection)
    assert [t.name for t in bars.data] == selection.languages
    assert np.array_equal(bars.data[1].y, counts[:, 1])
    jaccard = plots.overlap_heatmap(selection)
    assert np.allclose(jaccard.data[0].z, language_overlap(selection).to_numpy())
    shared = plots.overlap_heatmap(selection, "shared")
    assert shared.data[0].z[0][0] == selection.language_total("en")
    frame = language_overlap(selection)
    assert np.allclose(plots.overlap_heatmap(frame, title="t").data[0].z, frame.to_numpy())


def test_the_neuron_heatmap_pools_zooms_and_circles_the_selected(result):
    selection, stats = result.selection, result.statistics
    width = stats.num_neurons
    figure = plots.neuron_heatmap(selection, stats, "fr")
    probs = stats.probabilities()[..., 1].numpy()
    assert np.allclose(figure.data[0].z, probs)
    marks = figure.data[1]
    k = selection.languages.index("fr")
    expected = sorted((layer, int(i)) for layer, idx in enumerate(selection.masks[k]) for i in idx)
    assert sorted(zip(marks.y.tolist(), marks.x.tolist(), strict=True)) == expected
    zoomed = plots.neuron_heatmap(selection, stats, "fr", start=2, stop=10, max_columns=4)
    pooled, pool = analysis.pool_columns(probs[:, 2:10], 4)
    assert pool == 2 and np.allclose(zoomed.data[0].z, pooled)
    assert zoomed.data[0].x.tolist() == [2, 4, 6, 8]
    score = plots.neuron_heatmap(selection, stats, "fr", plots.SCORE)
    assert score.data[0].colorbar.title.text == "entropy"
    with pytest.raises(ValueError, match="within"):
        plots.neuron_heatmap(selection, stats, "fr", start=5, stop=width + 1)
    with pytest.raises(ValueError, match="metric"):
        plots.neuron_values(selection, stats, "size", "fr")


def test_the_neuron_map_and_the_ablation_matrix(result):
    points = analysis.map_points(result.statistics, result.selection, limit=200)
    coords = analysis.pca_2d(points.vectors)
    figure = plots.neuron_map(points, coords, result.statistics.languages)
    assert sum(len(t.x) for t in figure.data) == len(points.index)
    big = [t for t in figure.data if t.name.endswith("(selected)")]
    assert sum(len(t.x) for t in big) == int(points.selected.sum())
    matrix = AblationMatrix(
        ["a", "b"], {"a": 1.0, "b": 2.0}, {"a": {"a": 2.0, "b": 2.1}, "b": {"a": 1.3, "b": 3.0}}
    )
    heat = plots.ablation_heatmap(matrix, "increase")
    assert np.allclose(heat.data[0].z, matrix.grid("increase"))
    assert list(heat.data[0].y) == ["a off", "b off"]
    with pytest.raises(ValueError, match="scale"):
        plots.ablation_heatmap(matrix, "log")


SLOW_PANDAS = r"""
import importlib.abc, importlib.machinery, sys, threading, time
import numpy as np

class Slow(importlib.abc.MetaPathFinder):
    # pandas takes a second to import, as on a busy server: long enough for another
    # thread to build a figure meanwhile.
    def find_spec(self, name, path, target=None):
        if name != "pandas":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real = spec.loader

        class Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                started.set()
                time.sleep(1.0)
                real.exec_module(module)

        spec.loader = Loader()
        return spec

started = threading.Event()
sys.meta_path.insert(0, Slow())
import plotly.graph_objects  # noqa: F401  (plotly itself does not import pandas)
from langneurons import plots
from langneurons.trace import Trace

assert "pandas" not in sys.modules
importer = threading.Thread(target=lambda: __import__("pandas"))
importer.start()
started.wait()
fired = np.random.default_rng(0).integers(0, 10, (6, 4, 2)).astype(np.float32)
selected = np.full((4, 2), 10)
trace = Trace(["en", "fr"], selected, list("abcdef"), list(range(6)), fired, fired)
figure = plots.trace_heatmap(trace, "fr")
importer.join()
print("figure", len(figure.data))
"""


def test_a_figure_built_while_another_thread_imports_pandas(tmp_path):
    """Plotly reads pandas from ``sys.modules`` without waiting for its import: eight
    playground sessions finishing together on a new server got "partially initialized
    module 'pandas'" (found by the load test).  A figure now waits for that import."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "slow_pandas.py"
    script.write_text(SLOW_PANDAS)
    core = Path(__file__).parent.parent / "core"
    env = {**os.environ, "PYTHONPATH": str(core)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "figure 1" in done.stdout


def test_tokens_reach_the_trace_figures_as_text_not_tags():
    """Plotly reads ``<b>``, ``<a href>`` and ``<br>`` in tick labels and hover text:
    tokens of a user's text are escaped, so they show as written."""
    import numpy as np

    from langneurons.trace import Trace

    tokens = ["<b>", "<a href='https://evil.example'>", "x&y", "fin"]
    fired = np.ones((4, 2, 2), dtype=np.float32)
    trace = Trace(["en", "fr"], np.full((2, 2), 2), tokens, list(range(4)), fired, fired)
    for figure in (plots.trace_heatmap(trace, "fr"), plots.trace_lines(trace)):
        parts = [figure.layout.xaxis.ticktext or ()]
        parts += [d.x if d.x is not None else () for d in figure.data]
        parts += [d.y if d.y is not None else () for d in figure.data]
        shown = " ".join(str(v) for part in parts for v in part)
        assert "&lt;b&gt;" in shown and "x&amp;y" in shown, shown
        assert "<b>" not in shown and "<a " not in shown


def test_the_recipe_grid_shows_what_was_tried_crossed_and_chosen():
    from langneurons.recipes import RecipeBook

    grid = [
        {"target": "ja", "mode": "set", "strength": 1.0, "layers": "all", "success": 1.0,
         "fluent": True, "chosen": True},
        {"target": "ja", "mode": "set", "strength": 4.0, "layers": "9-17", "success": 0.9,
         "fluent": False, "chosen": False},
        {"target": "fr", "mode": "add", "strength": 1.0, "layers": "all", "success": 0.5,
         "fluent": True, "chosen": True},
    ]  # fmt: skip
    settings = {
        "grid": {"modes": ["set", "add"], "strengths": [1.0, 4.0], "bands": ["all", "9-17"]}
    }
    figure = plots.recipe_grid(RecipeBook({}, settings, grid), "ja")
    set_panel, add_panel = figure.data
    assert list(set_panel.x) == ["x1", "x4"] and list(set_panel.y) == ["all", "9-17"]
    assert [list(row) for row in set_panel.text] == [["1.00", ""], ["", "0.90 ×"]]
    assert all(v is None for row in add_panel.z for v in row)  # fr's rows are not ja's
    (frame,) = figure.layout.shapes
    assert (frame.x0, frame.y0) == (-0.5, -0.5)  # around set x1, all layers
