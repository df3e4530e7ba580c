"""Every example in the library's docstrings runs and prints what it says, and the public
entry points each carry one."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import langneurons

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(langneurons.__path__, "langneurons.")
    if not info.name.startswith(("langneurons.dashboard", "langneurons.assets"))
    and not info.name.endswith("__main__")  # importing it runs the command line
)
ENTRY_POINTS = [
    "langneurons.pipeline.compute",
    "langneurons.models.load_model",
    "langneurons.results.read_run",
    "langneurons.selection.select",
    "langneurons.tables.neurons_table",
    "langneurons.interventions.apply",
    "langneurons.generation.generate",
    "langneurons.trace.trace_text",
    "langneurons.evaluation.ablation_matrix",
    "langneurons.steering.steering_sweep",
    "langneurons.comparison.compare_detectors",
    "langneurons.maskfile.read_mask_file",
    "langneurons.merge.merge_runs",
    "langneurons.samples.collect_samples",
    "langneurons.plots.layer_distribution",
    "langneurons.tiny.tiny_model",
]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_each_entry_point_has_an_example(name):
    module, attribute = name.rsplit(".", 1)
    function = getattr(importlib.import_module(module), attribute)
    assert ">>>" in (function.__doc__ or ""), f"{name} has no example in its docstring"


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_of_each_module_run(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
