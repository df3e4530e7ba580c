"""``langneurons compare-detectors``: every detector on one run, and what its neurons do."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .common import (
    add_model_options,
    add_quiet_option,
    add_run_option,
    detector_names,
    load_for,
    positive_int,
    progress_for,
)

DESCRIPTION = (
    "Select neurons with each detector (default: all, each with its default settings) on a "
    "run's statistics and compare: neurons per language, Jaccard overlap between methods per "
    "language, and what each method's neurons do: each language's own NLL increase with its "
    "neurons off, the ablation matrix's diagonal ratio, and steering success at strength 1 "
    "on everyday English openings. --no-effects compares the selections alone, without the "
    "model. Cached."
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "compare-detectors",
        help="compare the detectors on one run: counts, overlap, and their neurons' effects",
        description=DESCRIPTION,
    )
    add_run_option(parser)
    add_model_options(parser, default_help="the model the run was computed with")
    parser.add_argument(
        "--methods", type=detector_names, default=None, help="comma-separated (default: all)"
    )
    parser.add_argument(
        "--no-effects", action="store_true", help="compare the selections only (no model)"
    )
    parser.add_argument(
        "--max-tokens", type=positive_int, default=300, help="held-out tokens per language"
    )
    parser.add_argument(
        "--prompts", type=positive_int, default=8, help="English openings steered (default 8)"
    )
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=30, help="tokens per steered output"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..comparison import compare_detectors
    from ..prompts import embedded_prompts
    from ..results import read_run

    run_folder = read_run(args.run)
    methods = args.methods  # checked names, or None for all
    progress = progress_for(args)
    lm = None if args.no_effects else load_for(args, run_folder, progress)
    comparison = compare_detectors(
        lm,
        run_folder,
        methods,
        effects=not args.no_effects,
        max_tokens=args.max_tokens,
        prompts=embedded_prompts("en")[: args.prompts],
        max_new_tokens=args.max_new_tokens,
        progress=progress,
    )
    progress.close()
    if args.json:
        print(json.dumps(comparison.to_json(), indent=2))
        return 0
    print("neurons per language")
    print(comparison.neurons().to_string())
    overlap = comparison.overlap()
    if len(overlap):
        print("\nJaccard overlap between methods")
        table = overlap.pivot_table(
            index=["method_a", "method_b"], columns="language", values="jaccard"
        )
        print(table[comparison.languages].round(2).to_string())
    if not args.no_effects:
        effects = comparison.effects()
        print("\nwhat the neurons do (own NLL increase with them off; steering success at 1)")
        for name, column in (
            ("own NLL increase", "own_nll_increase"),
            ("steering success", "steering_success"),
        ):
            table = effects.pivot(index="method", columns="language", values=column)
            print(f"\n{name}")
            print(table.loc[comparison.methods, comparison.languages].round(2).to_string())
        ratios = effects.groupby("method")["diagonal_ratio"].first()
        print(
            "\ndiagonal ratio: "
            + ", ".join(
                f"{m} {r:.2f}" if not math.isnan(r) else f"{m} -" for m, r in ratios.items()
            )
        )
    return 0
