"""Subcommands on run folders: ``show``, ``merge`` and ``import-mask``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import ProgressPrinter, add_model_options, load_for, summary_lines


def register(sub: Any) -> None:
    show = sub.add_parser(
        "show",
        help="summarise a run folder or a published mask file",
        description="Print what a run folder holds: its model, languages, tokens counted, "
        "neurons per language and the layers that hold most of them, the corpus and how "
        "many processes counted it. Given a reference-format mask file (.pth) and its "
        "languages, the same summary without any model (the neuron range from --config "
        "when given, else the largest index).",
    )
    show.add_argument(
        "run", help="a run folder written by compute, merge or import-mask, or a .pth mask"
    )
    show.add_argument("--languages", default=None, help="a mask file's codes, in its order")
    show.add_argument(
        "--config",
        default=None,
        metavar="CONFIG",
        help="a mask's model config.json (or its folder; no weights needed) to check it",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=run_show)

    merge = sub.add_parser(
        "merge",
        help="sum the statistics of separate runs and select again",
        description="Sum per-language statistics of runs of the same model and counting "
        "settings (other machines, other shards of text), refusing incompatible runs, and "
        "write a new run with the selection made on the sums (the first run's method and "
        "settings).",
    )
    merge.add_argument("runs", nargs="+", help="run folders written by compute")
    merge.add_argument("--out", required=True, help="output folder")
    merge.set_defaults(handler=run_merge)

    imp = sub.add_parser(
        "import-mask",
        help="read a neuron mask in the reference format into a run folder",
        description="Read activation_mask-style files (a list over languages of lists over "
        "layers of index tensors) safely, without pickle, check them against the model (or "
        "its config.json alone, with --config and no --model), and write a run folder that "
        "generate can use.",
    )
    imp.add_argument("file", help="the .pth mask file")
    imp.add_argument("--languages", required=True, help="codes in the mask's order")
    add_model_options(imp)
    imp.add_argument(
        "--config",
        default=None,
        metavar="CONFIG",
        help="check against the model's config.json (or its folder) alone, without loading "
        "the model (give --model later, to generate)",
    )
    imp.add_argument("--out", required=True, help="output folder")
    imp.set_defaults(handler=run_import_mask)


def summary_document(run: Any) -> dict[str, Any]:
    """``show --json``: what a run folder holds, in one JSON object."""
    from ..results import corpus_label

    tokens = run.statistics.tokens.tolist() if run.statistics is not None else None
    return {
        "path": str(run.path),
        "model": run.meta.get("model", {}),
        "languages": run.languages,
        "tokens": dict(zip(run.languages, tokens, strict=True)) if tokens else None,
        "corpus": corpus_label(run.meta),
        "selection": run.meta.get("selection", {}),
        "neurons": {code: run.neurons["neurons"][code]["total"] for code in run.languages},
        "distinct_neurons": run.neurons.get("distinct_total"),
        "world_size": run.meta.get("world_size", 1),
        "created": run.meta.get("created"),
    }


def _show_mask(args: argparse.Namespace) -> int:
    from ..corpus import parse_languages
    from ..errors import LangNeuronsError
    from ..maskfile import read_mask_file

    if not args.languages:
        raise LangNeuronsError(
            f"{args.run!r} is a mask file: name its languages in order (--languages en,zh,fr)."
        )
    mask = read_mask_file(args.run, parse_languages(args.languages), args.config)
    if args.json:
        print(json.dumps(mask.summary(), indent=2))
        return 0
    for line in summary_lines(mask.meta(), mask.masks, None):
        print(line)
    width = "from the config" if mask.width_known else "at least, from the largest index"
    print(f"published mask; {mask.num_neurons} neurons per layer {width}; no statistics")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..results import corpus_label, read_run

    if Path(args.run).is_file():
        return _show_mask(args)
    run = read_run(args.run)
    if args.json:
        print(json.dumps(summary_document(run), indent=2))
        return 0
    tokens = run.statistics.tokens.tolist() if run.statistics is not None else None
    for line in summary_lines(run.meta, run.masks, tokens):
        print(line)
    print(
        f"corpus {corpus_label(run.meta)}; created {run.meta.get('created', '?')}; "
        f"processes {run.meta.get('world_size', 1)}"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from ..merge import merge_runs
    from ..results import read_run

    out = merge_runs(args.runs, args.out)
    run = read_run(out)
    assert run.statistics is not None  # a merged run always has statistics
    counted = run.statistics.tokens.tolist()
    for line in summary_lines(run.meta, run.masks, counted):
        print(line)
    tokens = ", ".join(f"{c} {int(t)}" for c, t in zip(run.languages, counted, strict=True))
    print(f"Merged {len(args.runs)} runs into {out} (tokens: {tokens}).")
    return 0


def run_import_mask(args: argparse.Namespace) -> int:
    from ..outputs import check_output_folder
    from ..workflows import import_mask

    check_output_folder(args.out)
    without_model = args.config is not None and args.model is None
    lm = None if without_model else load_for(args, progress=ProgressPrinter(False))
    out = import_mask(args.file, args.languages, lm, args.out, config=args.config)
    print(f"Imported {args.file} for {args.languages} into {out}.")
    return 0
