"""``langneurons bench``: how fast the statistics pass is, next to its limit.

The cost of LAPE is one forward pass of the transformer body over the corpus; the
limit is the body's own speed without the vocabulary head.  This module measures,
in one run and on the same tokens, the body alone (``forward``), the project's
statistics pass (``stats``), the common approach of a full forward with logits and
hooks that copy activations out (``naive``) and, when installed, nnsight doing the
same counting; plus generation with and without an intervention, selection,
the ablation matrix, model loading and peak memory.  Methods are interleaved and the
best of several repetitions is kept, so the ratios measured in one run are the
figures to quote on noisy machines.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .corpus import load_corpus, tokenize_windows
from .evaluation import ablation_matrix
from .generation import GenerationConfig, generate, stream_side_by_side, stream_traced
from .interventions import Intervention, deactivate, language_neurons, steer
from .models import LoadedModel, load_model
from .pipeline import compute
from .progress import ProgressCallback, emit
from .selection import LapeConfig, lape_select
from .stats import StatsCache, collect_language_stats
from .trace import TraceSpec

FULL_LANGUAGES = ["en", "fr", "de", "es", "it", "ru", "zh", "ja", "ar", "hi"]
BENCH_LANGUAGES = ["en", "fr"]


def batches_of(windows: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Windows stacked into batches of equal length (longest first), as counting does."""
    by_length: dict[int, list[torch.Tensor]] = {}
    for window in windows:
        by_length.setdefault(len(window), []).append(window)
    return [
        torch.stack(group[i : i + batch_size])
        for _, group in sorted(by_length.items(), reverse=True)
        for i in range(0, len(group), batch_size)
    ]


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so wall-clock timings mean something on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_only(lm: LoadedModel, batches: list[torch.Tensor]) -> None:
    """The limit: the transformer body alone, no hooks, no vocabulary head."""
    with torch.inference_mode():
        for batch in batches:
            lm.body(input_ids=batch.to(lm.input_device), use_cache=False)


def stats_pass(lm: LoadedModel, windows: Sequence[torch.Tensor], batch_size: int) -> None:
    """The project's statistics pass (counts on the device inside hooks)."""
    collect_language_stats(lm, windows, batch_size=batch_size)


def naive_pass(lm: LoadedModel, batches: list[torch.Tensor]) -> torch.Tensor:
    """The common approach: full forward with logits, hooks copying activations out,
    counted afterwards on the CPU.  Returns the counts of values above zero, int64
    ``[layers, neurons]``, first position of each window skipped (as the statistics pass
    skips the BOS)."""
    copies: list[list[torch.Tensor]] = [[] for _ in lm.modules]
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, i=i: copies[i].append(out.detach().to("cpu", copy=True))
        )
        for i, module in enumerate(lm.modules)
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                lm.model(input_ids=batch.to(lm.input_device))
    finally:
        for handle in handles:
            handle.remove()
    counts = []
    for per_layer in copies:
        over_zero = torch.zeros(lm.num_neurons, dtype=torch.int64)
        for values in per_layer:
            over_zero += (values[:, 1:] > 0).sum(dim=(0, 1))
            values[:, 1:].float().sum(dim=(0, 1))
        counts.append(over_zero)
    return torch.stack(counts)


def nnsight_pass(lm: LoadedModel, batches: list[torch.Tensor]) -> torch.Tensor:
    """nnsight tracing the same activations and counting them (optional extra); returns
    the counts as :func:`naive_pass` does."""
    from nnsight import NNsight

    traced = NNsight(lm.model)
    paths = [name for module in lm.modules for name, m in lm.model.named_modules() if m is module]
    counts = torch.zeros(lm.num_layers, lm.num_neurons, dtype=torch.int64)
    for batch in batches:
        saved: list[Any] = []  # outside the block: nnsight runs the block's body itself
        with traced.trace(batch.to(lm.input_device)):
            for path in paths:
                node = traced
                for part in path.split("."):
                    node = node[int(part)] if part.isdigit() else getattr(node, part)
                saved.append(((node.output[:, 1:] > 0).sum(dim=(0, 1))).save())
        for layer, value in enumerate(saved):
            counts[layer] += getattr(value, "value", value).cpu()
    return counts


def _best_time(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _cold_load_seconds(model: str | None, dtype: str, device: str | None) -> float | None:
    """Load time in a fresh process (imports excluded): what a new session pays."""
    code = (
        "import time, sys\n"
        "from langneurons.models import load_model\n"
        "t = time.perf_counter()\n"
        f"load_model({model!r}, dtype={dtype!r}, device={device!r})\n"
        "print(time.perf_counter() - t)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True
        )
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "langneurons": __version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _throughput(
    lm: LoadedModel, quick: bool, progress: ProgressCallback | None
) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Tokens per second of the body, the statistics pass, the naive approach and nnsight
    on the same English and French windows, interleaved, best of several rounds."""
    report: dict[str, Any] = {}
    corpus = load_corpus("udhr", BENCH_LANGUAGES)
    windows = [
        w
        for code in BENCH_LANGUAGES
        for w in tokenize_windows(
            lm.tokenizer,
            corpus.identify_text(code),
            max_tokens=600 if quick else 1500,
            seq_len=256,
            language=code,
        )
    ]
    batch_size = 8
    batches = batches_of(windows, batch_size)
    counted = sum(len(w) for w in windows)
    methods: dict[str, Callable[[], Any]] = {
        "forward": lambda: forward_only(lm, batches),
        "stats": lambda: stats_pass(lm, windows, batch_size),
        "naive": lambda: naive_pass(lm, batches),
    }
    try:
        import nnsight  # noqa: F401

        methods["nnsight"] = lambda: nnsight_pass(lm, batches)
    except ImportError:
        report["nnsight"] = "not installed (pip install 'langneurons[bench]')"
    emit(progress, "bench", "Warming up")
    forward_only(lm, batches[:1])
    best: dict[str, float] = {}
    repeats = 2 if quick else 3
    for r in range(repeats):
        for name, fn in list(methods.items()):
            emit(progress, "bench", f"{name} (round {r + 1} of {repeats})")
            try:
                seconds = _best_time(fn, lm.input_device)
            except Exception as exc:
                report[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
                del methods[name]
                continue
            best[name] = min(best.get(name, float("inf")), seconds)
    report.update({f"{name}_tokens_per_s": round(counted / s, 1) for name, s in best.items()})
    report["tokens"] = counted
    for name in ("stats", "naive", "nnsight"):
        if name in best:
            report[f"{name}_vs_forward"] = round(best["forward"] / best[name], 3)
    return report, windows


def _selection_seconds(lm: LoadedModel, windows: list[torch.Tensor]) -> float:
    """LAPE selection from cached statistics, at the shape of a ten-language run."""
    stats = collect_language_stats(lm, windows[: max(1, len(windows) // 2)], batch_size=8)
    over_zero = stats.over_zero[..., None].repeat(1, 1, 10)
    over_zero = (over_zero + torch.randint(0, 5, over_zero.shape)).clamp_max(stats.tokens)
    tokens = torch.full((10,), stats.tokens)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        lape_select(over_zero, tokens, LapeConfig())
        times.append(time.perf_counter() - t)
    return round(min(times), 4)


def _generation(lm: LoadedModel, quick: bool) -> dict[str, Any]:
    """Greedy generation, unmodified and with French neurons deactivated (interleaved)."""
    corpus = load_corpus("udhr", BENCH_LANGUAGES)
    with tempfile.TemporaryDirectory() as tmp:
        result = compute(
            lm,
            BENCH_LANGUAGES,
            corpus=corpus,
            max_tokens=600 if quick else 1500,
            cache=StatsCache(Path(tmp)),
        )
    masks = result.selection.masks
    off = deactivate(language_neurons(masks, BENCH_LANGUAGES, ["fr"]), "fr")
    config = GenerationConfig(max_new_tokens=24 if quick else 48, repetition_penalty=1.0)
    prompt = "La Déclaration universelle des droits de l'homme affirme que"
    spec = TraceSpec.from_masks(masks, BENCH_LANGUAGES)
    generate(lm, prompt, GenerationConfig(max_new_tokens=4))
    runs: dict[str, Callable[[], Any]] = {
        "unmodified": lambda: generate(lm, prompt, config),
        "deactivated": lambda: generate(lm, prompt, config, off),
        "traced": lambda: deque(stream_traced(lm, prompt, spec, config), maxlen=0),
        "side_by_side": lambda: deque(stream_side_by_side(lm, prompt, off, config), maxlen=0),
    }
    gen: dict[str, float] = {}
    for _ in range(3):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            gen[name] = min(gen.get(name, float("inf")), time.perf_counter() - t)
    return {
        "generate_seconds": {k: round(v, 3) for k, v in gen.items()},
        "generate_new_tokens": config.max_new_tokens,
        "generate_overhead": round(gen["deactivated"] / gen["unmodified"], 3),
        "trace_overhead": round(gen["traced"] / gen["unmodified"], 3),
        "pair_vs_single": round(gen["side_by_side"] / gen["unmodified"], 3),
    }


CONCURRENT_LANGUAGES = ["en", "fr", "de", "ja", "zh"]
CONCURRENT_SESSIONS = 16
CONCURRENT_TOKENS = 30


def _session_interventions(lm: LoadedModel, count: int) -> tuple[list[Intervention], TraceSpec]:
    """``count`` different interventions a class would try (each language switched off,
    steering towards each at two strengths, in turn), and the trace of their neurons."""
    corpus = load_corpus("udhr", CONCURRENT_LANGUAGES)
    with tempfile.TemporaryDirectory() as tmp:
        result = compute(
            lm, CONCURRENT_LANGUAGES, corpus=corpus, max_tokens=600, cache=StatsCache(Path(tmp))
        )
    masks, codes = result.selection.masks, CONCURRENT_LANGUAGES
    means = result.statistics.mean_activation()
    choices: list[Intervention] = []
    for code in codes:
        choices.append(deactivate(language_neurons(masks, codes, [code]), code))
    for strength in (1.0, 2.0):
        for k, code in enumerate(codes):
            neurons = language_neurons(masks, codes, [code])
            choices.append(steer(means[..., k], neurons, strength, label=code))
    while len(choices) < count:
        choices.append(choices[len(choices) % len(codes)])
    return choices[:count], TraceSpec.from_masks(masks, codes)


def _concurrency(lm: LoadedModel, quick: bool, sessions: int | None) -> dict[str, Any]:
    """:func:`concurrent_sessions` at the bench's size: 16 sessions of 30 new tokens
    (quick: 8 of 16), or ``sessions`` of them."""
    default = CONCURRENT_SESSIONS // 2 if quick else CONCURRENT_SESSIONS
    return concurrent_sessions(lm, sessions or default, 16 if quick else CONCURRENT_TOKENS)


def concurrent_sessions(
    lm: LoadedModel, sessions: int = CONCURRENT_SESSIONS, tokens: int = CONCURRENT_TOKENS
) -> dict[str, Any]:
    """A class pressing Generate at once: ``sessions`` threads each generating a traced
    pair of ``tokens`` new tokens, a different intervention each, on the one loaded model,
    against one pair alone: the wall time until all finish over one pair's, and whether
    every greedy text equals its solo run.

    The question a teacher asks before saying "everyone press Generate now"; the engine
    (:mod:`langneurons.engine`) is what keeps the answer near one pair's time."""
    if sessions < 1 or tokens < 1:
        raise ValueError(f"sessions ({sessions}) and tokens ({tokens}) must be at least 1")
    interventions, spec = _session_interventions(lm, sessions)
    config = GenerationConfig(max_new_tokens=tokens)
    prompts = [
        "The weather today is",
        "Le temps aujourd'hui est",
        "Das Wetter ist heute",
        "Everyone has the right to",
    ]

    def pair(k: int) -> tuple[str, str]:
        steps = stream_side_by_side(
            lm, prompts[k % len(prompts)], interventions[k], config, trace=spec
        )
        (last,) = deque(steps, maxlen=1)
        return last.baseline, last.modified

    pair(0)  # warm
    alone_seconds = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        pair(0)
        alone_seconds = min(alone_seconds, time.perf_counter() - t)
    solo = [pair(k) for k in range(sessions)]
    together: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(sessions + 1)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            together[k] = pair(k)
        except BaseException as exc:  # reported in the figures
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(sessions)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t = time.perf_counter()
    for thread in threads:
        thread.join()
    all_seconds = time.perf_counter() - t
    return {
        "concurrent_sessions": sessions,
        "concurrent_new_tokens": tokens,
        "concurrent_seconds": {"one_pair": round(alone_seconds, 3), "all": round(all_seconds, 3)},
        "concurrent_vs_one": round(all_seconds / alone_seconds, 3),
        "concurrent_equal_alone": not errors
        and all(together.get(k) == solo[k] for k in range(sessions)),
    }


def _compute_and_ablation(lm: LoadedModel, quick: bool) -> dict[str, Any]:
    """A whole ``compute`` (quick: 3 languages; full: 10) and the ablation matrix (quick:
    3 x 3 on 150 held-out tokens; full: 6 x 6 on all held-out text)."""
    nll_langs = ["en", "fr", "de"] if quick else ["en", "fr", "de", "ja", "zh", "ru"]
    nll_corpus = load_corpus("udhr", nll_langs)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = StatsCache(Path(tmp))
        t = time.perf_counter()
        compute_langs = nll_langs if quick else FULL_LANGUAGES
        full = compute(lm, compute_langs, cache=cache)
        report["compute"] = {
            "languages": len(compute_langs),
            "tokens": int(full.statistics.tokens.sum()),
            "seconds": round(time.perf_counter() - t, 2),
        }
        sub = [full.statistics.languages.index(c) for c in nll_langs]
        sub_masks = [full.selection.masks[k] for k in sub]
    t = time.perf_counter()
    ablation_matrix(lm, sub_masks, nll_langs, nll_corpus, max_tokens=150 if quick else None)
    report["ablation_matrix"] = {
        "languages": len(nll_langs),
        "seconds": round(time.perf_counter() - t, 2),
    }
    return report


def run_bench(
    model: str | None = None,
    *,
    quick: bool = False,
    dtype: str = "auto",
    device: str | None = None,
    lm: LoadedModel | None = None,
    include_cold_load: bool = True,
    progress: ProgressCallback | None = None,
    sessions: int | None = None,
) -> dict[str, Any]:
    """Measure everything :mod:`langneurons.bench` describes; returns a JSON-ready dict.

    ``sessions`` sets how many sessions generate at once for ``concurrent_vs_one``
    (default 16, quick 8); its target of 3 is for the default count on two cores."""
    report: dict[str, Any] = {"quick": quick, "machine": machine()}
    cold = _cold_load_seconds(model, dtype, device) if include_cold_load and lm is None else None
    start = time.perf_counter()
    if lm is None:
        lm = load_model(model, dtype=dtype, device=device)
    report["model"] = {
        "name": lm.name,
        "layers": lm.num_layers,
        "neurons": lm.num_neurons,
        "dtype": lm.dtype,
        "device": lm.device,
    }
    report["load_seconds"] = {"cold": cold, "warm": round(time.perf_counter() - start, 3)}
    speed, windows = _throughput(lm, quick, progress)
    report.update(speed)
    emit(progress, "bench", "Selection")
    report["selection_seconds"] = _selection_seconds(lm, windows)
    emit(progress, "bench", "Generation")
    report.update(_generation(lm, quick))
    emit(progress, "bench", "Sessions generating at once")
    report.update(_concurrency(lm, quick, sessions))
    emit(progress, "bench", "Compute and ablation matrix")
    report.update(_compute_and_ablation(lm, quick))
    report["peak_memory_mb"] = {
        "process_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    }
    if lm.input_device.type == "cuda":
        report["peak_memory_mb"]["gpu"] = round(
            torch.cuda.max_memory_allocated(lm.input_device) / 2**20, 1
        )
    report["targets"] = {
        "stats_vs_forward >= 0.9": report["stats_vs_forward"] >= 0.9,
        "generate_overhead <= 1.1": report["generate_overhead"] <= 1.1,
        "selection < 0.2 s": report["selection_seconds"] < 0.2,
        "trace_overhead <= 1.1": report["trace_overhead"] <= 1.1,
        "pair_vs_single <= 1.3": report["pair_vs_single"] <= 1.3,
        "concurrent_vs_one <= 3": report["concurrent_vs_one"] <= 3,
        "concurrent_equal_alone": report["concurrent_equal_alone"],
    }
    return report
