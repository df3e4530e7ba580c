"""Steering, measured: how often steering towards a language gives that language, and
what it costs in fluency.

:func:`steering_sweep` continues a set of prompts (everyday sentence openings shipped in
``assets/prompts/<code>.txt``, or your own) with each target language's neurons set to
``strength x`` their mean activation on that language, for each strength and layer
range, and scores every cell (target, strength, layers):

- ``success``: share of outputs identified as the target language (py3langid, all its
  languages; the whole continuation);
- ``line_pass_rate``: the Language Confusion Benchmark's line-level pass rate (Marchisio
  et al. 2024; :func:`~langneurons.langid.line_verdict`): each output normalised and
  split into lines, lines under five words (estimated words for Chinese and Japanese)
  ignored, an output passing when every other line is identified as the target; outputs
  with no line to judge are left out;
- ``nll``: mean negative log-likelihood per token of the outputs under the unmodified
  model, each scored on its own after BOS (not after its prompt, so a switch of language
  is not counted as disfluency): a fluency proxy;
- ``distinct2``: share of distinct token bigrams among all bigrams of the outputs (falls
  when the text collapses into repetition);
- ``n``: the number of outputs.

Decoding is greedy with the guards of :mod:`langneurons.decoding` on by default (no
repeated 3-grams, no broken UTF-8 from byte tokens), for every cell including the
baseline: without them steering towards Chinese and Japanese gives the language but text
that repeats one phrase (measured in ``docs/steering.md``).

Strength 0 is the unmodified model, so every target has a baseline row.  Where a target
has embedded openings, the unmodified model also continues as many of them as there are
prompts (the native reference: how fluent the model is in that language at all); a
strength keeps fluency relative to the looser of the two
(:mod:`langneurons.steering_cells`).  Cells are
cached on disk (JSON, keyed by the weights, the neurons, their mean activations, the
prompts and the settings), written one by one as they finish, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

__all__ = [
    "DISTINCT_KEEP",
    "FLUENCY_NLL_RISE",
    "MIN_GAIN",
    "NATIVE",
    "STEER_MODES",
    "FluencyBar",
    "SteeringCell",
    "SteeringConfig",
    "SteeringSweep",
    "check_sweep",
    "distinct_bigrams",
    "steering_sweep",
]

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import write_json_file
from .config import ConfigError, setting, validate
from .corpus import bos_windows
from .errors import LangNeuronsError
from .evaluation import mean_nll
from .generation import Continuation, GenerationConfig, generate_batch
from .interventions import Intervention, language_neurons, parse_layers
from .langid import supported_languages
from .models import LoadedModel
from .paths import cache_dir
from .progress import ProgressCallback, emit
from .prompts import embedded_prompts, prompt_languages
from .stats import Statistics
from .steering_cells import (
    DISTINCT_KEEP,
    FLUENCY_NLL_RISE,
    MIN_GAIN,
    NATIVE,
    FluencyBar,
    SteeringCell,
    SteeringSweep,
    distinct_bigrams,
    score_cell,
)
from .workflows import NothingToChange, intervention_for

STEER_MODES = ("set", "add", "scale")
CELL_FORMAT = 2
"""Version of the cached cells: raised when the same settings would now give other texts
(2: a character left incomplete at the token limit is dropped from the text)."""


@dataclass(frozen=True)
class SteeringConfig:
    """How a sweep steers and generates."""

    max_new_tokens: int = setting(40, "tokens generated per prompt", minimum=1, maximum=1024)
    batch_size: int = setting(8, "prompts continued at once", minimum=1, maximum=256)
    deactivate_source: bool = setting(
        True, "switch off the prompt language's neurons while steering"
    )
    repetition_penalty: float = setting(1.1, "penalty on tokens already seen", above=0.0)
    no_repeat_ngram: int = setting(
        3, "never repeat an n-gram of this many tokens (0: off)", minimum=0, maximum=16
    )
    byte_guard: bool = setting(True, "never emit byte tokens that break a UTF-8 character")
    mode: str = "set"
    """``set``: the target's neurons take ``strength x`` their mean activation; ``add``:
    that is added to what they compute; ``scale``: what they compute is multiplied by
    ``1 + strength``."""

    def __post_init__(self) -> None:
        validate(self)
        if self.mode not in STEER_MODES:
            raise ConfigError(f"mode must be one of {', '.join(STEER_MODES)}, got {self.mode!r}.")

    def generation(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            no_repeat_ngram=self.no_repeat_ngram,
            byte_guard=self.byte_guard,
        )


def _digest(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    statistics: Statistics,
    prompts: Sequence[str],
    config: SteeringConfig,
) -> str:
    digest = hashlib.sha256()
    digest.update(
        f"{CELL_FORMAT}|{lm.fingerprint}|{lm.dtype}|{list(languages)}|{asdict(config)}".encode()
    )
    for per_layer in masks:
        for idx in per_layer:
            digest.update(len(idx).to_bytes(4, "little"))
            digest.update(torch.as_tensor(idx, dtype=torch.int64).numpy().tobytes())
    digest.update(statistics.mean_activation().to(torch.float32).numpy().tobytes())
    digest.update("\n".join(prompts).encode())
    return digest.hexdigest()[:32]


def _baseline_digest(lm: LoadedModel, prompts: Sequence[str], config: SteeringConfig) -> str:
    """The unmodified outputs depend on the weights, the prompts and how they are
    generated only: any run, detector or steering rule of this model shares them."""
    generation = (asdict(config.generation()), config.batch_size)
    digest = hashlib.sha256(f"{CELL_FORMAT}|{lm.fingerprint}|{lm.dtype}|{generation}".encode())
    digest.update("\n".join(prompts).encode())
    return "unmodified-" + digest.hexdigest()[:32]


def _write(path: Path, document: dict[str, Any]) -> str | None:
    """Cache a cell; one that cannot be written is skipped (the sweep keeps its result).
    Returns why it was skipped, in words, or None."""
    try:
        write_json_file(path, document, indent=None)
    except OSError as exc:
        return (
            f"Cannot cache steering results in {str(path.parent)!r} ({exc.strerror or exc}); "
            "this sweep keeps them, a later one computes them again."
        )
    return None


def _say_once(progress: ProgressCallback | None, failure: str | None, said: bool) -> bool:
    """Say ``failure`` (a cache write that failed) unless it was said: once per sweep,
    not once per cell.  Returns whether it has been said."""
    if failure is not None and not said:
        emit(progress, "cache", failure)
        return True
    return said


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None  # missing or unreadable: computed again and overwritten
    return document if _is_cell(document) else None


def _is_cell(document: Any) -> bool:
    """Whether a cached cell has the shape :func:`score_cell` reads: ``outputs`` of
    prompt and text strings and whole token ids, and a finite ``nll``.  Anything else (an
    edited or foreign file) is computed again rather than failing the sweep."""
    if not isinstance(document, dict) or not isinstance(document.get("outputs"), list):
        return False
    nll = document.get("nll")
    if isinstance(nll, bool) or not isinstance(nll, int | float) or not math.isfinite(nll):
        return False
    for item in document["outputs"]:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("prompt"), str)
            and isinstance(item.get("text"), str)
            and isinstance(item.get("tokens"), list)
            and all(type(t) is int for t in item["tokens"])
        ):
            return False
    return True


def _continue(
    lm: LoadedModel,
    prompts: Sequence[str],
    config: SteeringConfig,
    intervention_of: Callable[[str], Intervention | None],
) -> dict[str, Any]:
    """Continue ``prompts`` (grouped by the intervention each gets, in batches) and
    score their fluency; the cell's document for the cache."""
    generation = config.generation()
    groups: dict[int, tuple[Intervention | None, list[int]]] = {}
    for i, prompt in enumerate(prompts):
        intervention = intervention_of(prompt)
        key = id(intervention) if intervention is not None else 0
        groups.setdefault(key, (intervention, []))[1].append(i)
    results: dict[int, Continuation] = {}
    for intervention, indices in groups.values():
        for start in range(0, len(indices), config.batch_size):
            chunk = indices[start : start + config.batch_size]
            outs = generate_batch(lm, [prompts[i] for i in chunk], generation, intervention)
            results.update(zip(chunk, outs, strict=True))
    ordered = [results[i] for i in range(len(prompts))]
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    windows = [
        w for c in ordered if c.token_ids for w in bos_windows(torch.tensor(c.token_ids), bos, 4096)
    ]
    nll = mean_nll(lm, windows) if windows else float("nan")
    return {
        "outputs": [
            {"prompt": c.prompt, "text": c.text, "tokens": list(c.token_ids)} for c in ordered
        ],
        "nll": nll,
    }


def steering_sweep(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    statistics: Statistics | None,
    targets: Sequence[str],
    *,
    prompts: Sequence[str] | None = None,
    strengths: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
    layers: Sequence[str | None] = (None,),
    config: SteeringConfig | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
    native_references: bool = True,
    native_prompts: Mapping[str, Sequence[str]] | None = None,
) -> SteeringSweep:
    """Steer ``prompts`` (default: the embedded English openings) towards each of
    ``targets`` at each of ``strengths`` and ``layers`` (``"A-B"`` or ``None`` for all)
    and score each cell (see the module's docstring).  ``native_references=False`` skips
    the model's own text in each target (for a caller that reads success only; the
    recommendation then judges fluency against the unmodified outputs alone);
    ``native_prompts`` gives a target's own openings for its native reference (default:
    as many of its embedded openings as there are prompts).

    >>> from langneurons import compute
    >>> from langneurons.selection import LapeConfig
    >>> from langneurons.tiny import tiny_model
    >>> lm = tiny_model()
    >>> found = compute(lm, ["en", "fr"], max_tokens=200, selection=LapeConfig(top_rate=0.1))
    >>> sweep = steering_sweep(
    ...     lm, found.selection.masks, ["en", "fr"], found.statistics, ["fr"],
    ...     prompts=["The weather today is"], strengths=(0, 1),
    ...     config=SteeringConfig(max_new_tokens=4),
    ... )
    >>> sweep.to_frame()[["target", "strength", "n"]].values.tolist()
    [['fr', 0.0, 1], ['fr', 1.0, 1]]
    """
    config = config or SteeringConfig()
    prompts = list(prompts) if prompts is not None else embedded_prompts("en")
    check_sweep(languages, statistics, targets, strengths, prompts)
    assert statistics is not None
    strengths = sorted({float(s) for s in strengths})
    layer_names = [spec or "all" for spec in layers]
    _check_targets(lm, masks, languages, targets, layer_names)
    folder = cache_dir() / "steering" / _digest(lm, masks, languages, statistics, prompts, config)
    native = [t for t in dict.fromkeys(targets) if native_references and t in prompt_languages()]
    plan = (
        [("baseline", 0.0, "all")]
        + [(t, 0.0, NATIVE) for t in native]
        + [(t, s, ln) for t in targets for s in strengths if s != 0 for ln in layer_names]
    )
    documents: dict[tuple[str, float, str], dict[str, Any]] = {}
    said_cache = False
    for done, (target, strength, layer_name) in enumerate(plan):
        unmodified = target == "baseline" or layer_name == NATIVE
        own = _native_prompts(target, prompts, native_prompts) if layer_name == NATIVE else prompts
        path = folder / f"{target}_{strength:g}_{layer_name}.json"
        if unmodified:  # shared by every run of this model: keyed by the prompts only
            path = folder.parent / f"{_baseline_digest(lm, own, config)}.json"
        found = _read(path) if use_cache else None
        label = _label(target, strength, layer_name)
        if found is not None:
            emit(progress, "cache", f"{label}: found in the cache", done=done + 1, total=len(plan))
            documents[(target, strength, layer_name)] = found
            continue
        emit(progress, "steer", f"{label}: generating", done=done, total=len(plan))
        make = None
        if not unmodified:
            make = functools.partial(
                _steering,
                lm,
                masks,
                languages,
                statistics,
                target,
                strength,
                layer_name,
                config=config,
            )
        document = _continue(lm, own, config, _Memo(make))
        said_cache = _say_once(progress, _write(path, document), said_cache)
        documents[(target, strength, layer_name)] = document
        emit(progress, "steer", f"{label}: done", done=done + 1, total=len(plan))
    cells = _cells(targets, strengths, layer_names, documents)
    settings = {
        **asdict(config),
        "targets": list(targets),
        "strengths": strengths,
        "layers": layer_names,
        "prompts": len(prompts),
        "model": lm.name,
        "languages": list(languages),
        "cache": str(folder),
        "native_references": native,
    }
    references = {t: score_cell(t, 0.0, NATIVE, documents[(t, 0.0, NATIVE)]) for t in native}
    return SteeringSweep(cells, settings, references)


def _native_prompts(
    target: str, prompts: Sequence[str], given: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """A target's own openings for its native reference: those ``given``, or as many of
    its embedded openings as the sweep has prompts (up to the 22 there are)."""
    own = (given or {}).get(target)
    return list(own) if own else embedded_prompts(target)[: len(prompts)]


def _label(target: str, strength: float, layer_name: str) -> str:
    """A cell in words, for progress."""
    if target == "baseline":
        return "unmodified"
    if layer_name == NATIVE:
        return f"{target} written by the unmodified model (reference)"
    return f"{target} x{strength:g} ({layer_name})"


def _cells(
    targets: Sequence[str],
    strengths: Sequence[float],
    layer_names: Sequence[str],
    documents: dict[tuple[str, float, str], dict[str, Any]],
) -> list[SteeringCell]:
    """The sweep's cells in order: per target and layer range, strength 0 (the shared
    unmodified outputs) then each strength."""
    cells = []
    for target in targets:
        for layer_name in layer_names:
            cells.append(score_cell(target, 0.0, layer_name, documents[("baseline", 0.0, "all")]))
            cells.extend(
                score_cell(target, s, layer_name, documents[(target, s, layer_name)])
                for s in strengths
                if s != 0
            )
    return cells


def _check_targets(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    targets: Sequence[str],
    layer_names: Sequence[str],
) -> None:
    """Refuse targets whose success cannot be judged or that have nothing to steer."""
    known = supported_languages()
    for target in targets:
        if target not in known:
            raise LangNeuronsError(
                f"Cannot measure steering towards {target!r}: the language identifier does "
                "not know it, so success cannot be judged."
            )
    for spec in layer_names:
        span = None if spec == "all" else parse_layers(spec, lm.num_layers)
        for target in targets:
            if not sum(len(i) for i in language_neurons(masks, languages, [target], span).values()):
                where = "any layer" if spec == "all" else f"layers {spec}"
                raise LangNeuronsError(
                    f"{target} has no selected neurons in {where}: nothing to steer. Choose "
                    "other layers, or select more neurons (a higher top rate)."
                )


class _Memo:
    """One intervention per distinct value (the prompt's detected language decides it),
    so prompts that share it are batched together."""

    def __init__(self, make: Callable[[str], Intervention | None] | None) -> None:
        self.make = make
        self.made: dict[Any, Intervention] = {}

    def __call__(self, prompt: str) -> Intervention | None:
        intervention = self.make(prompt) if self.make is not None else None
        if intervention is None:
            return None
        key = tuple(sorted(intervention.describe().items()))
        return self.made.setdefault(key, intervention)


def _steering(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    statistics: Statistics,
    target: str,
    strength: float,
    layer_name: str,
    prompt: str,
    *,
    config: SteeringConfig,
) -> Intervention | None:
    try:
        return intervention_for(
            lm,
            masks,
            languages,
            statistics,
            steer_language=target,
            strength=strength,
            layers=None if layer_name == "all" else layer_name,
            prompt=prompt if config.deactivate_source else None,
            mode=config.mode,
        )
    except NothingToChange:
        return None


def check_sweep(
    languages: Sequence[str],
    statistics: Statistics | None,
    targets: Sequence[str],
    strengths: Sequence[float],
    prompts: Sequence[str],
) -> None:
    """Refuse a sweep that cannot run, before any model work."""
    if statistics is None:
        raise LangNeuronsError(
            "Steering needs the run's statistics (mean activations); this run holds imported "
            "masks only. Run `langneurons compute` for these languages first."
        )
    if not targets:
        raise ConfigError("Name at least one target language (--targets fr,ja).")
    missing = [t for t in targets if t not in languages]
    if missing:
        raise LangNeuronsError(
            f"Cannot steer towards {', '.join(missing)}: the run covers {', '.join(languages)}."
        )
    bad = [s for s in strengths if not (s == s and abs(s) != float("inf")) or s < 0]
    if bad or not strengths:
        raise ConfigError("Strengths must be finite numbers of 0 or more (--strengths 0,1,2,4).")
    if not prompts:
        raise ConfigError("Give at least one prompt.")
