"""The real embedded default model (Gemma 3 270M) end to end, offline, via the CLI.

Slow on two cores (the first run on a machine converts the model once, about a
minute); kept to one command and its rerun.  Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from langneurons.cli import main

from .reference_lape import reference_masks

pytestmark = pytest.mark.slow
LANGS = ["en", "fr", "zh", "ru"]


def test_default_model_compute_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compute", "--languages", ",".join(LANGS), "--max-tokens", "800", "--out", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "gemma-3-270m: 18 layers x 2048 neurons" in captured.out

    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["name"] == "gemma-3-270m"
    assert meta["model"]["model_type"] == "gemma3_text"
    assert meta["model"]["source"].startswith("embedded")
    tensors = load_file(out / "stats.safetensors")
    assert tensors["over_zero"].shape == (18, 2048, 4)
    assert tensors["tokens"].tolist() == [800] * 4

    masks = torch.load(out / "activation_mask.pth", weights_only=True)
    expected = reference_masks(tensors["over_zero"], tensors["tokens"])
    for k in range(len(LANGS)):
        for layer in range(18):
            assert torch.equal(masks[k][layer], expected[k][layer])
    per_language = meta["selection"]["per_language"]
    # The real model has language neurons for each of these distinct scripts/languages.
    assert all(per_language[code] > 0 for code in LANGS), per_language
    # Neurons that fire for Chinese text differ from those that fire for Russian text.
    zh = {(layer, int(i)) for layer, t in enumerate(masks[2]) for i in t}
    ru = {(layer, int(i)) for layer, t in enumerate(masks[3]) for i in t}
    assert len(zh & ru) < min(len(zh), len(ru))

    assert main([*argv[:-1], str(tmp_path / "again"), "--quiet"]) == 0
    assert "4 language(s) from cache" in capsys.readouterr().out
