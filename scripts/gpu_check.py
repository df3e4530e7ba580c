"""One-shot check on a GPU machine: does `compute` on CUDA agree with the CPU, how fast is it?

Needs no model hub and no install (``PYTHONPATH=core``): it builds a random-weight model of
the embedded default's shape (Gemma 3 270M: 18 layers x 2048 neurons, or ``--shape 1b``
for a larger one) and a BPE tokenizer trained on the embedded UDHR, then

1. counts the same windows with ``compute`` on the CPU (float32) and on the device
   (float32, and bfloat16), and compares token counts (must be equal), activation
   counts (how many of the layer x neuron x language counts differ, and by how much)
   and the LAPE masks (Jaccard overlap per language);
2. times the statistics pass and the bare transformer body on the device over a larger
   corpus (the UDHR repeated), as tokens per second, and their ratio;
3. with ``--launch``: runs the same ``compute`` under ``torchrun`` (one rank: on CUDA the
   nccl backend, its all-reduce and barrier) and with ``--device auto`` (an automatic
   device map), and compares both with the in-process device run;
4. with ``--bench``: ``langneurons bench`` on the same model on the device;
5. with ``--sessions 16,64``: that many sessions each generating a traced side-by-side pair
   at once on the one loaded model (the dashboard's decode loop serving a class), in each
   device dtype, against one pair alone, and whether every greedy text equals its solo run.

It writes ``gpu_check.json`` into ``--out`` and prints it.  Random weights give the same
speed as trained ones of that shape; their activation patterns are not a trained model's,
so the agreement figures are about arithmetic, not about which neurons a model has.

    PYTHONPATH=core python3 scripts/gpu_check.py --out DIR [--device cuda] [--shape 270m]
        [--launch] [--bench [--bench-dtype bfloat16]] [--sessions 16,64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from langneurons.tiny import GEMMA3_SHAPES

LANGUAGES = ["en", "fr", "de", "es", "zh", "ja", "ru", "ar", "hi", "ko"]


def build_model(folder: Path, shape: str, vocab: int) -> Path:
    """A seeded random-weight Gemma 3 text model of ``shape`` with a UDHR-trained tokenizer."""
    from langneurons.tiny import random_gemma3, train_tokenizer

    return random_gemma3(folder, shape, train_tokenizer(LANGUAGES, vocab))


def repeated_corpus(folder: Path, times: int) -> Path:
    """The UDHR of every language, each paragraph list repeated ``times`` times."""
    from langneurons.corpus import load_corpus

    corpus = load_corpus("udhr", LANGUAGES)
    folder.mkdir(parents=True, exist_ok=True)
    for code in LANGUAGES:
        paragraphs = list(corpus.texts[code].paragraphs) * times
        (folder / f"{code}.txt").write_text("\n".join(paragraphs), "utf-8")
    return folder


def agreement(reference: Any, other: Any) -> dict:
    """How ``other``'s counts and masks differ from ``reference``'s (ComputeResults)."""
    a, b = reference.statistics, other.statistics
    diff = (a.over_zero - b.over_zero).abs()
    jaccard = {}
    for k, code in enumerate(a.languages):
        left = {(layer, int(i)) for layer, t in enumerate(reference.selection.masks[k]) for i in t}
        right = {(layer, int(i)) for layer, t in enumerate(other.selection.masks[k]) for i in t}
        union = left | right
        jaccard[code] = round(len(left & right) / len(union), 4) if union else 1.0
    return {
        "tokens_equal": bool(torch.equal(a.tokens, b.tokens)),
        "counts": int(diff.numel()),
        "counts_differing": int((diff > 0).sum()),
        "max_count_difference": int(diff.max()),
        "max_relative_difference": float((diff.double() / a.tokens.double()).max()),
        "mask_jaccard": jaccard,
        "mask_sizes": {
            code: [
                sum(len(t) for t in reference.selection.masks[k]),
                sum(len(t) for t in other.selection.masks[k]),
            ]
            for k, code in enumerate(a.languages)
        },
    }


def throughput(model_dir: Path, corpus: Path, device: str, dtype: str, batch_size: int) -> dict:
    """Tokens per second of the statistics pass and of the bare body, interleaved, best of 3."""
    from langneurons.bench import batches_of, forward_only, synchronize
    from langneurons.corpus import load_corpus, tokenize_windows
    from langneurons.models import load_model
    from langneurons.stats import collect_language_stats

    lm = load_model(str(model_dir), device=device, dtype=dtype)
    text = load_corpus(str(corpus), LANGUAGES)
    windows = [
        w
        for code in LANGUAGES
        for w in tokenize_windows(
            lm.tokenizer, text.identify_text(code), max_tokens=None, seq_len=512, language=code
        )
    ]
    tokens = sum(len(w) - 1 for w in windows)
    batches = batches_of(windows, batch_size)
    best = {"stats": float("inf"), "forward": float("inf")}
    collect_language_stats(lm, windows[: batch_size * 2], batch_size=batch_size)  # warm-up
    for _ in range(3):
        for name in best:
            synchronize(lm.input_device)
            start = time.perf_counter()
            if name == "stats":
                collect_language_stats(lm, windows, batch_size=batch_size)
            else:
                forward_only(lm, batches)
            synchronize(lm.input_device)
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
        "seq_len": 512,
        "tokens": tokens,
        "stats_tokens_per_s": round(tokens / best["stats"]),
        "forward_tokens_per_s": round(tokens / best["forward"]),
        "stats_vs_forward": round(best["forward"] / best["stats"], 3),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.startswith("cuda")
        else None,
    }


def launched(model_dir: Path, device: str, max_tokens: int, out: Path) -> dict:
    """``compute`` under ``torchrun`` with one rank (nccl on CUDA, gloo on the CPU)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
        "torchrun"
    )
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    command = [
        *launcher,
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "langneurons.cli",
        "compute",
        "--model",
        str(model_dir),
        "--languages",
        ",".join(LANGUAGES),
        "--device",
        device,
        "--dtype",
        "float32",
        "--max-tokens",
        str(max_tokens),
        "--no-cache",
        "--quiet",
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"ok": False, "stderr": done.stderr[-3000:]}
    from langneurons.results import read_run

    run = read_run(out)
    return {"ok": True, "seconds": round(time.perf_counter() - start, 1), "run": run}


def same_counts(left: Any, right: Any) -> dict:
    """Whether two Statistics hold the same counts (exactly, or how many differ)."""
    diff = (left.over_zero - right.over_zero).abs()
    return {
        "tokens_equal": bool(torch.equal(left.tokens, right.tokens)),
        "counts_differing": int((diff > 0).sum()),
        "max_count_difference": int(diff.max()),
    }


def _counts(text: str) -> list[int]:
    """``16,64``: whole numbers of 1 or more, separated by commas."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers of 1 or more, e.g. 16,64")
    return counts


def _positive(text: str) -> int:
    """One whole number of 1 or more."""
    (count,) = _counts(text) if "," not in text else [0]
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one whole number of 1 or more")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda", help="the device to compare with the CPU")
    parser.add_argument("--shape", default="270m", choices=sorted(GEMMA3_SHAPES))
    parser.add_argument("--vocab", type=int, default=8000, help="tokenizer vocabulary size")
    parser.add_argument("--max-tokens", type=int, default=2000, help="per language, agreement")
    parser.add_argument("--repeat-text", type=int, default=20, help="UDHR copies, throughput")
    parser.add_argument("--batch-sizes", default="8,32", help="throughput batch sizes")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="device dtypes to check")
    parser.add_argument(
        "--launch", action="store_true", help="also compute under torchrun and --device auto"
    )
    parser.add_argument("--bench", action="store_true", help="also run langneurons bench")
    parser.add_argument("--bench-dtype", default="bfloat16", help="dtype for --bench")
    parser.add_argument("--quick-bench", action="store_true", help="bench --quick")
    parser.add_argument(
        "--sessions",
        type=_counts,
        default=[],
        help="session counts generating at once, e.g. 16,64",
    )
    parser.add_argument("--session-tokens", type=_positive, default=30, help="new tokens a session")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(
            f"--device {args.device}: PyTorch sees no CUDA GPU here. Run this on a GPU machine, "
            "or pass --device cpu for a dry run."
        )

    from langneurons.pipeline import compute

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "shape": args.shape,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LANGNEURONS_CACHE"] = str(Path(scratch) / "cache")
        model_dir = build_model(Path(scratch) / "model", args.shape, args.vocab)
        common = {"max_tokens": args.max_tokens, "seq_len": 512, "use_cache": False}
        start = time.perf_counter()
        cpu = compute(str(model_dir), LANGUAGES, load_options={"device": "cpu"}, **common)
        report["cpu_compute_s"] = round(time.perf_counter() - start, 1)
        report["agreement"] = {}
        dtypes = args.dtypes.split(",")
        for dtype in dtypes:
            start = time.perf_counter()
            other = compute(
                str(model_dir),
                LANGUAGES,
                load_options={"device": args.device, "dtype": dtype},
                **common,
            )
            report["agreement"][dtype] = {
                **agreement(cpu, other),
                "compute_s": round(time.perf_counter() - start, 1),
            }
            if dtype == "float32":
                device_f32 = other
        if args.launch:
            if "float32" not in dtypes:
                parser.error("--launch compares with the device's float32 run: keep float32")
            outcome = launched(model_dir, args.device, args.max_tokens, Path(scratch) / "run")
            if outcome["ok"]:
                run = outcome.pop("run")
                outcome.update(same_counts(device_f32.statistics, run.statistics))
                outcome["backend"] = "nccl" if args.device.startswith("cuda") else "gloo"
            report["torchrun_one_rank"] = outcome
            from langneurons.models import load_model

            start = time.perf_counter()
            lm_auto = load_model(str(model_dir), device="auto", dtype="float32")
            auto = compute(lm_auto, LANGUAGES, **common)
            report["device_auto"] = {
                **same_counts(device_f32.statistics, auto.statistics),
                "seconds": round(time.perf_counter() - start, 1),
                "devices": sorted({str(p.device) for p in lm_auto.model.parameters()}),
            }
            del lm_auto
        corpus = repeated_corpus(Path(scratch) / "corpus", args.repeat_text)
        report["throughput"] = [
            throughput(model_dir, corpus, args.device, dtype, int(batch))
            for dtype in dtypes
            for batch in args.batch_sizes.split(",")
        ]
        if args.sessions:
            from langneurons.bench import concurrent_sessions
            from langneurons.models import load_model

            report["sessions"] = []
            for dtype in dtypes:
                lm = load_model(str(model_dir), device=args.device, dtype=dtype)
                for count in args.sessions:
                    figures = concurrent_sessions(lm, count, args.session_tokens)
                    report["sessions"].append({"dtype": dtype, **figures})
                    print(json.dumps(report["sessions"][-1]), flush=True)
                del lm
        if args.bench:
            from langneurons.bench import run_bench

            report["bench"] = run_bench(
                str(model_dir),
                quick=args.quick_bench,
                dtype=args.bench_dtype,
                device=args.device,
            )
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
