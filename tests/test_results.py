"""The run folder contract: what compute writes, read back, and never half-written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from langneurons.errors import ResultsError
from langneurons.pipeline import compute
from langneurons.results import FILES, read_run

from .reference_lape import reference_masks

LANGS = ["en", "fr", "de", "zh"]
SMALL = {"max_tokens": 200, "seq_len": 64, "batch_size": 4}


def test_run_folder_follows_the_contract(tiny_model, tmp_path):
    out = tmp_path / "run"
    result = compute(tiny_model, LANGS, out_dir=out, **SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)

    tensors = load_file(out / "stats.safetensors")
    layers, neurons = tiny_model.num_layers, tiny_model.num_neurons
    assert tensors["over_zero"].dtype == torch.int64
    assert tensors["over_zero"].shape == (layers, neurons, len(LANGS))
    assert tensors["tokens"].tolist() == [200] * len(LANGS)
    assert tensors["activation_sum"].shape == (layers, neurons, len(LANGS))
    assert tensors["activation_sum"].is_floating_point()
    with safe_open(out / "stats.safetensors", framework="pt") as handle:
        assert json.loads(handle.metadata()["languages"]) == LANGS

    meta = json.loads((out / "meta.json").read_text())
    assert meta["languages"] == LANGS
    assert (meta["layers"], meta["neurons"]) == (layers, neurons)
    assert meta["model"]["fingerprint"] == tiny_model.fingerprint
    assert meta["corpus"]["name"] == "udhr"
    assert set(meta["corpus"]["languages"]) == set(LANGS)
    assert meta["corpus"]["split"]["eval_fraction"] == 0.2
    assert meta["selection"]["settings"] == {
        "top_rate": 0.01,
        "filter_rate": 0.95,
        "activation_bar_ratio": 0.95,
    }
    assert {"langneurons", "torch", "transformers"} <= set(meta["versions"])

    masks = torch.load(out / "activation_mask.pth", weights_only=True)
    expected = reference_masks(tensors["over_zero"], tensors["tokens"])
    assert len(masks) == len(LANGS) and all(len(m) == layers for m in masks)
    for k in range(len(LANGS)):
        for layer in range(layers):
            assert masks[k][layer].dtype == torch.int64
            assert torch.equal(masks[k][layer], expected[k][layer])

    neurons_doc = json.loads((out / "neurons.json").read_text())
    assert neurons_doc["method"] == "lape"
    assert neurons_doc["settings"]["top_rate"] == 0.01
    for k, code in enumerate(LANGS):
        assert neurons_doc["neurons"][code]["per_layer"] == [t.tolist() for t in masks[k]]
    assert result.selection.union_size() == neurons_doc["distinct_total"]

    run = read_run(out)
    assert run.statistics.languages == LANGS
    assert torch.equal(run.statistics.over_zero, tensors["over_zero"])


def test_failed_write_leaves_nothing_behind(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "new" / "run"

    def failing_save(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("langneurons.results.torch.save", failing_save)
    with pytest.raises(ResultsError, match="No space left"):
        compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    assert not out.exists()


def test_failed_write_keeps_an_existing_run_intact(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(
        "langneurons.results.torch.save",
        lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device")),
    )
    with pytest.raises(ResultsError):
        compute(tiny_model, ["en", "de"], out_dir=out, **SMALL)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_out_must_be_a_folder(tiny_model, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ResultsError, match="is a file"):
        compute(tiny_model, ["en", "fr"], out_dir=target, **SMALL)


def test_read_run_explains_incomplete_folders(tmp_path):
    with pytest.raises(ResultsError, match="not a folder"):
        read_run(tmp_path / "missing")
    (tmp_path / "meta.json").write_text("{}")
    with pytest.raises(ResultsError, match=r"lacks stats\.safetensors"):
        read_run(tmp_path)


def test_a_kill_between_the_renames_leaves_the_old_run_and_the_next_write_restores_it(
    tiny_model, tmp_path, monkeypatch
):
    """Writing a run swaps whole folders: stopped after the old one was moved aside, the
    folder is missing (never mixed); a reader says where the old one is and changes
    nothing; the next write puts it back before writing."""
    import langneurons.outputs as outputs

    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = outputs.os.replace

    def stop_after_moving_aside(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            raise KeyboardInterrupt  # a kill between the two renames

    monkeypatch.setattr(outputs.os, "replace", stop_after_moving_aside)
    with pytest.raises(KeyboardInterrupt):
        compute(tiny_model, ["en", "de"], out_dir=out, **SMALL)
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert not out.exists()
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(".run.old-")]
    with pytest.raises(ResultsError, match=f"left the earlier run as '{aside.name}'"):
        read_run(out)
    assert aside.is_dir() and not out.exists()  # the reader changed nothing
    with outputs.parent_lock(tmp_path):  # what the next writer does first
        assert outputs.recover_interrupted(out) == [f"restored the previous run from {aside.name}"]
    assert read_run(out).languages == ["en", "fr"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]


def test_files_of_the_folder_that_a_run_does_not_write_are_kept(tiny_model, tmp_path):
    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    (out / "ablation.json").write_text("{}")
    compute(tiny_model, ["en", "de"], out_dir=out, **SMALL)
    assert (out / "ablation.json").read_text() == "{}"
    assert read_run(out).languages == ["en", "de"]
    assert all(p.stat().st_mode & 0o044 for p in out.iterdir())  # readable like the rest


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda out: _edit(out / "meta.json", lambda m: m.pop("layers")),
            "'layers' is missing, not a positive whole number",
        ),
        (
            lambda out: _edit(
                out / "neurons.json",
                lambda n: n["neurons"]["en"]["per_layer"].__setitem__(0, [1.5, "x"]),
            ),
            "holds something other than neuron indices",
        ),
        (
            lambda out: _edit(
                out / "neurons.json",
                lambda n: n["neurons"]["en"]["per_layer"].__setitem__(0, [10**12]),
            ),
            "holds something other than neuron indices",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(languages=["en", "de"])),
            "list different languages",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(neurons=4800)),
            "but meta.json says",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m["counting"]["tokens"].update(en=5)),
            "token counts differ",
        ),
        (
            lambda out: (out / "stats.safetensors").write_bytes(b"garbage"),
            "stats.safetensors' is unreadable (Error while deserializing header",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(counting=[])),
            "'counting' is not",
        ),
        (lambda out: _edit(out / "meta.json", lambda m: m.update(model="x")), "'model' is not"),
        (lambda out: _edit(out / "meta.json", lambda m: m.update(selection=3)), "'selection' is"),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(languages=["en", "en"])),
            "listed twice",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(languages=["<b>x</b>", "fr"])),
            "not a language code",
        ),
        (
            lambda out: _edit(out / "neurons.json", lambda n: n.update(neurons=[1, 2])),
            "not an object by language",
        ),
        (
            lambda out: _edit(out / "neurons.json", lambda n: n["neurons"]["fr"].pop("total")),
            "no whole 'total'",
        ),
        (
            lambda out: _edit(
                out / "neurons.json",
                lambda n: n["neurons"]["en"]["per_layer"].__setitem__(0, [3, 3]),
            ),
            "repeats a neuron",
        ),
        (
            lambda out: (out / "neurons.json").write_text("[" * 200_000),
            "neurons.json' is unreadable (nested too deeply)",
        ),
        (
            lambda out: (out / "meta.json").write_text("[" * 200_000),
            "meta.json' is unreadable (nested too deeply)",
        ),
        (
            lambda out: (out / "meta.json").write_text('{"layers": 2,'),
            "meta.json' is unreadable (not valid JSON: Expecting",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(neurons=True)),
            "'neurons' is True, not a positive whole number",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m.update(languages="en,fr")),
            "'languages' is 'en,fr', not a list of language codes",
        ),
        (
            lambda out: _edit(out / "meta.json", lambda m: m["counting"]["tokens"].update(en="x")),
            "'counting' tokens are not whole numbers",
        ),
        (lambda out: _edit_stats(out, "activation_sum", float("nan")), "not finite"),
        (lambda out: _edit_stats(out, "activation_sq_sum", float("inf")), "not finite"),
    ],
)
def test_a_folder_whose_files_disagree_is_refused(tiny_model, tmp_path, damage, message):
    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr"], out_dir=out, **SMALL)
    damage(out)
    with pytest.raises(ResultsError, match=re.escape(message)):
        read_run(out)


def _edit_stats(out, name: str, value: float) -> None:
    from safetensors.torch import save_file

    path = out / "stats.safetensors"
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors[name].view(-1)[7] = value
    save_file(tensors, str(path), metadata=metadata)


def _edit(path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_a_full_disk_is_reported_and_leaves_nothing_behind(tiny_model, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*_args, **_kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr("langneurons.results.save_file", full)
    with pytest.raises(ResultsError, match="No space left on device"):
        compute(tiny_model, ["en", "fr"], out_dir=tmp_path / "run", **SMALL)
    assert list(tmp_path.iterdir()) == []
