"""Jobs on a run folder: the intervention a user describes in words, the model a run
needs, imported masks, and output files checked before any work."""

from __future__ import annotations

import json
import os

import pytest
import torch

from langneurons.errors import LangNeuronsError, ResultsError
from langneurons.interventions import InterventionError
from langneurons.pipeline import compute
from langneurons.results import read_run
from langneurons.workflows import (
    NothingToChange,
    build_intervention,
    check_model_matches,
    check_output_file,
    import_mask,
    intervention_for,
    run_model_spec,
    write_json_atomic,
)

LANGS = ["en", "fr", "ja"]


@pytest.fixture
def run(tiny_model, tmp_path):
    compute(tiny_model, LANGS, max_tokens=300, seq_len=64, out_dir=tmp_path / "run")
    return read_run(tmp_path / "run")


def _edits(intervention):
    return {(e.layer, e.mode): set(e.neurons.tolist()) for e in intervention.edits}


def _neurons(run, code):
    k = run.languages.index(code)
    return {(layer, int(i)) for layer, idx in enumerate(run.masks[k]) for i in idx}


def test_deactivating_languages_switches_off_exactly_their_neurons(tiny_model, run):
    intervention = build_intervention(run, tiny_model, deactivate_languages=["fr", "ja"])
    chosen = {(e.layer, int(i)) for e in intervention.edits for i in e.neurons}
    assert chosen == _neurons(run, "fr") | _neurons(run, "ja")
    assert all(e.mode == "set" and float(e.values.abs().sum()) == 0 for e in intervention.edits)
    assert intervention.describe()["deactivate"] == "fr,ja"


def test_steering_switches_off_the_prompts_own_language_unless_told_otherwise(tiny_model, run):
    steered = build_intervention(
        run, tiny_model, steer_language="ja", prompt="Everyone has the right to education."
    )
    info = steered.describe()
    assert info["steer"] == "ja" and info["deactivate"] == "en"  # detected from the prompt
    sets = [e for e in steered.edits if e.mode == "set"]
    mean = run.statistics.mean_activation()[..., run.languages.index("ja")]
    for edit in sets:
        if (edit.layer, int(edit.neurons[0])) in _neurons(run, "ja"):
            assert torch.allclose(edit.values, mean[edit.layer, edit.neurons])
    explicit = build_intervention(
        run,
        tiny_model,
        steer_language="ja",
        deactivate_languages=["fr"],
        prompt="Everyone has the right to education.",
    )
    assert explicit.describe()["deactivate"] == "fr"


def test_layers_limit_the_language_sets_and_single_neurons_add_up(tiny_model, run):
    layer = min(layer for layer, _ in _neurons(run, "fr"))
    spec = f"{layer}-{layer}"
    limited = build_intervention(run, tiny_model, deactivate_languages=["fr"], layers=spec)
    assert {(e.layer, int(i)) for e in limited.edits for i in e.neurons} == {
        n for n in _neurons(run, "fr") if n[0] == layer
    }
    assert limited.describe()["layers"] == spec
    pairs = build_intervention(run, tiny_model, neurons="0:3,1:7")
    assert _edits(pairs) == {(0, "set"): {3}, (1, "set"): {7}}


def test_impossible_choices_are_explained(tiny_model, run):
    with pytest.raises(InterventionError, match="Cannot steer towards 'de'"):
        build_intervention(run, tiny_model, steer_language="de")
    with pytest.raises(InterventionError, match="No neurons for de"):
        build_intervention(run, tiny_model, deactivate_languages=["de"])
    with pytest.raises(NothingToChange):
        intervention_for(tiny_model, run.masks, run.languages, run.statistics)
    with pytest.raises(ResultsError, match="steering needs them"):
        intervention_for(tiny_model, run.masks, run.languages, None, steer_language="fr")


def test_a_run_names_its_model_and_refuses_another_shape(tiny_model, make_tiny_model, run):
    assert run_model_spec(run) == tiny_model.name
    check_model_matches(tiny_model, run)
    other = make_tiny_model("gpt2")
    if (other.num_layers, other.num_neurons) != (tiny_model.num_layers, tiny_model.num_neurons):
        with pytest.raises(ResultsError, match="was made for a model with"):
            check_model_matches(other, run)


def test_import_mask_writes_a_run_without_statistics(tiny_model, run, tmp_path):
    mask = tmp_path / "mask.pth"
    torch.save(run.masks, mask)
    out = import_mask(mask, ",".join(LANGS), tiny_model, tmp_path / "imported")
    imported = read_run(out)
    assert imported.statistics is None and imported.languages == LANGS
    assert imported.meta["imported"] is True
    assert [[t.tolist() for t in m] for m in imported.masks] == [
        [t.tolist() for t in m] for m in run.masks
    ]
    with pytest.raises(ResultsError, match="holds masks for 3 languages"):
        import_mask(mask, "en,fr", tiny_model, tmp_path / "bad")


def test_output_files_are_checked_before_any_work(tmp_path):
    assert (
        check_output_file(tmp_path / "new" / "deeper" / "m.json") == tmp_path / "new/deeper/m.json"
    )
    with pytest.raises(LangNeuronsError, match="is a folder"):
        check_output_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LangNeuronsError, match="is a file, not a folder"):
        check_output_file(tmp_path / "file" / "m.json")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(LangNeuronsError, match="no permission"):
            check_output_file(locked / "m.json")


def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = write_json_atomic(tmp_path / "out" / "m.json", {"a": "é"})
    written = {"a": "é", "written_by": "langneurons"}  # marked: a later write may replace it
    assert json.loads(target.read_text(encoding="utf-8")) == written
    monkeypatch.setattr(json, "dump", lambda *a, **k: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(LangNeuronsError, match="Free disk space"):
        write_json_atomic(target, {"b": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == written
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]
