"""The real embedded default model (Gemma 3 270M) end to end, offline.

Slow on two cores (the first run on a machine also converts the model once, about
a minute), so it is one module sharing one run.  Deselect with ``-m "not slow"``.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from langneurons.cli import main

from .reference_lape import reference_masks

pytestmark = pytest.mark.slow
LANGS = ["en", "fr", "ja", "zh", "ru"]


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("default-cache")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, module_cache):
    out = tmp_path_factory.mktemp("default") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LANGNEURONS_CACHE", str(module_cache))
        assert main(["compute", "--languages", ",".join(LANGS), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def default_model():
    from langneurons.models import load_model

    return load_model()


def test_compute_follows_the_contract_and_the_reference_rule(
    default_run, module_cache, monkeypatch, capsys
):
    meta = json.loads((default_run / "meta.json").read_text())
    assert meta["model"]["name"] == "gemma-3-270m"
    assert meta["model"]["model_type"] == "gemma3_text"
    assert meta["model"]["source"].startswith("embedded")
    assert (meta["layers"], meta["neurons"]) == (18, 2048)
    tensors = load_file(default_run / "stats.safetensors")
    assert tensors["over_zero"].shape == (18, 2048, len(LANGS))
    assert all(t > 1000 for t in tensors["tokens"].tolist())

    masks = torch.load(default_run / "activation_mask.pth", weights_only=True)
    expected = reference_masks(tensors["over_zero"], tensors["tokens"])
    for k in range(len(LANGS)):
        for layer in range(18):
            assert torch.equal(masks[k][layer], expected[k][layer])
    per_language = meta["selection"]["per_language"]
    assert all(per_language[code] > 0 for code in LANGS), per_language
    # As in the paper, language neurons concentrate in the last layers.
    counts = sum(torch.tensor([len(t) for t in m]) for m in masks)
    assert counts[-3:].sum() > counts[:-3].sum() / 2

    monkeypatch.setenv("LANGNEURONS_CACHE", str(module_cache))
    again = default_run.parent / "again"
    assert main(["compute", "--languages", ",".join(LANGS), "--out", str(again), "--quiet"]) == 0
    assert f"{len(LANGS)} language(s) from cache" in capsys.readouterr().out


def test_deactivation_hurts_the_own_language_most(default_run, tmp_path):
    out = tmp_path / "nll.json"
    args = [
        "ppl",
        "--stats",
        str(default_run),
        "--max-tokens",
        "200",
        "--out",
        str(out),
    ]  # old names
    assert main([*args, "--quiet"]) == 0
    matrix = json.loads(out.read_text())
    base, off = matrix["base"], matrix["deactivated"]
    # English is the model's dominant language and has few specific neurons (about 25
    # here, as in the paper); its row is reported in the README, not asserted.
    for lang in ["fr", "ja", "zh", "ru"]:
        own = off[lang][lang] - base[lang]
        others = [off[lang][b] - base[b] for b in LANGS if b != lang]
        assert own > sum(others) / len(others), (lang, own, others)
        assert own > 0.3, (lang, own)


def test_french_neurons_off_breaks_french_and_steering_switches_language(
    default_run, default_model
):
    from langneurons.generation import GenerationConfig
    from langneurons.results import read_run
    from langneurons.workflows import build_intervention, generate_comparison

    run = read_run(default_run)
    config = GenerationConfig(max_new_tokens=25)
    french = "La Déclaration universelle des droits de l'homme affirme que"

    def compare(prompt, **kwargs):
        intervention = build_intervention(run, default_model, prompt=prompt, **kwargs)
        return generate_comparison(default_model, run, prompt, intervention, config)

    fr_off = compare(french, deactivate_languages=["fr"])
    assert fr_off["baseline"]["language"] == "fr"
    assert fr_off["modified"]["text"] != fr_off["baseline"]["text"]
    assert fr_off["modified"]["language"] != "fr"
    ja_off = compare(french, deactivate_languages=["ja"])
    assert ja_off["modified"]["language"] == "fr"

    for target in ["fr", "ja", "zh"]:
        steered = compare("The weather today is", steer_language=target, strength=1.0)
        assert steered["baseline"]["language"] == "en"
        assert steered["modified"]["language"] == target, steered["modified"]
        assert steered["intervention"]["deactivate"] == "en"


def test_the_trace_follows_a_code_switched_text(default_run, default_model):
    """On a text that switches from Japanese to French to Russian, the dominant language
    of the trace follows the text on most tokens of each part."""
    from langneurons.results import read_run
    from langneurons.workflows import run_trace

    run = read_run(default_run)
    parts = {
        "ja": "今日はとてもいい天気なので、公園を散歩しました。",
        "fr": " Ensuite nous avons mangé une soupe chaude avec nos amis au restaurant.",
        "ru": " Вечером мы долго гуляли по старому городу и разговаривали.",
    }
    trace = run_trace(default_model, run, "".join(parts.values()))
    dominant = trace.dominant()
    position = 0
    for code, text in parts.items():
        count = len(default_model.tokenizer(text, add_special_tokens=False)["input_ids"])
        # Token boundaries at a switch may merge pieces: allow one token of slack.
        share = sum(d == code for d in dominant[position : position + count]) / count
        assert share >= 0.7, (code, share, dominant[position : position + count])
        position += count


def test_trace_and_generate_trace_on_the_command_line(default_run, capsys):
    text = "今日はいい天気です。Il fait beau aujourd'hui."
    assert main(["trace", "--run", str(default_run), "--text", text, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["languages"] == LANGS and document["layers"] == 18
    assert len(document["activity"]) == len(document["tokens"]) == len(document["dominant"])
    assert document["dominant"][0] == "ja" and document["dominant"][-2] == "fr"
    args = ["generate", "--run", str(default_run), "--prompt", "Il fait beau", "--deactivate"]
    assert main([*args, "fr", "--max-new-tokens", "6", "--trace", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for side in ("baseline", "modified"):
        assert result[side]["trace"]["tokens"][0].strip() == "Il"
        assert len(result[side]["trace"]["activity"]) == len(result[side]["trace"]["tokens"])
    assert "activity_after" in result["modified"]["trace"]
    assert main([*args, "fr", "--max-new-tokens", "6", "--trace"]) == 0
    assert "trace: Il[fr]" in capsys.readouterr().out


def test_steer_eval_measures_that_steering_to_french_works(
    default_run, module_cache, monkeypatch, capsys
):
    """The embedded English openings: steered towards French at strength 1 they turn
    French on a clear majority; unmodified they do not.  Towards Japanese too, and the
    guarded decoding leaves no broken character.  Then the same from the cache."""
    monkeypatch.setenv("LANGNEURONS_CACHE", str(module_cache))
    argv = ["steer-eval", "--run", str(default_run), "--targets", "fr,ja", "--strengths", "0,1"]
    argv += ["--max-new-tokens", "24", "--json"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    japanese = next(r for r in document["rows"] if r["target"] == "ja" and r["strength"] == 1)
    assert japanese["success"] >= 0.6, japanese
    rows = {row["strength"]: row for row in document["rows"] if row["target"] == "fr"}
    assert rows[0.0]["n"] == rows[1.0]["n"] >= 20
    assert rows[1.0]["success"] >= 0.6 and rows[0.0]["success"] <= 0.2, rows
    assert rows[1.0]["line_pass_rate"] >= 0.5
    assert document["recommended"]["fr"]["strength"] == 1.0
    # The native references: the model continuing French and Japanese openings writes
    # French and Japanese, and the bar a steered cell must reach follows from them.
    for code in ("fr", "ja"):
        reference = document["references"][code]
        assert reference["native_success"] >= 0.8, reference
        allowed = max(reference["unmodified_nll"], reference["native_nll"]) + 1.0
        assert reference["max_nll"] == pytest.approx(allowed)
    assert main([*argv[:-1], "--outputs", "--json"]) == 0  # from the cache
    again = json.loads(capsys.readouterr().out)
    assert again["rows"] == document["rows"]
    outputs = {c["strength"]: c["outputs"] for c in again["outputs"] if c["target"] == "fr"}
    assert sum(o["language"] == "fr" for o in outputs[1.0]) == round(
        rows[1.0]["success"] * rows[1.0]["n"]
    )
    assert not [o for c in again["outputs"] for o in c["outputs"] if "\ufffd" in o["text"]]


def test_the_recipe_searched_for_japanese_holds_on_the_held_out_openings(
    default_run, module_cache, monkeypatch, capsys
):
    """steer-eval --search chooses on the tuning openings only; the stored recipe for
    Japanese then succeeds on most held-out openings, fluently, and generate --steer ja
    without a strength steers with it."""
    monkeypatch.setenv("LANGNEURONS_CACHE", str(module_cache))
    argv = ["steer-eval", "--run", str(default_run), "--targets", "ja", "--search"]
    assert main([*argv, "--json", "--quiet"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["table"]
    assert row["mode"] is not None, row
    assert row["held_out_success"] >= 0.75 and row["held_out_fluent"], row
    assert row["held_out_n"] == 11 and row["unmodified_held_out_success"] <= 0.1, row
    prompt = ["--prompt", "The weather today is", "--max-new-tokens", "16", "--json"]
    assert main(["generate", "--run", str(default_run), "--steer", "ja", *prompt]) == 0
    printed = capsys.readouterr()
    result = json.loads(printed.out)
    assert result["recipe"]["source"] == "stored recipe"
    assert (result["recipe"]["mode"], result["recipe"]["strength"]) == (
        row["mode"],
        row["strength"],
    )
    assert result["modified"]["language"] == "ja", result["modified"]
    assert "with the run's recipe" in printed.err
