"""``langneurons generate``: a prompt continued with and without an intervention."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from ..config import add_arguments, from_args
from ..errors import LangNeuronsError
from ..generation import GenerationConfig
from ..recipes import Recipe
from ..results import Run
from ..steering import STEER_MODES
from ..trace import render_tokens
from .common import (
    add_model_options,
    add_quiet_option,
    add_run_option,
    load_for,
    progress_for,
    strength,
)

DESCRIPTION = (
    "Print the unmodified and the modified continuation of a prompt, each with its detected "
    "language. Deactivate languages' neurons, steer towards a language (its neurons set to "
    "strength x their mean activation; the prompt language's neurons are deactivated unless "
    "--deactivate says otherwise), or deactivate single neurons."
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "generate",
        help="continue a prompt with and without an intervention, side by side",
        description=DESCRIPTION,
    )
    add_run_option(parser)
    add_model_options(parser, default_help="the model the run was computed with")
    parser.add_argument("--prompt", required=True, help="text to continue")
    change = parser.add_argument_group("intervention")
    change.add_argument("--deactivate", default=None, help="languages whose neurons to set to 0")
    change.add_argument("--steer", default=None, metavar="LANG", help="language to steer towards")
    change.add_argument(
        "--strength",
        type=strength,
        default=None,
        help="steering strength, x the mean activation (default: the run's stored recipe for "
        "the language, found by steer-eval --search; without one, 1.0 in all layers)",
    )
    change.add_argument(
        "--mode",
        choices=STEER_MODES,
        default=None,
        help="how to steer: set, add or scale (default: the stored recipe's, else set)",
    )
    change.add_argument("--layers", default=None, help="limit to layers A-B (0-based, inclusive)")
    change.add_argument("--neurons", default=None, help="single neurons to deactivate: L:N,L:N")
    decoding = parser.add_argument_group("generation")
    add_arguments(decoding, GenerationConfig)
    parser.add_argument("--sample", dest="do_sample", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also the language trace of each continuation (with --json: under "
        "baseline.trace and modified.trace; otherwise tokens with their dominant language)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..corpus import parse_languages
    from ..results import read_run
    from ..workflows import build_intervention, generate_comparison

    config = from_args(GenerationConfig, args, "Generation")
    if not args.prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")
    if not (args.deactivate or args.steer or args.neurons):
        raise LangNeuronsError(
            "Nothing to change: pass --deactivate LANGS, --steer LANG or --neurons L:N."
        )
    run_folder = read_run(args.run)
    progress = progress_for(args)
    recipe, source, found_with = _recipe(args, run_folder)
    guard = int(found_with.get("no_repeat_ngram") or 0)
    if source == "stored recipe" and config.no_repeat_ngram == 0 and guard > 0:
        # The recipe was chosen with this guard on; without it steered text repeats.
        config = dataclasses.replace(config, no_repeat_ngram=guard)
        _say(args, f"Decoding as the recipe was found: no repeated {guard}-token sequences.")
    lm = load_for(args, run_folder, progress)
    intervention = build_intervention(
        run_folder,
        lm,
        deactivate_languages=parse_languages(args.deactivate) if args.deactivate else (),
        steer_language=args.steer,
        strength=recipe.strength,
        mode=recipe.mode,
        layers=args.layers or recipe.band,
        neurons=args.neurons,
        prompt=args.prompt,
    )
    result = generate_comparison(
        lm, run_folder, args.prompt, intervention, config, trace=args.trace, progress=progress
    )
    progress.close()
    if args.steer:
        result["recipe"] = {**recipe.to_json(), "source": source}
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    what = ", ".join(f"{k}={v}" for k, v in result["intervention"].items())
    print(f"prompt: {args.prompt}")
    for key in ("baseline", "modified"):
        part = result[key]
        label = key if key == "baseline" else f"modified ({what})"
        print(f"\n{label} [{part['language']}]:\n{args.prompt}{part['text']}")
        if "trace" in part:
            trace = part["trace"]
            print(f"trace: {render_tokens(trace['tokens'], trace['dominant'])}")
    return 0


def _recipe(args: argparse.Namespace, run: Run) -> tuple[Recipe, str, dict[str, Any]]:
    """How to steer, where that came from, and the generation settings a stored recipe
    was found with: the options given (``"options"``), else the run's stored recipe for
    the language (``"stored recipe"``, said on stderr), else strength 1 in all layers
    (``"default"``, said too)."""
    from ..recipes import recipes_of

    given = Recipe(args.mode or "set", 1.0 if args.strength is None else args.strength)
    if not args.steer or args.strength is not None or args.mode is not None:
        return given, "options", {}
    book = recipes_of(run)
    stored = book.recipe(args.steer) if book is not None else None
    if book is None or stored is None:
        _say(
            args,
            f"No stored recipe for {args.steer} in this run: strength 1 in all layers. Find "
            f"one with `langneurons steer-eval --run {run.path} --targets {args.steer} "
            "--search`.",
        )
        return given, "default", {}
    held = book.recipes[args.steer].held_out
    figures = f" (held-out success {held.success:.2f} on {held.n} prompts)." if held else "."
    _say(args, f"Steering towards {args.steer} with the run's recipe: {stored.describe()}{figures}")
    return stored, "stored recipe", dict(book.settings.get("generation") or {})


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)
