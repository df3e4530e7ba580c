"""The audit of bad input, kept: over a hundred things a careless user, a curious student
or a broken file does, across the command line, run folders, mask files, links and
uploads, each with its expected outcome.

Every case of the command line ends in one clear line (exit status 2, ``error:`` and
what to do) or is accepted with its documented meaning (status 0); none reaches "failed
unexpectedly" or a traceback, and none touches a user's folder.  Links' values are
ignored and said (the dashboard's warning) when unreadable or out of range; uploads are
refused by name or size.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from langneurons.cli import main

from .helpers import compute_args


@dataclass(frozen=True)
class Case:
    """``argv`` (``{name}`` filled from the places below) and a part of the one line it
    must print; ``status`` 0 for input accepted with its documented meaning."""

    name: str
    argv: tuple[str, ...]
    says: str
    status: int = 2


def _c(name: str, argv: str, says: str, status: int = 2) -> Case:
    return Case(name, tuple(argv.split("|")), says, status)


TINY = "--model|{model}"
RUN = "--run|{run}"

CLI: list[Case] = [
    # compute: languages, numbers, settings
    _c("one language", f"compute|{TINY}|--languages|en|--out|{{new}}", "at least two"),
    _c("repeated language", f"compute|{TINY}|--languages|en,en|--out|{{new}}", "listed twice"),
    _c("code of HTML", f"compute|{TINY}|--languages|en,<b>x|--out|{{new}}", "not a language code"),
    _c("no languages", f"compute|{TINY}|--languages|,|--out|{{new}}", "No languages"),
    _c("language not in corpus", f"compute|{TINY}|--languages|en,xx|--out|{{new}}", "xx"),
    _c(
        "negative budget",
        f"compute|{TINY}|--languages|en,fr|--max-tokens|-5|--out|{{new}}",
        "max-tokens",
    ),
    _c(
        "text budget",
        f"compute|{TINY}|--languages|en,fr|--max-tokens|many|--out|{{new}}",
        "max-tokens",
    ),
    _c("zero window", f"compute|{TINY}|--languages|en,fr|--seq-len|0|--out|{{new}}", "seq-len"),
    _c(
        "zero batch", f"compute|{TINY}|--languages|en,fr|--batch-size|0|--out|{{new}}", "batch-size"
    ),
    _c("top rate 2", f"compute|{TINY}|--languages|en,fr|--top-rate|2|--out|{{new}}", "top-rate"),
    _c(
        "top rate nan", f"compute|{TINY}|--languages|en,fr|--top-rate|nan|--out|{{new}}", "top_rate"
    ),
    _c(
        "filter rate -1",
        f"compute|{TINY}|--languages|en,fr|--filter-rate|-1|--out|{{new}}",
        "filter-rate",
    ),
    _c(
        "eval fraction 1",
        f"compute|{TINY}|--languages|en,fr|--eval-fraction|1|--out|{{new}}",
        "eval-fraction",
    ),
    _c("unknown method", f"compute|{TINY}|--languages|en,fr|--method|best|--out|{{new}}", "method"),
    _c("unknown dtype", f"compute|{TINY}|--languages|en,fr|--dtype|float8|--out|{{new}}", "dtype"),
    _c(
        "checkpoint -1",
        f"compute|{TINY}|--languages|en,fr|--checkpoint-tokens|-1|--out|{{new}}",
        "checkpoint",
    ),
    # compute: where it reads and writes
    _c("out empty", f"compute|{TINY}|--languages|en,fr|--out|", "--out is empty"),
    _c("out current folder", f"compute|{TINY}|--languages|en,fr|--out|.", "current folder"),
    _c("out a file", f"compute|{TINY}|--languages|en,fr|--out|{{file}}", "is a file"),
    _c("out under a file", f"compute|{TINY}|--languages|en,fr|--out|{{file}}/run", "is a file"),
    _c(
        "out a user's folder",
        f"compute|{TINY}|--languages|en,fr|--out|{{users}}",
        "not a LangNeurons run",
    ),
    _c(
        "out a broken link", f"compute|{TINY}|--languages|en,fr|--out|{{dangling}}", "symbolic link"
    ),
    _c(
        "corpus missing",
        f"compute|{TINY}|--languages|en,fr|--corpus|{{tmp}}/nowhere|--out|{{new}}",
        "nowhere",
    ),
    _c(
        "corpus latin-1",
        f"compute|{TINY}|--languages|en,fr|--corpus|{{latin}}|--out|{{new}}",
        "not valid UTF-8",
    ),
    _c(
        "corpus empty folder",
        f"compute|{TINY}|--languages|en,fr|--corpus|{{empty}}|--out|{{new}}",
        "no <code>.txt files",
    ),
    _c(
        "corpus a file", f"compute|{TINY}|--languages|en,fr|--corpus|{{file}}|--out|{{new}}", "file"
    ),
    _c(
        "hub corpus without budget",
        f"compute|{TINY}|--languages|en,fr|--corpus|hf:x/y|--out|{{new}}",
        "max-tokens",
    ),
    _c(
        "model folder missing",
        "compute|--model|{tmp}/no-model|--languages|en,fr|--out|{new}",
        "no-model",
    ),
    _c("model folder of text", "compute|--model|{users}|--languages|en,fr|--out|{new}", "users"),
    # generate
    _c("empty prompt", f"generate|{RUN}|{TINY}|--prompt|", "prompt is empty"),
    _c("negative strength", f"generate|{RUN}|--prompt|Hi|--steer|fr|--strength|-2", "0 or more"),
    _c("strength nan", f"generate|{RUN}|--prompt|Hi|--steer|fr|--strength|nan", "finite"),
    _c("strength text", f"generate|{RUN}|--prompt|Hi|--steer|fr|--strength|lots", "number"),
    _c("steer towards absent", f"generate|{RUN}|{TINY}|--prompt|Hi|--steer|de", "de"),
    _c("deactivate absent", f"generate|{RUN}|{TINY}|--prompt|Hi|--deactivate|de", "de"),
    _c(
        "layers reversed",
        f"generate|{RUN}|{TINY}|--prompt|Hi|--deactivate|fr|--layers|1-0",
        "layer",
    ),
    _c(
        "layers beyond", f"generate|{RUN}|{TINY}|--prompt|Hi|--deactivate|fr|--layers|0-99", "layer"
    ),
    _c("layers text", f"generate|{RUN}|{TINY}|--prompt|Hi|--deactivate|fr|--layers|all", "Layers"),
    _c("neuron beyond", f"generate|{RUN}|{TINY}|--prompt|Hi|--neurons|0:99999", "99999"),
    _c("neuron text", f"generate|{RUN}|{TINY}|--prompt|Hi|--neurons|zero", "Neuron"),
    _c("neuron layer beyond", f"generate|{RUN}|{TINY}|--prompt|Hi|--neurons|9:1", "layer"),
    _c("no new tokens", f"generate|{RUN}|--prompt|Hi|--max-new-tokens|0", "max-new-tokens"),
    _c(
        "too many new tokens",
        f"generate|{RUN}|--prompt|Hi|--max-new-tokens|100000",
        "max-new-tokens",
    ),
    _c("temperature 0", f"generate|{RUN}|--prompt|Hi|--temperature|0", "temperature"),
    _c("top-p 1.5", f"generate|{RUN}|--prompt|Hi|--top-p|1.5", "top-p"),
    _c("penalty 0", f"generate|{RUN}|--prompt|Hi|--repetition-penalty|0", "repetition-penalty"),
    _c("run missing", "generate|--run|{tmp}/no-run|--prompt|Hi|--deactivate|fr", "not a folder"),
    _c("run a user's folder", "generate|--run|{users}|--prompt|Hi|--deactivate|fr", "lacks"),
    _c("run a glob", "generate|--run|{tmp}/*|--prompt|Hi|--deactivate|fr", "not a folder"),
    _c("nothing to change", f"generate|{RUN}|{TINY}|--prompt|Hi", "Nothing to change"),
    _c(
        "prompt of 100,000 characters",
        f"generate|{RUN}|{TINY}|--prompt|{'word ' * 20_000}|--neurons|0:1",
        "4,096",
    ),
    _c(
        "trace of 100,000 characters",
        f"trace|{RUN}|{TINY}|--text|{'word ' * 20_000}",
        "a trace reads at most",
    ),
    _c("generate a neuron off", f"generate|{RUN}|{TINY}|--prompt|Hi|--neurons|0:1", "", 0),
    # show, merge, import-mask, trace, compare, steer-eval, ablation, bench, dashboard
    _c("show missing", "show|{tmp}/no-run", "not a folder with results"),
    _c("show a glob", "show|{tmp}/*", "not a folder with results"),
    _c("show text as mask", "show|{textmask}|--languages|en", "not a neuron mask"),
    _c("show mask without codes", "show|{goodmask}", "name its languages"),
    _c("show mask too few codes", "show|{goodmask}|--languages|en", "codes were given"),
    _c("show mask with its codes", "show|{goodmask}|--languages|en,fr,ja", "", 0),
    _c("config nested deep", "show|{goodmask}|--languages|en,fr,ja|--config|{deepjson}", "nested"),
    _c("config a list", "show|{goodmask}|--languages|en,fr,ja|--config|{listjson}", "JSON object"),
    _c(
        "config not UTF-8",
        "show|{goodmask}|--languages|en,fr,ja|--config|{latin}/en.txt",
        "not JSON",
    ),
    _c(
        "config without sizes",
        "show|{goodmask}|--languages|en,fr,ja|--config|{emptyjson}",
        "names no",
    ),
    _c("merge one run", "merge|{run}|--out|{new}", "at least two"),
    _c("merge into a user's folder", "merge|{run}|{run}|--out|{users}", "not a LangNeurons run"),
    _c("merge a missing run", "merge|{run}|{tmp}/no-run|--out|{new}", "no-run"),
    _c("merge a run with itself", "merge|{run}|{run}|--out|{new}", "en"),
    _c(
        "import config not JSON",
        "import-mask|{goodmask}|--languages|en,fr,ja|--config|{file}|--out|{new}",
        "file.txt",
    ),
    _c(
        "import against a config",
        "import-mask|{goodmask}|--languages|en,fr,ja|--config|{model}|--out|{new}",
        "",
        0,
    ),
    _c(
        "import wrong codes",
        f"import-mask|{{goodmask}}|--languages|en|{TINY}|--out|{{new}}",
        "codes were given",
    ),
    _c(
        "import into a user's folder",
        f"import-mask|{{goodmask}}|--languages|en,fr,ja|{TINY}|--out|{{users}}",
        "not a LangNeurons run",
    ),
    _c(
        "import config missing",
        "import-mask|{goodmask}|--languages|en,fr,ja|--config|{tmp}/c.json|--out|{new}",
        "c.json",
    ),
    _c("trace empty text", f"trace|{RUN}|{TINY}|--text|", "empty"),
    _c("compare repeated methods", f"compare-detectors|{RUN}|--methods|lape,lape", "listed twice"),
    _c("compare no methods", f"compare-detectors|{RUN}|--methods|", "no detector named"),
    _c("compare unknown method", f"compare-detectors|{RUN}|--methods|best", "not a detector"),
    _c("steer-eval empty strengths", f"steer-eval|{RUN}|--strengths|", "strengths"),
    _c("steer-eval nan strength", f"steer-eval|{RUN}|--strengths|1,nan", "strengths"),
    _c("steer-eval negative strength", f"steer-eval|{RUN}|{TINY}|--strengths|-1", "strength"),
    _c("steer-eval absent target", f"steer-eval|{RUN}|{TINY}|--targets|de", "de"),
    _c(
        "ablation out a user's file", f"ablation|{RUN}|--out|{{users}}/thesis.tex", "never replaced"
    ),
    _c(
        "steer-eval out a user's file",
        f"steer-eval|{RUN}|--targets|fr|--out|{{users}}/thesis.tex",
        "never",
    ),
    _c("ablation out empty", f"ablation|{RUN}|--out|", "--out is empty"),
    _c("ablation out a folder", f"ablation|{RUN}|--out|{{users}}", "is a folder"),
    _c(
        "ablation absent language",
        f"ablation|{RUN}|{TINY}|--languages|en,de|--out|{{new}}.json",
        "de",
    ),
    _c("bench no sessions", "bench|--sessions|0", "sessions"),
    _c("bench negative sessions", "bench|--sessions|-3", "sessions"),
    _c("dashboard port -1", "dashboard|--port|-1", "is not a port"),
    _c("dashboard port 70000", "dashboard|--port|70000", "is not a port"),
    _c("dashboard port text", "dashboard|--port|http", "is not a port"),
    _c("dashboard missing classroom", "dashboard|--classroom|{tmp}/none.toml", "none.toml"),
    _c("dashboard bad classroom", "dashboard|--classroom|{badtoml}", "max_new_tokens"),
    _c("dashboard missing run", "dashboard|--run|{tmp}/no-run", "no-run"),
]


def _edit(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _nan_stats(out: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = out / "stats.safetensors"
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["activation_sum"].view(-1)[3] = float("nan")
    save_file(tensors, str(path), metadata=metadata)


DAMAGES: dict[str, tuple[Any, str]] = {
    "meta.json missing": (lambda out: (out / "meta.json").unlink(), "lacks meta.json"),
    "meta.json not JSON": (lambda out: (out / "meta.json").write_text("{"), "not valid JSON"),
    "meta.json a list": (lambda out: (out / "meta.json").write_text("[]"), "not a JSON object"),
    "meta.json not UTF-8": (
        lambda out: (out / "meta.json").write_bytes(b'{"layers": "\xe9"}'),
        "not UTF-8",
    ),
    "meta.json nested deep": (
        lambda out: (out / "meta.json").write_text("[" * 100_000),
        "nested too deeply",
    ),
    "counting a list": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(counting=[])),
        "'counting'",
    ),
    "model a string": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(model="x")),
        "'model'",
    ),
    "selection a number": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(selection=1)),
        "'selection'",
    ),
    "languages repeated": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(languages=["en", "en", "ja"])),
        "listed twice",
    ),
    "language code of HTML": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(languages=["en", "<a>", "ja"])),
        "not a language code",
    ),
    "layers zero": (
        lambda out: _edit(out / "meta.json", lambda m: m.update(layers=0)),
        "'layers' is 0, not a positive whole number",
    ),
    "neurons.json missing": (lambda out: (out / "neurons.json").unlink(), "lacks neurons.json"),
    "neurons a list": (
        lambda out: _edit(out / "neurons.json", lambda n: n.update(neurons=[])),
        "not an object",
    ),
    "total missing": (
        lambda out: _edit(out / "neurons.json", lambda n: n["neurons"]["en"].pop("total")),
        "'total'",
    ),
    "neuron repeated": (
        lambda out: _edit(
            out / "neurons.json", lambda n: n["neurons"]["en"]["per_layer"].__setitem__(0, [1, 1])
        ),
        "repeats a neuron",
    ),
    "neuron of 10^12": (
        lambda out: _edit(
            out / "neurons.json", lambda n: n["neurons"]["en"]["per_layer"].__setitem__(0, [10**12])
        ),
        "neuron indices",
    ),
    "neuron a string": (
        lambda out: _edit(
            out / "neurons.json", lambda n: n["neurons"]["fr"]["per_layer"].__setitem__(1, ["a"])
        ),
        "neuron indices",
    ),
    "statistics missing": (lambda out: (out / "stats.safetensors").unlink(), "lacks stats"),
    "statistics garbage": (
        lambda out: (out / "stats.safetensors").write_bytes(b"garbage"),
        "stats.safetensors' is unreadable",
    ),
    "statistics NaN": (_nan_stats, "not finite"),
}

MASKS: dict[str, tuple[Any, str]] = {
    "strings": ([["a", "b"]], "not a list of whole neuron indices"),
    "nones": ([[None]], "not a list of whole neuron indices"),
    "ragged": ([[[[1, 2], [3]]]], "not a list of whole neuron indices"),
    "booleans": ([[torch.tensor([True, False])]], "not a list of whole neuron indices"),
    "floats": ([[torch.tensor([1.5])]], "not a list of whole neuron indices"),
    "repeated neuron": ([[torch.tensor([4, 4])]], "names a neuron twice"),
    "index 10^12": ([[torch.tensor([10**12])]], "no model has"),
    "negative index": ([[torch.tensor([-1])]], "negative"),
    "a dict": ({"en": [1]}, "not a list over languages"),
}

LINKS: list[tuple[str, str]] = [
    ("top_rate", "nan"),
    ("top_rate", "inf"),
    ("top_rate", "7"),
    ("top_rate", "-0.1"),
    ("filter_rate", "abc"),
    ("strength", "nan"),
    ("strength", "-3"),
    ("strength", "99"),
    ("budget", "many"),
    ("layer", "three"),
    ("neuron", "1.5"),
    ("zoom", "900-100"),
    ("zoom", "a-b"),
    ("layers", "5-1"),
    ("langs", "en,en"),
    ("langs", "en,<script>"),
    ("off", "fr,fr"),
    ("also_off", "<b>x</b>"),
]

UPLOADS: list[tuple[str, int, str]] = [
    ("../../x.txt", 10, "name each file after its language code"),
    ("/etc/passwd.txt", 10, "name each file after its language code"),
    ("german.doc", 10, "name each file after its language code"),
    ("fr.txt.exe", 10, "name each file after its language code"),
    ("<b>.txt", 10, "name each file after its language code"),
    ("fr.txt", 6_000_000, "the limit is"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory, save_tiny_model):
    """The places the cases name: a tiny model, a run of it, a user's folder, and more."""
    root = tmp_path_factory.mktemp("audit")
    model = save_tiny_model("qwen2", root / "tiny-qwen2")
    run = root / "run"
    argv = compute_args(model, "en,fr,ja", max_tokens=150, seq_len=64, out=run, quiet=True)
    assert main(argv) == 0
    users = root / "users"
    (users / "photos").mkdir(parents=True)
    (users / "photos" / "cat.jpg").write_bytes(b"a cat")
    (users / "thesis.tex").write_text("chapter 1")
    (root / "file.txt").write_text("a file")
    os.symlink(root / "nowhere", root / "dangling")
    latin = root / "latin"
    latin.mkdir()
    (latin / "en.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    (latin / "fr.txt").write_text("Bonjour le monde.\n" * 50)
    (root / "empty").mkdir()
    (root / "text.pth").write_text("not a mask")
    (root / "bad.toml").write_text("max_new_tokens = 0\n")
    (root / "deep.json").write_text("[" * 100_000)
    (root / "list.json").write_text("[1, 2]")
    (root / "empty.json").write_text("{}")
    return {
        "model": str(model),
        "run": str(run),
        "users": str(users),
        "tmp": str(root),
        "file": str(root / "file.txt"),
        "dangling": str(root / "dangling"),
        "latin": str(latin),
        "empty": str(root / "empty"),
        "textmask": str(root / "text.pth"),
        "goodmask": str(run / "activation_mask.pth"),
        "badtoml": str(root / "bad.toml"),
        "deepjson": str(root / "deep.json"),
        "listjson": str(root / "list.json"),
        "emptyjson": str(root / "empty.json"),
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _one_line(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as stopped:  # argparse's own refusal
        status = int(stopped.code or 0)
    captured = capsys.readouterr()
    return status, captured.err


def test_the_audit_holds_over_a_hundred_cases():
    assert len(CLI) + len(DAMAGES) + len(MASKS) * 2 + len(LINKS) + len(UPLOADS) >= 100
    assert len({case.name for case in CLI}) == len(CLI)


@pytest.mark.parametrize("case", CLI, ids=[case.name for case in CLI])
def test_command_line(case: Case, places, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    filled = {**places, "new": str(tmp_path / "new-run")}
    argv = [part.format(**filled) for part in case.argv]
    users = Path(places["users"])
    before = _snapshot(users)
    status, err = _one_line(argv, capsys)
    assert status == case.status, err
    assert "unexpectedly" not in err and "Traceback" not in err, err
    if case.status:
        # One line says it (argparse prints its usage above it; loading a model, a line).
        last = err.strip().splitlines()[-1]
        assert "error:" in last and case.says in last, err
        assert not (tmp_path / "new-run").exists()  # nothing half-written
    assert _snapshot(users) == before  # a user's folder is never touched


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_run_folder(damage, places, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(places["run"], out)
    change, says = DAMAGES[damage]
    change(out)
    for argv in (
        ["show", str(out)],
        ["merge", str(out), places["run"], "--out", str(tmp_path / "m")],
        ["dashboard", "--run", str(out)],  # refused before any server starts
    ):
        status, err = _one_line(argv, capsys)
        assert status == 2 and says in err, err
        assert "unexpectedly" not in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", list(MASKS), ids=list(MASKS))
def test_a_malformed_mask(name, places, tmp_path, capsys):
    entries, says = MASKS[name]
    path = tmp_path / "mask.pth"
    torch.save(entries, path)
    status, err = _one_line(["show", str(path), "--languages", "en"], capsys)
    assert status == 2 and says in err, err
    out = tmp_path / "imported"
    argv = ["import-mask", str(path), "--languages", "en", "--model", places["model"]]
    status, err = _one_line([*argv, "--out", str(out)], capsys)
    assert status == 2 and "unexpectedly" not in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(("name", "raw"), LINKS, ids=[f"{n}={v}" for n, v in LINKS])
def test_a_link_value_that_is_wrong_is_ignored(name, raw):
    from langneurons.dashboard.state import LINKS as PARSERS

    (link,) = [link for link in PARSERS if link.url == name]
    with pytest.raises((ValueError, TypeError)):
        link.parse(raw)  # restore_from_url ignores it and says so in the sidebar


@pytest.mark.parametrize(("name", "size", "says"), UPLOADS, ids=[u[0] for u in UPLOADS])
def test_an_upload_that_is_wrong_is_refused(name, size, says):
    from langneurons.dashboard.server import UploadFolder
    from langneurons.errors import CorpusError

    class Upload:
        def __init__(self) -> None:
            self.name = name

        def getvalue(self) -> bytes:
            return b"x" * size

    folder = UploadFolder()
    try:
        with pytest.raises(CorpusError, match=says):
            folder.save([Upload()], max_bytes=5_000_000)
        assert list(folder.path.iterdir()) == []
    finally:
        folder.remove()


def test_a_results_file_replaces_only_its_own_earlier_version(tmp_path):
    from langneurons.errors import ResultsError
    from langneurons.workflows import write_json_atomic

    out = tmp_path / "nll.json"
    write_json_atomic(out, {"languages": ["en"], "value": 1})
    write_json_atomic(out, {"languages": ["en"], "value": 2})  # our own: replaced
    assert json.loads(out.read_text())["value"] == 2
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    with pytest.raises(ResultsError, match="never replaced"):
        write_json_atomic(notes, {"value": 3})
    assert notes.read_text() == '{"mine": true}'


def test_a_models_folder_that_cannot_be_written_gets_one_line(
    places, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LANGNEURONS_MODELS", str(Path(places["file"]) / "models"))
    argv = ["compute", "--languages", "en,fr", "--out", str(tmp_path / "run")]
    status, err = _one_line(argv, capsys)
    assert status == 2, err
    last = err.strip().splitlines()[-1]
    assert "Cannot convert the embedded model" in last and "LANGNEURONS_MODELS" in last
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_samples_with_values_that_are_not_finite_are_refused(tmp_path, value):
    from safetensors.torch import save_file

    from langneurons.errors import LangNeuronsError
    from langneurons.samples import SampleActivations, read_samples, samples_tensors

    means = torch.rand(4, 2, 8).to(torch.float16)
    means[1, 0, 3] = value
    samples = SampleActivations(["en", "fr"], torch.tensor([0, 0, 1, 1]), means, 32)
    tensors, metadata = samples_tensors(samples)
    save_file(tensors, str(tmp_path / "samples.safetensors"), metadata=metadata)
    with pytest.raises(LangNeuronsError, match="not finite"):
        read_samples(tmp_path / "samples.safetensors")
