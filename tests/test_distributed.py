"""Data-parallel statistics: two torchrun processes (gloo, CPU) equal one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langneurons.cli import main

from .helpers import compute_args, torchrun


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, save_tiny_model):
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_two_processes_equal_one(model_dir, tmp_path, batch_size, isolated_cache):
    args = compute_args(
        model_dir, "en,fr,ja", max_tokens=700, seq_len=64, batch_size=batch_size, quiet=True
    )
    assert main([*args, "--out", str(tmp_path / "single"), "--no-cache"]) == 0
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "dist-cache"), "OMP_NUM_THREADS": "1"}
    launcher = [
        *torchrun(),
        "--standalone",  # rendezvous on a free local port
        "--nproc_per_node",
        "2",
        "-m",
        "langneurons.cli",
    ]
    done = subprocess.run(
        # Each rank saves checkpoints of its share as it goes (every 100 tokens here).
        [*launcher, *args, "--checkpoint-tokens", "100", "--out", str(tmp_path / "dist")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    single = load_file(tmp_path / "single" / "stats.safetensors")
    dist = load_file(tmp_path / "dist" / "stats.safetensors")
    assert torch.equal(single["tokens"], dist["tokens"])  # exact
    diff = (single["over_zero"] - dist["over_zero"]).abs()
    if batch_size == "1":
        assert torch.equal(single["over_zero"], dist["over_zero"])
    else:  # batch shapes differ between ranks: rounding may flip a value next to zero
        assert int(diff.sum()) <= 5
    assert torch.allclose(single["activation_sum"], dist["activation_sum"], rtol=1e-4, atol=1e-3)
    meta = json.loads((tmp_path / "dist" / "meta.json").read_text())
    assert meta["world_size"] == 2
    partials = tmp_path / "dist-cache" / "stats" / "partial"
    assert partials.is_dir() and not list(partials.iterdir())  # written, then dropped
    # Rank 0 wrote the cache: a second distributed run reads it.
    again = subprocess.run(
        [*launcher, *args, "--out", str(tmp_path / "dist2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 language(s) from cache" in again.stdout


def _assert_equals_one_process(args: list[str], launched: Path, single: Path) -> None:
    """A launched two-process run in ``launched`` has the counts of ``args`` run alone."""
    assert main([*args, "--no-cache", "--out", str(single)]) == 0
    a = load_file(single / "stats.safetensors")
    b = load_file(launched / "stats.safetensors")
    assert torch.equal(a["tokens"], b["tokens"])
    assert torch.equal(a["over_zero"], b["over_zero"])
    assert json.loads((launched / "meta.json").read_text())["world_size"] == 2


def test_device_map_auto_counts_and_intervenes(model_dir):
    """--device auto loads through an automatic device map and gives the same counts and
    interventions (on this CPU-only machine the map has one device; several GPUs are not
    covered here)."""
    from langneurons.corpus import load_corpus, tokenize_windows
    from langneurons.generation import GenerationConfig, generate
    from langneurons.interventions import active_hook_count, deactivate
    from langneurons.models import load_model
    from langneurons.stats import collect_language_stats

    mapped = load_model(str(model_dir), device="auto", dtype="float32")
    plain = load_model(str(model_dir), device="cpu", dtype="float32")
    text = load_corpus("udhr", ["fr"]).identify_text("fr")
    windows = tokenize_windows(plain.tokenizer, text, max_tokens=200, seq_len=64)
    a = collect_language_stats(mapped, windows, batch_size=1)
    b = collect_language_stats(plain, windows, batch_size=1)
    assert torch.equal(a.over_zero, b.over_zero)
    off = deactivate({0: torch.arange(48), 1: torch.arange(48)})
    config = GenerationConfig(max_new_tokens=8)
    assert generate(mapped, "Everyone", config, off) == generate(plain, "Everyone", config, off)
    assert active_hook_count(mapped) == 0


RESUMABLE_RUN = """
import sys

from langneurons.distributed import shutdown
from langneurons.pipeline import compute


class Stop(Exception):
    pass


def stop_early(event):
    if event.stage == "count" and event.done >= 150:
        raise Stop


def report_resume(event):
    if event.stage == "resume":
        print("resumed after", event.done, flush=True)


try:
    compute(
        sys.argv[1],
        ["en", "ja"],
        max_tokens=700,
        seq_len=64,
        batch_size=1,
        checkpoint_tokens=50,
        out_dir=sys.argv[2],
        progress=stop_early if sys.argv[3] == "stop" else report_resume,
    )
finally:
    if sys.argv[3] != "stop":
        shutdown()
"""


def test_interrupted_ranks_resume_their_own_shares(model_dir, tmp_path):
    """Rank 0 stops part-way (its launcher then ends rank 1); the next launch continues
    each rank's checkpoint and gives the single-process counts exactly."""
    script = tmp_path / "run.py"
    script.write_text(RESUMABLE_RUN)
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    launch = [*torchrun(), "--standalone", "--nproc_per_node", "2", str(script), str(model_dir)]
    stopped = subprocess.run(
        [*launch, str(tmp_path / "x"), "stop"], env=env, capture_output=True, text=True, timeout=600
    )
    assert stopped.returncode != 0
    partials = tmp_path / "cache" / "stats" / "partial"
    assert any(p.name.endswith(".r0of2.safetensors") for p in partials.iterdir())
    resumed = subprocess.run(
        [*launch, str(tmp_path / "dist"), "go"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after" in resumed.stdout  # rank 0 went on from its checkpoint
    assert not list(partials.iterdir())
    args = ["--model", str(model_dir), "--languages", "en,ja", "--max-tokens", "700"]
    single = tmp_path / "single"
    options = ["--seq-len", "64", "--batch-size", "1", "--no-cache", "--quiet"]
    assert main(["compute", *args, *options, "--out", str(single)]) == 0
    a = load_file(single / "stats.safetensors")
    b = load_file(tmp_path / "dist" / "stats.safetensors")
    assert torch.equal(a["tokens"], b["tokens"])
    assert torch.equal(a["over_zero"], b["over_zero"])


def test_accelerate_launch_equals_one_process(model_dir, tmp_path):
    """`accelerate launch --multi_gpu` runs torchrun underneath; on a machine without GPUs
    its two processes join over gloo and count exactly like one process."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launcher = [accelerate] if accelerate else [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate:
        launcher.append("launch")
    args = [
        "compute",
        "--model",
        str(model_dir),
        "--languages",
        "en,ja",
        "--max-tokens",
        "500",
        "--seq-len",
        "64",
        "--batch-size",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    options = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    options += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = subprocess.run(
        [*launcher, *options, "-m", "langneurons.cli", *args, "--out", str(tmp_path / "acc")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_equals_one_process(args, tmp_path / "acc", tmp_path / "single")


def test_two_nodes_rendezvous_like_a_cluster_job(model_dir, tmp_path):
    """Two torchrun agents meeting over a c10d rendezvous, as on two Slurm nodes (here
    both on this machine), count exactly like one process."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["compute", "--model", str(model_dir), "--languages", "en,fr", "--max-tokens", "500"]
    args += ["--seq-len", "64", "--batch-size", "1", "--quiet"]
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    agents = [
        subprocess.Popen(
            [
                *torchrun(),
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--rdzv_backend",
                "c10d",
                "--rdzv_endpoint",
                f"127.0.0.1:{port}",
                "--rdzv_id",
                "test-job",
                "-m",
                "langneurons.cli",
                *args,
                "--out",
                str(tmp_path / "nodes"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for agent in agents:
        _out, err = agent.communicate(timeout=600)
        assert agent.returncode == 0, err[-3000:]
    _assert_equals_one_process(args, tmp_path / "nodes", tmp_path / "single")


SRUN = """#!/bin/bash
# One task per node, as `srun` in a job with --ntasks-per-node=1; here all on one machine.
pids=()
for _ in $(seq 1 "$SLURM_NNODES"); do "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


def test_the_documented_slurm_script_runs(model_dir, tmp_path):
    """docs/slurm/compute.sbatch, with `srun` and `scontrol` stood in for by two local
    processes, gives the single-process counts."""
    import socket

    script = Path(__file__).parent.parent / "docs" / "slurm" / "compute.sbatch"
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "srun").write_text(SRUN)
    (shims / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n")
    for shim in shims.iterdir():
        shim.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PATH": f"{shims}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "RANKS_PER_NODE": "1",
        "RDZV_PORT": str(port),
        "MODEL": str(model_dir),
        "LANGUAGES": "en,ja",
        "CORPUS": "udhr",
        "MAX_TOKENS": "1500",
        "DTYPE": "float32",
        "OUT": str(tmp_path / "slurm"),
        "LANGNEURONS_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    args = ["compute", "--model", str(model_dir), "--languages", "en,ja", "--max-tokens", "1500"]
    assert main([*args, "--no-cache", "--quiet", "--out", str(tmp_path / "single")]) == 0
    a = load_file(tmp_path / "single" / "stats.safetensors")
    b = load_file(tmp_path / "slurm" / "stats.safetensors")
    assert torch.equal(a["tokens"], b["tokens"])
    assert int((a["over_zero"] - b["over_zero"]).abs().sum()) <= 5  # batch shapes differ
    assert json.loads((tmp_path / "slurm" / "meta.json").read_text())["world_size"] == 2


def test_two_processes_share_the_per_sample_pass_and_equal_one(model_dir, tmp_path):
    """Average precision under torchrun: each rank takes half of every language's windows
    for the per-sample pass, and the gathered samples are those of one process, in order."""
    from langneurons.results import read_run

    args = compute_args(model_dir, "en,fr,ja", max_tokens=600, seq_len=64, batch_size=1, quiet=True)
    args += ["--method", "average-precision", "--top-rate", "0.3", "--min-ap", "0.3"]
    assert main([*args, "--no-cache", "--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "dist-cache"), "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [
            *torchrun(),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "langneurons.cli",
            *args,
            "--out",
            str(tmp_path / "dist"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    single, dist = read_run(tmp_path / "single"), read_run(tmp_path / "dist")
    assert single.samples is not None and dist.samples is not None
    assert torch.equal(single.samples.language, dist.samples.language)
    assert single.samples.means.shape == dist.samples.means.shape
    torch.testing.assert_close(dist.samples.means, single.samples.means, rtol=0, atol=2e-3)
    # Rank 0 cached each language's samples once, whole.
    cached = list((tmp_path / "dist-cache" / "samples").glob("*.safetensors"))
    assert len(cached) == 3

    def chosen(run):
        return {
            (k, layer, int(n))
            for k, per_layer in enumerate(run.masks)
            for layer, idx in enumerate(per_layer)
            for n in idx
        }

    a, b = chosen(single), chosen(dist)
    assert a  # the low bar below makes a random model's neurons count
    assert len(a & b) / len(a | b) > 0.95  # the same neurons, but for ties moved by rounding
