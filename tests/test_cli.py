"""The `langneurons` command line: the contract, help, and clear errors on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from langneurons.cli import main

from .helpers import compute_args


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, save_tiny_model):
    """A tiny Qwen2 model saved like any Hugging Face checkpoint folder."""
    return save_tiny_model("qwen2", tmp_path_factory.mktemp("tiny-qwen2"))


def _compute(model_dir, out, *extra):
    argv = compute_args(model_dir, "en,fr,ja", max_tokens=150, seq_len=64, out=out, quiet=True)
    return main([*argv, *extra])


def test_compute_writes_the_run_and_a_summary(tiny_model_dir, tmp_path, capsys):
    assert _compute(tiny_model_dir, tmp_path / "run") == 0
    summary = capsys.readouterr().out
    assert "2 layers x 48 neurons; method lape" in summary
    assert "Wrote" in summary
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["languages"] == ["en", "fr", "ja"]
    assert meta["model"]["family"] == "Qwen2"
    assert meta["counting"]["max_tokens"] == 150
    # Again: everything from the cache.
    assert _compute(tiny_model_dir, tmp_path / "run2") == 0
    assert "3 language(s) from cache" in capsys.readouterr().out


def test_compute_with_custom_thresholds_and_method(tiny_model_dir, tmp_path):
    assert (
        _compute(
            tiny_model_dir,
            tmp_path / "a",
            "--top-rate",
            "0.05",
            "--filter-rate",
            "0.9",
            "--activation-bar-ratio",
            "0.85",
        )
        == 0
    )
    doc = json.loads((tmp_path / "a" / "neurons.json").read_text())
    assert doc["settings"] == {"top_rate": 0.05, "filter_rate": 0.9, "activation_bar_ratio": 0.85}
    assert _compute(tiny_model_dir, tmp_path / "b", "--method", "mean-diff") == 0
    assert json.loads((tmp_path / "b" / "neurons.json").read_text())["method"] == "mean-diff"
    argv = ["--method", "three-way", "--top-rate", "0.05", "--fixed-weight", "--weight", "0.1"]
    assert _compute(tiny_model_dir, tmp_path / "c", *argv) == 0
    doc = json.loads((tmp_path / "c" / "neurons.json").read_text())
    assert doc["method"] == "three-way"
    assert doc["settings"]["weight"] == 0.1 and doc["settings"]["fixed_weight"] is True
    assert doc["thresholds"]["weight"] == 0.1


def test_folder_corpus_through_the_cli(tiny_model_dir, tmp_path):
    corpus = tmp_path / "texts"
    corpus.mkdir()
    from langneurons.corpus import load_corpus

    udhr = load_corpus("udhr", ["en", "sw"])
    for code in ("en", "sw"):
        (corpus / f"{code}.txt").write_text("\n".join(udhr.texts[code].paragraphs), "utf-8")
    code = main(
        [
            "compute",
            "--model",
            str(tiny_model_dir),
            "--corpus",
            str(corpus),
            "--languages",
            "en,sw",
            "--max-tokens",
            "100",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["corpus"]["languages"]["sw"]["source"].endswith("sw.txt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "./no/such/folder"], "does not exist"),
        (["--model", "no-such-org/no-such-model"], "Could not load model"),
        (["--languages", "en,xx"], "'xx' is not in the embedded UDHR corpus"),
        (["--corpus", "/no/such/dir"], "is neither 'udhr'"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_2(tiny_model_dir, tmp_path, capsys, args, message):
    base = {"--model": str(tiny_model_dir), "--languages": "en,fr"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["compute", "--out", str(tmp_path / "out"), "--quiet"]
    for flag, value in base.items():
        argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unsupported_family_through_the_cli(tmp_path, tiny_tokenizer, capsys):
    from transformers import AutoModelForCausalLM, GPTJConfig

    folder = tmp_path / "gptj"
    config = GPTJConfig(
        vocab_size=len(tiny_tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        rotary_dim=4,
        n_positions=128,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    assert (
        main(
            [
                "compute",
                "--model",
                str(folder),
                "--languages",
                "en,fr",
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'gptj' is not supported" in err and "Supported families" in err
    assert "FamilyAdapter" in err


def test_folder_without_config_is_explained(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "compute",
                "--model",
                str(tmp_path / "empty"),
                "--languages",
                "en,fr",
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "holds no config.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--top-rate", "0"],
        ["--filter-rate", "abc"],
        ["--max-tokens", "-5"],
        ["--method", "magic"],
        ["--checkpoint-tokens", "-1"],
    ],
)
def test_invalid_option_values_are_refused_by_the_parser(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as info:
        main(["compute", "--languages", "en,fr", "--out", str(tmp_path / "o"), *args])
    assert info.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_help_texts_are_useful(capsys):
    with pytest.raises(SystemExit):
        main(["compute", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--model",
        "--languages",
        "--corpus",
        "--max-tokens",
        "--no-cache",
        "--out",
        "--top-rate",
        "--filter-rate",
        "--activation-bar-ratio",
        "--device",
        "--dtype",
        "--trust-remote-code",
    ):
        assert option in text
    assert "embedded Gemma 3 270M" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "langneurons compute --languages" in capsys.readouterr().out


def test_languages_and_families_commands(capsys):
    assert main(["languages"]) == 0
    out = capsys.readouterr().out
    assert "fr  French" in out and "zh  Chinese" in out
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    assert "gemma3_text" in out and "mlp.act_fn" in out and "gpt_neox" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "compute" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert _compute(tiny_model_dir, out, "--top-rate", "0.1") == 0
    return out


def test_ppl_writes_the_matrix(tiny_run, tmp_path, capsys):
    out = tmp_path / "nll.json"
    assert (
        main(
            [
                "ppl",
                "--stats",
                str(tiny_run),
                "--languages",
                "en,ja",
                "--max-tokens",
                "40",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["languages"] == ["en", "ja"]
    assert set(doc["base"]) == {"en", "ja"}
    assert set(doc["deactivated"]["en"]) == {"en", "ja"}
    assert all(v > 0 for v in doc["base"].values())
    assert "ja off" in capsys.readouterr().out


def test_generate_json_contract(tiny_run, capsys):
    assert (
        main(
            [
                "generate",
                "--stats",
                str(tiny_run),
                "--prompt",
                "Everyone has",
                "--deactivate",
                "en,fr",
                "--max-new-tokens",
                "8",
                "--json",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    doc = json.loads(printed.out)
    assert set(doc) >= {"baseline", "modified", "intervention"}
    assert set(doc["baseline"]) >= {"text", "language"}
    assert doc["intervention"]["deactivate"] == "en,fr"
    assert doc["intervention"]["neurons"] > 0
    # JSON on stdout, progress on stderr: the generation says how far it is.
    assert "generating: 8/8 new tokens" in printed.err


def test_generate_quiet_prints_no_progress(tiny_run, capsys):
    command = ["generate", "--run", str(tiny_run), "--prompt", "Everyone has"]
    assert main([*command, "--deactivate", "en", "--max-new-tokens", "4", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "" and "modified" in printed.out


def test_trace_of_a_text_beyond_the_limit_is_refused_with_the_limit(tiny_run, capsys):
    text = "Everyone has the right to life. " * 600  # thousands of tokens
    assert main(["trace", "--run", str(tiny_run), "--text", text, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "11,400 tokens long; a trace reads at most 512" in err  # the tiny model's context
    assert "context" in err and "Trace a shorter part" in err


def test_generate_steer_and_text_output(tiny_run, capsys):
    assert (
        main(
            [
                "generate",
                "--stats",
                str(tiny_run),
                "--prompt",
                "Everyone has",
                "--steer",
                "ja",
                "--strength",
                "2",
                "--layers",
                "0-1",
                "--max-new-tokens",
                "5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "baseline [" in out and "modified (" in out and "steer=ja" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deactivate", "de"], "No neurons for de"),
        (["--steer", "xx"], "Cannot steer towards 'xx'"),
        (["--neurons", "0:4800"], "out of range"),
        (["--neurons", "9:1"], "Layer 9 does not exist"),
        (["--layers", "0-7", "--deactivate", "en"], "do not fit"),
        ([], "Nothing to change"),
    ],
)
def test_generate_bad_input(tiny_run, capsys, args, message):
    assert main(["generate", "--stats", str(tiny_run), "--prompt", "Hi", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-new-tokens", "100000000"], "--max-new-tokens: must be at most 4096"),
        (["--temperature", "0"], "--temperature: must be above 0.0"),
        (["--strength", "nan"], "--strength: expected a finite number"),
    ],
)
def test_generate_options_out_of_range_are_refused_before_loading(tiny_run, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--run", str(tiny_run), "--prompt", "Hi", "--deactivate", "en", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_generate_empty_prompt_and_missing_run(tiny_run, tmp_path, capsys):
    assert main(["generate", "--stats", str(tiny_run), "--prompt", " ", "--deactivate", "en"]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["generate", "--stats", str(tmp_path), "--prompt", "Hi", "--deactivate", "en"]) == 2
    assert "not a complete run" in capsys.readouterr().err


def test_import_mask_round_trip(tiny_run, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "imported"
    assert (
        main(
            [
                "import-mask",
                str(tiny_run / "activation_mask.pth"),
                "--languages",
                "en,fr,ja",
                "--model",
                str(tiny_model_dir),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    original = torch.load(tiny_run / "activation_mask.pth", weights_only=True)
    imported = torch.load(out / "activation_mask.pth", weights_only=True)
    assert all(
        torch.equal(a, b)
        for x, y in zip(original, imported, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["imported"] is True and len(meta["source"]["sha256"]) == 64
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--stats",
                str(out),
                "--prompt",
                "Everyone",
                "--deactivate",
                "fr",
                "--max-new-tokens",
                "4",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["modified"]["text"]
    assert main(["generate", "--stats", str(out), "--prompt", "Everyone", "--steer", "fr"]) == 2
    assert "without statistics" in capsys.readouterr().err


def test_import_mask_refuses_wrong_shapes_and_pickles(tiny_run, tiny_model_dir, tmp_path, capsys):
    base = ["--model", str(tiny_model_dir), "--out", str(tmp_path / "o")]
    mask = str(tiny_run / "activation_mask.pth")
    assert main(["import-mask", mask, "--languages", "en,fr", *base]) == 2
    assert "masks for 3 languages" in capsys.readouterr().err
    other = tmp_path / "other.pth"
    torch.save([[torch.tensor([1])] * 5] * 3, other)
    assert main(["import-mask", str(other), "--languages", "en,fr,ja", *base]) == 2
    assert "has 5 layers" in capsys.readouterr().err
    wide = tmp_path / "wide.pth"
    torch.save([[torch.tensor([9000])] * 2] * 3, wide)
    assert main(["import-mask", str(wide), "--languages", "en,fr,ja", *base]) == 2
    assert "another model" in capsys.readouterr().err
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Evil()}, evil)
    assert main(["import-mask", str(evil), "--languages", "en", *base]) == 2
    assert "not a neuron mask" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_import_mask_against_a_config_alone_then_generate_with_the_model(
    tiny_run, tiny_model_dir, tmp_path, capsys, monkeypatch
):
    """A mask checked against config.json only (no model loads), used later with --model."""
    import langneurons.cli.common

    def no_model(*_a, **_k):
        raise AssertionError("a model was loaded")

    mask = str(tiny_run / "activation_mask.pth")
    out = tmp_path / "from-config"
    with monkeypatch.context() as patch:
        patch.setattr(langneurons.cli.common, "load_model", no_model)
        args = ["import-mask", mask, "--languages", "en,fr,ja", "--config", str(tiny_model_dir)]
        assert main([*args, "--out", str(out)]) == 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["model"]["source"].startswith("config only")
        assert (meta["layers"], meta["neurons"]) == (2, 48)
        small = tmp_path / "small.json"
        small.write_text(json.dumps({"num_hidden_layers": 2, "intermediate_size": 16}))
        assert main([*args[:-1], str(small), "--out", str(tmp_path / "no")]) == 2
        assert "16 neurons per layer" in capsys.readouterr().err
        assert not (tmp_path / "no").exists()
    capsys.readouterr()
    argv = ["generate", "--run", str(out), "--model", str(tiny_model_dir), "--prompt", "Every"]
    assert main([*argv, "--deactivate", "fr", "--max-new-tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["intervention"]["deactivate"] == "fr"
    # Without --model: the configuration's folder holds the weights, so they are used ...
    argv = ["generate", "--run", str(out), "--prompt", "Every", "--max-new-tokens", "3"]
    assert main([*argv, "--deactivate", "fr", "--json"]) == 0
    capsys.readouterr()
    # ... a configuration alone names no model: one line asks for --model (no hub lookup).
    alone = tmp_path / "config-alone"
    alone.mkdir()
    (alone / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    other = tmp_path / "from-config-alone"
    assert main([*args[:-1], str(alone / "config.json"), "--out", str(other)]) == 0
    capsys.readouterr()
    argv = ["generate", "--run", str(other), "--prompt", "Every", "--deactivate", "fr"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "configuration alone" in err and "--model" in err and "unexpectedly" not in err


class _Evil:
    """An arbitrary object: loading it would need pickle, which import-mask refuses."""


def test_show_summarises_a_run(tiny_run, tiny_model_dir, tmp_path, capsys):
    from langneurons.results import read_run

    run = read_run(tiny_run)
    assert main(["show", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert f"{run.meta['layers']} layers x {run.meta['neurons']} neurons; method lape" in out
    for k, code in enumerate(run.languages):
        total, tokens = run.neurons["neurons"][code]["total"], int(run.statistics.tokens[k])
        assert re.search(rf"^ +{code} +{total} neurons +\({tokens} tokens\)", out, re.M)
    assert f"distinct neurons: {run.neurons['distinct_total']}" in out
    assert main(["show", str(tiny_run), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["languages"] == ["en", "fr", "ja"]
    counted = run.statistics.tokens.tolist()
    assert document["tokens"] == dict(zip(run.languages, counted, strict=True))
    assert document["world_size"] == 1
    # The notebook's table of neurons counts what `show` counts.
    table = run.neurons_table()
    assert (
        table.groupby("language").size().reindex(run.languages, fill_value=0).to_dict()
        == (document["neurons"])
    )
    assert {"entropy", "p_en", "p_fr", "p_ja"} <= set(table.columns)
    # An imported mask has neurons but no counts.
    imported = tmp_path / "imported"
    mask = str(tiny_run / "activation_mask.pth")
    args = ["import-mask", mask, "--languages", "en,fr,ja", "--model", str(tiny_model_dir)]
    assert main([*args, "--out", str(imported)]) == 0
    capsys.readouterr()
    assert main(["show", str(imported)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ +fr +\d+ neurons +most in", out, re.M)  # no token count to show
    imported_table = read_run(imported).neurons_table()
    assert list(imported_table.columns) == ["language", "layer", "neuron"]
    assert len(imported_table) == len(table)
    assert main(["show", str(tmp_path / "nothing")]) == 2
    assert "is not a folder with results" in capsys.readouterr().err


def test_progress_in_a_log_file_is_plain_lines(tiny_model_dir, tmp_path):
    """Not on a terminal (a batch job's log), progress is a line per update, not a bar."""
    command = [sys.executable, "-m", "langneurons.cli", "compute", "--model", str(tiny_model_dir)]
    command += ["--languages", "en,fr", "--max-tokens", "150", "--out", str(tmp_path / "run")]
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr
    assert re.search(r"^en: 150/150 tokens \(100%, [\d,]+ tokens/s\)$", done.stderr, re.M)
    assert re.search(r"^fr: 150/150 tokens \(100%", done.stderr, re.M)


def test_log_lines_are_throttled_but_the_last_always_shows(capsys, monkeypatch):
    from langneurons.cli.common import ProgressPrinter as _ProgressPrinter
    from langneurons.progress import ProgressEvent

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    events = [ProgressEvent("count", "", "de", done, 400) for done in (0, 100, 200, 300, 400)]
    for interval, expected in ((3600.0, 1), (0.0, 4)):
        printer = _ProgressPrinter(False, interval=interval)
        for event in events:
            printer(event)
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == expected and lines[-1].startswith("de: 400/400 tokens (100%")
    # Per-sample activations (the average-precision detector) report the same way.
    printer = _ProgressPrinter(False, interval=0.0)
    for done in (0, 200, 400):
        printer(ProgressEvent("samples", "", "de", done, 400))
    assert capsys.readouterr().err.splitlines()[-1].startswith("de samples: 400/400 tokens")


def test_trace_command_prints_tokens_or_json(tiny_run, capsys):
    assert main(["trace", "--run", str(tiny_run), "--text", "All human beings"]) == 0
    out = capsys.readouterr().out
    assert "[" in out and "mean activity per language: en" in out
    assert main(["trace", "--run", str(tiny_run), "--text", "All human beings", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["languages"] == ["en", "fr", "ja"]
    assert len(document["activity"]) == len(document["tokens"])
    assert all(len(per_token) == document["layers"] for per_token in document["activity"])
    assert main(["trace", "--run", str(tiny_run), "--text", "  "]) == 2
    assert "The text is empty" in capsys.readouterr().err


def test_generate_with_its_trace(tiny_run, capsys):
    args = ["generate", "--run", str(tiny_run), "--prompt", "All human", "--deactivate", "fr"]
    assert main([*args, "--max-new-tokens", "4", "--trace", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for side in ("baseline", "modified"):
        trace = result[side]["trace"]
        assert set(trace) >= {"tokens", "languages", "layers", "activity", "dominant"}
        assert len(trace["tokens"]) >= 2
    assert main([*args, "--max-new-tokens", "4", "--trace"]) == 0
    assert capsys.readouterr().out.count("trace: ") == 2


def test_corrupt_weights_are_one_clear_line(tiny_model_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    argv = compute_args(broken, "en,fr", out=tmp_path / "o", quiet=True)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "weights are unreadable" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_one_language_is_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    argv = compute_args(tiny_model_dir, "en", out=tmp_path / "o", quiet=True)
    assert main(argv) == 2
    assert "give at least two" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_unwritable_outputs_are_refused_before_counting(
    tiny_model_dir, tiny_run, tmp_path, capsys, monkeypatch, where
):
    import langneurons.pipeline

    def no_work(*_a, **_k):
        raise AssertionError("counted before checking --out")

    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" if where == "file" else tmp_path / "a-file" / "run"
    monkeypatch.setattr(langneurons.pipeline, "collect_language_stats", no_work)
    assert main(compute_args(tiny_model_dir, "en,fr", out=out, no_cache=True, quiet=True)) == 2
    assert "--out" in capsys.readouterr().err
    ablation_out = tmp_path / "a-file" / "m.json"
    assert main(["ablation", "--run", str(tiny_run), "--out", str(ablation_out)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["ablation", "--run", str(tiny_run), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_an_overflowing_neuron_index_is_explained(tiny_run, capsys):
    args = ["generate", "--run", str(tiny_run), "--prompt", "Hi"]
    assert main([*args, "--neurons", "0:99999999999999999999999"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_a_run_folder_with_broken_files_is_one_clear_line(tiny_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "run"
    shutil.copytree(tiny_run, broken)
    meta = json.loads((broken / "meta.json").read_text())
    del meta["layers"]
    (broken / "meta.json").write_text(json.dumps(meta))
    assert main(["show", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "'layers' is missing" in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_while_writing_the_matrix_is_one_clear_line(
    tiny_run, tmp_path, capsys, monkeypatch
):
    import langneurons.atomic as atomic  # where results files are written and synced

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert main(["ablation", "--run", str(tiny_run), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob(".tmp-*"))


def test_an_unexpected_failure_is_one_line_unless_debugging(tiny_run, capsys, monkeypatch):
    import langneurons.results as results

    def bug(_path):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(results, "read_run", bug)
    assert main(["show", str(tiny_run)]) == 1
    err = capsys.readouterr().err
    assert "show failed unexpectedly: ZeroDivisionError: a bug" in err
    assert "Traceback" not in err
    monkeypatch.setenv("LANGNEURONS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["show", str(tiny_run)])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare-detectors", "--run", "x", "--methods", "lape,lape"], "lape listed twice"),
        (["compare-detectors", "--run", "x", "--methods", ""], "no detector named"),
        (["compare-detectors", "--run", "x", "--methods", "lape,best"], "'best' is not a detector"),
        (["generate", "--prompt", "hi", "--steer", "fr", "--strength", "-2"], "0 or more"),
        (["generate", "--prompt", "hi", "--steer", "fr", "--strength", "nan"], "finite number"),
        (["dashboard", "--port", "0"], "is not a port"),
    ],
)
def test_arguments_out_of_range_get_one_line_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
