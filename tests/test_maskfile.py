"""Published masks without their model: a file in the reference layout (a model shape
unlike the default) summarised by ``show`` with no model, checked against a config."""

from __future__ import annotations

import json

import pytest
import torch

from langneurons.cli import main
from langneurons.errors import ResultsError
from langneurons.maskfile import MaskFile, config_shape, read_mask_file

LANGS = ["en", "zh", "fr", "es", "vi", "id", "ja"]
LAYERS, WIDTH = 32, 11008  # LLaMA-2 7B's shape


@pytest.fixture
def published(tmp_path):
    """A mask like the authors' LLaMA-2 7B file: most neurons in the first and last
    layers, French and Spanish sharing some."""
    generator = torch.Generator().manual_seed(0)
    masks = []
    for k, _code in enumerate(LANGS):
        per_layer = []
        for layer in range(LAYERS):
            many = 12 if layer in (0, 1, 30, 31) else 1
            idx = torch.randperm(WIDTH, generator=generator)[: many * (k + 1)]
            per_layer.append(idx.sort().values)
        masks.append(per_layer)
    masks[3][31] = torch.cat([masks[3][31], masks[2][31]]).unique()  # es shares fr's
    path = tmp_path / "llama-2-7b.neuron.pth"
    torch.save(masks, path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": LAYERS, "intermediate_size": WIDTH}))
    return path, config, masks


def test_show_summarises_a_mask_file_without_a_model(published, capsys):
    path, config, masks = published
    argv = ["show", str(path), "--languages", ",".join(LANGS), "--config", str(config)]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == LAYERS and summary["neurons_per_layer"] == WIDTH
    assert summary["neurons_per_layer_from"] == "config"
    for k, code in enumerate(LANGS):
        assert summary["neurons"][code] == sum(len(i) for i in masks[k])
        assert summary["per_layer"][code][0] == len(masks[k][0])
    distinct = {(layer, int(i)) for m in masks for layer, idx in enumerate(m) for i in idx}
    assert summary["distinct_neurons"] == len(distinct)
    assert summary["selected_share"] == pytest.approx(len(distinct) / (LAYERS * WIDTH))

    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "32 layers x 11008 neurons; method published mask" in text
    assert f"distinct neurons: {len(distinct)}" in text
    assert "most in L0:" in text.splitlines()[1] or "most in L1:" in text.splitlines()[1]


def test_without_a_config_the_range_is_the_largest_index(published, capsys):
    path, _, masks = published
    mask = read_mask_file(path, LANGS)
    largest = max(int(i.max()) for m in masks for i in m)
    assert mask.num_neurons == largest + 1 and not mask.width_known
    assert mask.counts().shape == (LAYERS, len(LANGS))
    overlap = mask.overlap()
    assert overlap.loc["fr", "es"] > overlap.loc["en", "ja"]
    assert overlap.loc["fr", "fr"] == 1.0
    assert main(["show", str(path), "--languages", ",".join(LANGS)]) == 0
    assert "at least, from the largest index" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("languages", "config", "message"),
    [
        ("en,zh,fr", None, "holds masks for 7 languages but 3 codes"),
        (",".join(LANGS), {"num_hidden_layers": 40, "intermediate_size": WIDTH}, "40"),
        (",".join(LANGS), {"num_hidden_layers": LAYERS, "intermediate_size": 4096}, "4096"),
        (",".join(LANGS), {"model_type": "llama"}, "names no number of layers"),
        (None, None, "name its languages in order"),
    ],
)
def test_a_mask_that_does_not_fit_is_one_clear_line(
    published, tmp_path, capsys, languages, config, message
):
    path = published[0]
    argv = ["show", str(path)]
    if languages:
        argv += ["--languages", languages]
    if config:
        other = tmp_path / "other.json"
        other.write_text(json.dumps(config))
        argv += ["--config", str(other)]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_configs_of_other_families_give_their_shape(tmp_path):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"n_layer": 12, "n_embd": 768, "n_inner": None}))
    assert config_shape(gpt2) == (12, 3072)
    gemma = tmp_path / "gemma.json"
    gemma.write_text(
        json.dumps({"text_config": {"num_hidden_layers": 18, "intermediate_size": 2048}})
    )
    assert config_shape(gemma) == (18, 2048)
    with pytest.raises(ResultsError, match="Cannot read the model configuration"):
        config_shape(tmp_path / "missing.json")
    not_a_mask = tmp_path / "x.pth"
    torch.save({"weights": torch.zeros(2)}, not_a_mask)
    with pytest.raises(ResultsError, match="not a list over languages"):
        read_mask_file(not_a_mask, ["en"])
    with pytest.raises(ResultsError, match="repeat"):
        MaskFile.from_masks([[torch.tensor([1])], [torch.tensor([2])]], ["en", "en"])
    with pytest.raises(ResultsError, match="not a list of whole neuron indices"):
        MaskFile.from_masks([[torch.tensor([1.5])]], ["en"])
    empty = MaskFile.from_masks([[torch.tensor([]), torch.tensor([3])]], ["en"])  # float []
    assert empty.counts().tolist() == [[0], [1]]


def test_the_dashboard_opens_a_mask_without_any_model(published, monkeypatch):
    """The teacher's laptop: no model may load; the page shows the per-layer picture."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import langneurons.dashboard.state
    import langneurons.models

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(langneurons.models, "load_model", no_model)
    monkeypatch.setattr(langneurons.dashboard.state, "load_model", no_model)
    path, _config, masks = published
    app = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("routes/mask.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Choose a mask file" in i.value for i in at.info)
    at.radio(key="mk_source").set_value("A file on this server").run()
    at.text_input(key="mk_path").set_value(str(path)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Layers"] == "32" and metrics["Languages"] == "7"
    distinct = {(layer, int(i)) for m in masks for layer, idx in enumerate(m) for i in idx}
    assert metrics["Distinct neurons"] == f"{len(distinct):,}"
    assert len(at.get("plotly_chart")) == 3
    table = at.dataframe[0].value
    assert list(table["neurons"]) == [sum(len(i) for i in m) for m in masks]
    assert any("needs the model" in i.value for i in at.info)
    at.text_input(key="mk_langs").set_value("en,zh,fr").run()
    assert any("holds masks for 7 languages but 3 codes" in e.value for e in at.error)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([["a", "b"]], "is not a list of whole neuron indices"),
        ([[None, None]], "is not a list of whole neuron indices"),
        ([[[[1, 2], [3]]]], "is not a list of whole neuron indices"),
        ([[torch.tensor([True, False])]], "is not a list of whole neuron indices"),
        ([[torch.tensor([4, 4, 9])]], "names a neuron twice"),
        ([[torch.tensor([10**12])]], "no model has 4,194,304 or more MLP neurons"),
        ([[torch.tensor([-3])]], "negative neuron indices"),
    ],
)
def test_a_malformed_mask_gets_one_line_from_show_and_import(tmp_path, capsys, entries, message):
    path = tmp_path / "bad.pth"
    torch.save(entries, path)
    assert main(["show", str(path), "--languages", "en"]) != 0
    err = capsys.readouterr().err
    assert message in err and "unexpectedly" not in err and "Traceback" not in err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 1, "intermediate_size": 64}))
    out = tmp_path / "imported"
    argv = ["import-mask", str(path), "--languages", "en", "--config", str(config)]
    assert main([*argv, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "unexpectedly" not in err and "Traceback" not in err
    assert not out.exists()
