"""``langneurons ablation`` (also ``ppl``): the ablation matrix of a run."""

from __future__ import annotations

import argparse
from typing import Any

from .common import ProgressPrinter, add_model_options, add_run_option, load_for, positive_int

DESCRIPTION = (
    "The ablation matrix: the mean negative log-likelihood per token (natural log) of each "
    "language's held-out text, unmodified and with each language's neurons deactivated in "
    "turn. Writes {languages, base, deactivated: {A: {B: nll}}} as JSON and prints the table "
    "(rows: neurons off; columns: the language evaluated)."
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "ablation",
        aliases=["ppl"],
        help="ablation matrix: each language's neurons off, every language's held-out NLL",
        description=DESCRIPTION,
    )
    add_run_option(parser)
    add_model_options(parser, default_help="the model the run was computed with")
    parser.add_argument("--languages", default=None, help="subset of the run's languages")
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="held-out tokens per language (default: all; required for a run on an hf: "
        "corpus, whose held-out records are then streamed)",
    )
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..results import read_run
    from ..workflows import check_output_file, run_ablation_matrix, write_json_atomic

    check_output_file(args.out)  # before any work, so nothing computed is lost
    run_folder = read_run(args.run)
    printer = ProgressPrinter(args.quiet)
    try:
        lm = load_for(args, run_folder, printer)
        matrix = run_ablation_matrix(
            lm, run_folder, args.languages, max_tokens=args.max_tokens, progress=printer
        )
    finally:
        printer.close()
    write_json_atomic(args.out, matrix.to_json())
    codes = matrix.languages
    width = max(7, *(len(c) + 2 for c in codes))
    print("NLL per token (rows: neurons off; columns: evaluated language)")
    print(" " * 8 + "".join(f"{c:>{width}}" for c in codes))
    print(f"{'base':>8}" + "".join(f"{matrix.base[c]:>{width}.3f}" for c in codes))
    for off in codes:
        row = matrix.deactivated[off]
        print(f"{off + ' off':>8}" + "".join(f"{row[c]:>{width}.3f}" for c in codes))
    print(f"Diagonal over off-diagonal NLL increase: {matrix.diagonal_ratio():.2f}")
    print(f"Wrote {args.out}.")
    return 0
