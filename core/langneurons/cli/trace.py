"""``langneurons trace``: which languages' neurons are active on each token of a text."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import LangNeuronsError
from .common import add_model_options, add_quiet_option, add_run_option, load_for, progress_for

DESCRIPTION = (
    "Read a text with the model and report, for every token, layer and language of the run, "
    "the share of that language's selected neurons that fire, and the language whose "
    "neurons are most active on each token. Without --json, the tokens with their dominant "
    "language; with --json, {tokens, languages, layers, activity [token][layer][language] "
    "(null where a layer holds none of a language's neurons), dominant, confidence}."
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "trace",
        help="the language trace of a text: which languages' neurons fire on each token",
        description=DESCRIPTION,
    )
    add_run_option(parser)
    add_model_options(parser, default_help="the model the run was computed with")
    parser.add_argument(
        "--text", required=True, help="the text to read (a code-switched one works)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..results import read_run
    from ..workflows import run_trace

    if not args.text.strip():
        raise LangNeuronsError("The text is empty: give some text to trace with --text.")
    run_folder = read_run(args.run)
    lm = load_for(args, run_folder, progress_for(args))
    trace = run_trace(lm, run_folder, args.text)
    if args.json:
        print(json.dumps(trace.to_json(), ensure_ascii=False))
        return 0
    print(trace.render())
    shares = trace.overall()
    means = {code: float(shares[:, k].mean()) for k, code in enumerate(trace.languages)}
    print(
        "mean activity per language: "
        + ", ".join(f"{code} {value:.2f}" for code, value in means.items())
    )
    return 0
