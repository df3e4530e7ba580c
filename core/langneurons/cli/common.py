"""What several subcommands share: progress on the terminal, model options, run
summaries, and number parsing with clear messages."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..errors import LangNeuronsError
from ..models import DTYPES, LoadedModel, load_model
from ..progress import ProgressEvent, format_duration
from ..results import Run

BAR_STAGES = ("count", "samples", "evaluate", "generate")
"""Stages drawn as a bar (tokens or steps); other events are printed as lines."""

UNITS = {"evaluate": ("step", "steps"), "generate": ("tok", "new tokens")}


class ProgressPrinter:
    """Renders progress events on stderr: a bar per language on a terminal, and plain
    lines at most every ``interval`` seconds otherwise (batch-job logs such as Slurm's,
    where redrawn bars would pile up as carriage returns)."""

    def __init__(self, quiet: bool, interval: float = 30.0) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.interactive = sys.stderr.isatty()
        self.interval = interval
        self.line_task: tuple[str, float, int] | None = None  # desc, start time, start done
        self.line_at = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.stage in BAR_STAGES and event.total:
            desc = {
                "count": event.language,
                "samples": f"{event.language} samples",
                "generate": "generating",
            }.get(event.stage, "ablation matrix")
            if self.interactive:
                self._bar(event, desc or "")
            else:
                self._line(event, desc or "")
            return
        if event.message:
            self.close()
            print(event.message, file=sys.stderr, flush=True)

    def _bar(self, event: ProgressEvent, desc: str) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != desc:
            self.close()
            self.bar = tqdm(
                total=event.total,
                initial=event.done,  # a resumed language starts part-way
                desc=desc,
                unit=UNITS.get(event.stage, ("tok", ""))[0],
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
        self.bar.update(event.done - self.bar.n)

    def _line(self, event: ProgressEvent, desc: str) -> None:
        now = time.perf_counter()
        if self.line_task is None or self.line_task[0] != desc:
            self.line_task, self.line_at = (desc, now, event.done), now
            return
        finished = event.done >= event.total
        if not finished and now - self.line_at < self.interval:
            return
        self.line_at = now
        _, start, start_done = self.line_task
        unit = UNITS.get(event.stage, ("", "tokens"))[1]
        rate = (event.done - start_done) / max(now - start, 1e-9)
        left = (event.total - event.done) / rate if rate > 0 else float("nan")
        eta = "" if finished or left != left else f", about {format_duration(left)} left"
        print(
            f"{desc}: {event.done}/{event.total} {unit} ({100 * event.done / event.total:.0f}%, "
            f"{rate:,.0f} {unit}/s{eta})",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def positive_int(value: str) -> int:
    number = whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def finite_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value}")
    return number


def strength(value: str) -> float:
    """A steering strength for ``--strength``: a finite number, 0 or more (0: the
    unmodified model; the dashboard's slider goes from 0 to 8)."""
    number = finite_float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(
            f"a steering strength is 0 or more (x the language's mean activation), not {value}"
        )
    return number


def detector_names(value: str) -> list[str]:
    """Detectors for ``--methods``: known names, each once."""
    from ..selection import DETECTORS

    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"no detector named: give some of {', '.join(sorted(DETECTORS))}, or leave it out"
        )
    for name in names:
        if name not in DETECTORS:
            raise argparse.ArgumentTypeError(
                f"{name!r} is not a detector: choose from {', '.join(sorted(DETECTORS))}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} listed twice: name each once")
    return names


def add_model_options(
    parser: argparse.ArgumentParser,
    default_help: str = "the embedded Gemma 3 270M (offline)",
) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=None,
        help=f"Hugging Face model id or local folder; omitted: {default_help}",
    )
    group.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights dtype (auto: float32 on CPU, bfloat16 on GPU)",
    )
    group.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N, or auto (spread over all GPUs); default: one GPU if any, else CPU",
    )
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run code shipped with the model (only for models you trust)",
    )


def add_run_option(parser: argparse.ArgumentParser) -> None:
    """``--run DIR`` (``--stats`` is the older spelling, still accepted)."""
    parser.add_argument(
        "--run",
        "--stats",
        dest="run",
        required=True,
        metavar="DIR",
        help="a run folder written by compute (--stats is the older spelling)",
    )


def quiet_loading(quiet: bool) -> None:
    """Hide the model loader's progress bars when they would only add noise."""
    if quiet or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress on stderr (results on stdout are unchanged)."""
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")


def progress_for(args: argparse.Namespace) -> ProgressPrinter:
    """Progress on stderr, with or without ``--json`` (which prints on stdout), unless
    ``--quiet``: a long step never runs without a word."""
    return ProgressPrinter(bool(getattr(args, "quiet", False)))


def load_for(
    args: argparse.Namespace, run: Run | None = None, progress: ProgressPrinter | None = None
) -> LoadedModel:
    """The model named by ``--model``, else the one ``run`` was computed with."""
    from ..workflows import run_model_spec

    spec = args.model
    if spec is None and run is not None:
        spec = run_model_spec(run)
    quiet_loading(getattr(args, "quiet", False) or getattr(args, "json", False))
    return load_model(
        spec,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=progress,
    )


def summary_lines(
    meta: dict[str, Any], masks: list[list[Any]], tokens: list[int] | None
) -> list[str]:
    """Lines describing a run: model, and per language its neurons, tokens and top layers."""
    method = meta.get("selection", {}).get("method", "imported")
    lines = [
        f"{meta.get('model', {}).get('name', 'unknown model')}: {meta['layers']} layers x "
        f"{meta['neurons']} neurons; method {method}"
    ]
    distinct: set[tuple[int, int]] = set()
    for k, code in enumerate(meta["languages"]):
        per_layer = [len(idx) for idx in masks[k]]
        distinct.update((layer, int(i)) for layer, idx in enumerate(masks[k]) for i in idx)
        top = sorted(range(len(per_layer)), key=lambda layer: -per_layer[layer])[:3]
        where = ", ".join(f"L{layer}:{per_layer[layer]}" for layer in top if per_layer[layer])
        counted = f"({tokens[k]} tokens)  " if tokens is not None else ""
        lines.append(f"  {code:>6}  {sum(per_layer):6d} neurons  {counted}most in {where or '-'}")
    lines.append(f"  distinct neurons: {len(distinct)}")
    return lines


def fail(message: str) -> LangNeuronsError:
    """An error to raise from a subcommand: printed as one line, exit status 2."""
    return LangNeuronsError(message)
