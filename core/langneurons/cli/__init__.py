"""The ``langneurons`` command line: the library's jobs without a browser.

One module per group of subcommands; each has a ``register(subparsers)`` that adds its
parser and sets its handler, so :func:`main` dispatches through the parser.  Every
error on bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import LangNeuronsError
from . import ablation, compare, compute, dashboard, generate, info, runs, steer, trace

EPILOG = """\
examples:
  langneurons dashboard
  langneurons dashboard --classroom classroom.toml
  langneurons compute --languages en,fr,de,es,zh,ja --out runs/demo
  langneurons compute --model Qwen/Qwen2.5-0.5B --languages en,fr --max-tokens 50000 --out runs/qwen
  langneurons compute --corpus my_texts/ --languages en,sw --out runs/custom
  langneurons compute --corpus hf:wikimedia/wikipedia --hf-config 20231101.{lang} \\
      --languages en,fr --max-tokens 100000 --out runs/wiki
  langneurons ablation --run runs/demo --out runs/demo/ablation.json
  langneurons generate --run runs/demo --prompt "Le temps aujourd'hui est" --deactivate fr
  langneurons generate --run runs/demo --prompt "The weather today is" --steer ja
  langneurons steer-eval --run runs/demo --targets fr,ja --strengths 0,1,2,4
  langneurons compare-detectors --run runs/demo
  langneurons trace --run runs/demo --text "Le temps est beau. 今日はいい天気です。"
  langneurons generate --run runs/demo --prompt "Le temps" --deactivate fr --trace
  langneurons show runs/demo
  langneurons import-mask activation_mask.pth --languages en,zh,fr --model M --out runs/imported
  langneurons languages
  langneurons families
"""

MODULES = (dashboard, compute, ablation, generate, steer, compare, trace, runs, info)


def build_parser() -> argparse.ArgumentParser:
    """The whole parser: every subcommand registered by its module."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="langneurons",
        description="Find, see and switch the language-specific neurons of language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"langneurons {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``langneurons`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        status: int = handler(args)
        return status
    except LangNeuronsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished languages and the last checkpoint are cached; run the same "
            "command again to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: one line, details on demand
        if os.environ.get("LANGNEURONS_DEBUG"):
            raise
        print(
            f"error: {args.command} failed unexpectedly: {type(exc).__name__}: {exc}. Run again "
            "with LANGNEURONS_DEBUG=1 for the details, and report it if it persists.",
            file=sys.stderr,
        )
        return 1
