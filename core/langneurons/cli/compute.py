"""``langneurons compute``: statistics over a corpus, neuron selection, a run folder."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..config import (
    CountingConfig,
    add_arguments,
    describe,
    flag,
    from_args,
    parse_setting,
    ranges,
)
from ..errors import LangNeuronsError
from ..launch import is_reporting_rank
from ..selection import DETECTORS, METHODS, SelectionConfig, detector
from ..streaming import HFSource
from .common import ProgressPrinter, add_model_options, quiet_loading, summary_lines

DESCRIPTION = (
    "Count, per layer and neuron, how often each MLP neuron fires on each language's text, "
    "select language-specific neurons (LAPE by default), and write stats.safetensors, "
    "meta.json, neurons.json and activation_mask.pth into --out. Results per language are "
    "cached: the same command again takes seconds, and an interrupted run resumes."
)


def _hf_default(name: str) -> Any:
    return HFSource.__dataclass_fields__[name].default


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--languages", required=True, help="comma-separated codes, e.g. en,fr,de,zh")
    data.add_argument(
        "--corpus",
        default="udhr",
        help="'udhr' (embedded Universal Declaration of Human Rights, the default), a folder "
        "of <code>.txt UTF-8 files (one paragraph per line), or hf:NAME to stream a Hugging "
        "Face dataset (needs --max-tokens)",
    )
    data.add_argument(
        "--hf-config",
        default=None,
        help="hf: corpora: dataset configuration, {lang} is replaced by each code "
        "(e.g. 20231101.{lang} for wikimedia/wikipedia)",
    )
    data.add_argument(
        "--hf-split",
        default=_hf_default("split"),
        help=f"hf: corpora: split to stream (default: {_hf_default('split')})",
    )
    data.add_argument(
        "--hf-data-files",
        default=None,
        help="hf: corpora: data files with {lang}, for builders such as hf:json",
    )
    data.add_argument(
        "--text-field",
        default=_hf_default("text_field"),
        help=f"hf: corpora: field with the text (default: {_hf_default('text_field')})",
    )
    data.add_argument(
        "--hf-lang-map",
        default=None,
        metavar="CODE=NAME,...",
        help="hf: corpora: the dataset's names for the codes, put in {lang} "
        "(e.g. en=eng_Latn,fr=fra_Latn for FLORES+)",
    )


def _add_selection_options(parser: argparse.ArgumentParser) -> None:
    """``--method`` and every detector's settings; a setting several detectors share is
    one option, and an option of another method than the chosen one is refused."""
    group = parser.add_argument_group("selection")
    group.add_argument(
        "--method",
        default="lape",
        choices=METHODS,
        help="detector: " + "; ".join(f"{d.name}: {d.title}" for d in DETECTORS.values()),
    )
    seen: dict[str, list[str]] = {}
    parsers: dict[str, Any] = {}
    switches: set[str] = set()
    for found in DETECTORS.values():
        limits = ranges(found.config_type)
        for info in describe(found.config_type):
            seen.setdefault(info.name, []).append(f"{found.name}: {info.help} ({info.default})")
            parsers.setdefault(info.name, parse_setting(info, limits[info.name]))
            if info.kind is bool:
                switches.add(info.name)
    for name, helps in seen.items():
        if name in switches:  # a flag: given or not
            group.add_argument(
                flag(name), action="store_true", default=argparse.SUPPRESS, help="; ".join(helps)
            )
            continue
        group.add_argument(
            flag(name),
            type=parsers[name],
            default=argparse.SUPPRESS,
            help="; ".join(helps),
        )


def selection_from_args(args: argparse.Namespace) -> SelectionConfig:
    """The chosen detector's settings from the options given (the rest: defaults)."""
    chosen = detector(args.method)
    own = {info.name for info in describe(chosen.config_type)}
    foreign = sorted(
        name
        for found in DETECTORS.values()
        for name in (info.name for info in describe(found.config_type))
        if name not in own and hasattr(args, name)
    )
    if foreign:
        raise LangNeuronsError(
            f"{', '.join(flag(n) for n in foreign)} does not apply to --method {chosen.name}, "
            f"which takes {', '.join(flag(n) for n in sorted(own))}."
        )
    config: SelectionConfig = from_args(chosen.config_type, args, f"Method {chosen.name!r}")
    return config


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "compute",
        help="collect per-language statistics and select language neurons",
        description=DESCRIPTION,
    )
    add_model_options(parser)
    _add_data_options(parser)
    counting = parser.add_argument_group("counting")
    add_arguments(counting, CountingConfig)
    counting.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute statistics even if cached (the cache is refreshed)",
    )
    _add_selection_options(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..distributed import shutdown
    from ..pipeline import compute

    counting = from_args(CountingConfig, args, "Counting")
    selection = selection_from_args(args)
    printer = ProgressPrinter(args.quiet)
    # Under a launcher rank 0 alone reports; in a log file (not a terminal) the model
    # loader's redrawn bars would only add noise.
    quiet_loading(args.quiet or not is_reporting_rank())
    start = time.perf_counter()
    try:
        result = compute(
            args.model,
            args.languages,
            corpus=args.corpus,
            counting=counting,
            selection=selection,
            use_cache=not args.no_cache,
            out_dir=args.out,
            progress=printer,
            dataset_options={
                "config": args.hf_config,
                "split": args.hf_split,
                "data_files": args.hf_data_files,
                "text_field": args.text_field,
                "language_names": args.hf_lang_map,
            },
            load_options={
                "dtype": args.dtype,
                "device": args.device,
                "trust_remote_code": args.trust_remote_code,
            },
        )
    finally:
        printer.close()
        shutdown()
    if result.out_dir is None:  # another rank of a data-parallel run: rank 0 reports
        return 0
    for line in summary_lines(
        result.meta, result.selection.masks, result.statistics.tokens.tolist()
    ):
        print(line)
    cached = (
        f", {len(result.cached_languages)} language(s) from cache"
        if result.cached_languages
        else ""
    )
    print(f"Wrote {result.out_dir} in {time.perf_counter() - start:.1f} s{cached}.")
    return 0
