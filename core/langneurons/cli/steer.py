"""``langneurons steer-eval``: steering measured over many prompts, targets and strengths."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..config import add_arguments, from_args
from ..errors import LangNeuronsError
from .common import (
    add_model_options,
    add_quiet_option,
    add_run_option,
    finite_float,
    load_for,
    progress_for,
)

DESCRIPTION = (
    "Steer a set of prompts towards each target language at each strength (strength 0: the "
    "unmodified model) and measure, per target, strength and layer range: success (share of "
    "outputs identified as the target), line_pass_rate (every line identified as the target), "
    "nll (mean NLL per token of the outputs under the unmodified model: fluency), distinct2 "
    "(distinct token bigrams: against repetition) and n. Cached and resumable; the "
    "recommended strength per target is the most successful one that keeps fluency."
)


def _strengths(value: str) -> list[float]:
    try:
        numbers = [finite_float(part) for part in value.split(",") if part.strip()]
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (in {value!r})") from None
    if not numbers or any(n < 0 for n in numbers):
        raise argparse.ArgumentTypeError("expected numbers of 0 or more, like 0,1,2,4")
    return numbers


def register(sub: Any) -> None:
    from ..steering import STEER_MODES, SteeringConfig

    parser = sub.add_parser(
        "steer-eval",
        help="measure steering: success and fluency per target language and strength",
        description=DESCRIPTION,
    )
    add_run_option(parser)
    add_model_options(parser, default_help="the model the run was computed with")
    parser.add_argument("--targets", required=True, help="languages to steer towards: fr,ja,...")
    parser.add_argument(
        "--strengths", type=_strengths, default=[0.0, 1.0, 2.0, 4.0], help="default: 0,1,2,4"
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="A-B",
        help="steer only in these layers (several ranges: one row each; default: all)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompts", default=None, metavar="FILE", help="one prompt per line")
    source.add_argument(
        "--prompt-language",
        default="en",
        help="the embedded everyday openings of this language (default: en)",
    )
    options = parser.add_argument_group("steering and generation")
    add_arguments(options, SteeringConfig, skip=("deactivate_source", "mode"))
    options.add_argument("--mode", choices=STEER_MODES, default="set", help="default: set")
    options.add_argument(
        "--keep-source",
        action="store_true",
        help="do not switch off the prompt language's neurons while steering",
    )
    recipes = parser.add_argument_group("recipes")
    recipes.add_argument(
        "--search",
        action="store_true",
        help="search a recipe (mode, strength, layer band) per target on the tuning half of "
        "the openings, report it on the held-out half (or on --prompts FILE), and store the "
        "recipes in the run folder (recipes.json)",
    )
    recipes.add_argument(
        "--recipe",
        choices=["run"],
        default=None,
        help="run: evaluate the run folder's stored recipes on the prompts (--prompts FILE, "
        "or the held-out openings)",
    )
    parser.add_argument("--no-cache", action="store_true", help="generate every cell again")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--outputs", action="store_true", help="include every output in the JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..corpus import parse_languages
    from ..interventions import parse_layers
    from ..prompts import embedded_prompts, read_prompts
    from ..results import check_output_file, read_run
    from ..steering import SteeringConfig, check_sweep, steering_sweep

    if args.search and args.recipe:
        raise LangNeuronsError("Give --search (find recipes) or --recipe run (use them), not both.")
    if args.search or args.recipe:
        return _recipes(args)
    config = from_args(SteeringConfig, args, "Steering")
    config = SteeringConfig(
        **{**config.__dict__, "mode": args.mode, "deactivate_source": not args.keep_source}
    )
    out = check_output_file(args.out) if args.out else None
    targets = parse_languages(args.targets)
    prompts = read_prompts(args.prompts) if args.prompts else embedded_prompts(args.prompt_language)
    run_folder = read_run(args.run)
    check_sweep(run_folder.languages, run_folder.statistics, targets, args.strengths, prompts)
    layers = args.layers or [None]
    for spec in layers:
        if spec is not None:
            parse_layers(spec, int(run_folder.meta["layers"]))
    progress = progress_for(args)
    lm = load_for(args, run_folder, progress)
    from ..workflows import check_model_matches

    check_model_matches(lm, run_folder)
    sweep = steering_sweep(
        lm,
        run_folder.masks,
        run_folder.languages,
        run_folder.statistics,
        targets,
        prompts=prompts,
        strengths=args.strengths,
        layers=layers,
        config=config,
        use_cache=not args.no_cache,
        progress=progress,
    )
    progress.close()
    document = sweep.to_json(outputs=args.outputs)
    document["settings"]["run"] = str(run_folder.path)
    if out is not None:
        from ..workflows import write_json_atomic

        write_json_atomic(out, document)
    if args.json:
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    _print_table(document)
    if out is not None:
        print(f"written: {Path(out)}")
    return 0


def _print_table(document: dict[str, Any]) -> None:
    print(
        f"{'target':>6} {'strength':>8} {'layers':>7} {'success':>7} {'lines':>6} "
        f"{'nll':>6} {'dist2':>6} {'n':>4}"
    )
    for row in document["rows"]:
        nll = "-" if math.isnan(row["nll"]) else f"{row['nll']:.2f}"
        print(
            f"{row['target']:>6} {row['strength']:>8g} {row['layers']:>7} {row['success']:>7.2f} "
            f"{row['line_pass_rate']:>6.2f} {nll:>6} {row['distinct2']:>6.2f} {row['n']:>4}"
        )
    for target, ref in document.get("references", {}).items():
        if ref.get("native_nll") is not None:
            print(
                f"{target} written by the unmodified model (reference): in {target} "
                f"{ref['native_success']:.2f}, nll {ref['native_nll']:.2f}, dist2 "
                f"{ref['native_distinct2']:.2f}; allowed: nll <= "
                f"{ref['max_nll']:.2f}, dist2 >= {ref['min_distinct2']:.2f}"
            )
    for target, choice in document["recommended"].items():
        if choice is None:
            print(
                f"recommended for {target}: none (no strength beat the unmodified model "
                "while keeping fluency)"
            )
        else:
            print(
                f"recommended for {target}: strength {choice['strength']:g}, layers "
                f"{choice['layers']} (success {choice['success']:.2f})"
            )


def _recipes(args: argparse.Namespace) -> int:
    """``--search`` and ``--recipe run``."""
    from ..corpus import parse_languages
    from ..prompts import prompt_split, read_prompts
    from ..recipe_search import evaluate_recipes, search_recipes
    from ..recipes import recipes_of
    from ..results import check_output_file, read_run
    from ..workflows import check_model_matches, write_json_atomic

    out = check_output_file(args.out) if args.out else None
    targets = parse_languages(args.targets)
    own = read_prompts(args.prompts) if args.prompts else None
    run_folder = read_run(args.run)
    stored = recipes_of(run_folder)
    if args.recipe == "run" and stored is None:
        raise LangNeuronsError(
            f"{str(run_folder.path)!r} holds no recipes yet: find them with `langneurons "
            f"steer-eval --run {run_folder.path} --targets {','.join(targets)} --search`."
        )
    progress = progress_for(args)
    lm = load_for(args, run_folder, progress)
    check_model_matches(lm, run_folder)
    if args.search:
        book = search_recipes(
            lm,
            run_folder,
            targets,
            held_out=own,
            prompt_language=args.prompt_language,
            use_cache=not args.no_cache,
            progress=progress,
        )
        progress.close()
        merged, dropped = (book, []) if stored is None else stored.merged(book)
        written = merged.save(run_folder.path)
        document: dict[str, Any] = {**book.to_json(), "written": str(written)}
        if dropped:
            document["dropped"] = dropped
            print(
                f"The earlier recipes for {', '.join(dropped)} were found with other settings "
                "or prompts and are no longer kept; search them again with these.",
                file=sys.stderr,
            )
        document["table"] = book.to_frame().to_dict(orient="records")
    else:
        assert stored is not None
        prompts = own if own is not None else prompt_split(args.prompt_language)[1]
        rows = evaluate_recipes(
            lm,
            run_folder,
            stored,
            targets,
            prompts,
            use_cache=not args.no_cache,
            progress=progress,
        )
        progress.close()
        source = args.prompts or f"held-out openings ({args.prompt_language})"
        document = {"rows": rows, "settings": {"prompts": source, "run": str(run_folder.path)}}
    if out is not None:
        write_json_atomic(out, document)
    if args.json:
        print(json.dumps(document, ensure_ascii=False, indent=2))
    elif args.search:
        _print_recipes(document)
    else:
        _print_rows(document["rows"])
    return 0


def _print_recipes(document: dict[str, Any]) -> None:
    print(f"{'target':>6}  {'recipe':<24} {'tuning':>15}  {'held-out':>15}  {'unmodified':>10}")
    print(f"{'':>6}  {'':<24} {'success   nll':>15}  {'success   nll':>15}  {'held-out':>10}")
    for row in document["table"]:
        if row["mode"] is None:
            print(f"{row['target']:>6}  none: no recipe beat the unmodified model fluently")
            continue
        recipe = f"{row['mode']} x{row['strength']:g}, layers {row['layers']}"
        tuning = f"{row['tuning_success']:.2f}  {row['tuning_nll']:5.2f}"
        held = f"{row['held_out_success']:.2f}  {row['held_out_nll']:5.2f}"
        flag = "" if row["held_out_fluent"] else "  (not fluent on held-out)"
        print(
            f"{row['target']:>6}  {recipe:<24} {tuning:>15}  {held:>15}  "
            f"{row['unmodified_held_out_success']:>10.2f}{flag}"
        )
    print(f"written: {document['written']}")


def _print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'target':>6} {'mode':>5} {'strength':>8} {'layers':>7} {'success':>7} {'lines':>6} "
        f"{'nll':>6} {'dist2':>6} {'n':>4}"
    )
    for row in rows:
        nll = "-" if math.isnan(row["nll"]) else f"{row['nll']:.2f}"
        print(
            f"{row['target']:>6} {row['mode']:>5} {row['strength']:>8g} {row['layers']:>7} "
            f"{row['success']:>7.2f} {row['line_pass_rate']:>6.2f} {nll:>6} "
            f"{row['distinct2']:>6.2f} {row['n']:>4}"
        )
