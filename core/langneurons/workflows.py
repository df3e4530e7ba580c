"""Jobs on an existing run folder: NLL matrix, generation with interventions, imports.

These glue the library pieces together for the CLI and the dashboard; each takes a
run (read with :func:`~langneurons.results.read_run`) and a loaded model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .atomic import write_json_file
from .config import CountingConfig, from_mapping
from .corpus import Corpus, load_corpus, parse_languages
from .errors import CorpusError, LangNeuronsError, ResultsError
from .evaluation import AblationMatrix, ablation_matrix, cached_ablation_matrix
from .generation import GenerationConfig, compare
from .interventions import (
    Intervention,
    InterventionError,
    deactivate,
    language_neurons,
    parse_layers,
    parse_pairs,
    steer,
)
from .langid import detect_language
from .maskfile import config_shape, read_config, read_mask_file
from .models import LoadedModel
from .outputs import check_output_folder
from .progress import ProgressCallback, emit
from .results import WRITTEN_BY, Run, check_output_file, write_imported
from .samples import SampleActivations, collect_samples
from .selection import Selection
from .stats import Statistics
from .streaming import PREFIX as HF_PREFIX
from .streaming import HFSource, held_out_text
from .trace import Trace, TraceSpec, trace_text

CONFIG_ONLY = "config only:"
"""How an imported run's ``model.source`` starts when no model was loaded for it."""


def run_model_spec(run: Run) -> str | None:
    """What :func:`~langneurons.models.load_model` needs to load the run's model again: its
    local folder when it still exists, else its recorded name (a hub id, or the embedded
    default's name)."""
    recorded = run.meta.get("model", {})
    source = str(recorded.get("source", ""))
    if source.startswith(CONFIG_ONLY):
        folder = Path(source[len(CONFIG_ONLY) :].strip())
        folder = folder if folder.is_dir() else folder.parent
        if any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
            return str(folder)  # the configuration's folder holds the weights too
        raise ResultsError(
            f"{str(run.path)!r} was imported against a model configuration alone "
            f"({str(folder)!r}, no weights beside it), so it does not say which model to "
            "load. Pass the model with --model (a folder or a hub id)."
        )
    if source and Path(source).is_dir():
        return source
    name = recorded.get("name")
    return str(name) if name else None


def check_model_matches(lm: LoadedModel, run: Run) -> None:
    """Refuse a model whose shape differs from the run's (its neurons would not exist)."""
    layers, neurons = run.meta.get("layers"), run.meta.get("neurons")
    if (lm.num_layers, lm.num_neurons) != (layers, neurons):
        raise ResultsError(
            f"{str(run.path)!r} was made for a model with {layers} layers x {neurons} neurons, "
            f"but {lm.name} has {lm.num_layers} x {lm.num_neurons}. Pass the run's model "
            f"({run.meta.get('model', {}).get('name', 'unknown')}) with --model."
        )


def run_corpus_languages(run: Run, languages: Sequence[str] | str | None) -> list[str]:
    """The requested languages, checked against the run's."""
    codes = parse_languages(languages) if languages else run.languages
    unknown = [c for c in codes if c not in run.languages]
    if unknown:
        raise CorpusError(
            f"{', '.join(unknown)} not in {str(run.path)!r}, which covers "
            f"{', '.join(run.languages)}."
        )
    return codes


def run_ablation_matrix(
    lm: LoadedModel,
    run: Run,
    languages: Sequence[str] | str | None = None,
    *,
    max_tokens: int | None = None,
    progress: ProgressCallback | None = None,
    masks: Sequence[Sequence[torch.Tensor]] | None = None,
    cache: bool = False,
) -> AblationMatrix:
    """The ablation matrix (deactivation x evaluation NLL) on the run's held-out texts,
    for the run's neurons or ``masks`` of the same languages (another detector's); with
    ``cache``, stored on disk and reused (local corpora)."""
    check_model_matches(lm, run)
    codes = run_corpus_languages(run, languages)
    corpus_meta = run.meta.get("corpus")
    if not corpus_meta:
        raise ResultsError(
            f"{str(run.path)!r} records no corpus (imported masks?): the NLL matrix needs "
            "held-out text. Run `langneurons compute` first."
        )
    if "split" not in corpus_meta:
        raise ResultsError(
            f"{str(run.path)!r} was merged from other runs, whose held-out texts differ; run "
            "the ablation matrix on one of the source runs."
        )
    eval_fraction = corpus_meta["split"]["eval_fraction"]
    corpus: Corpus | dict[str, str]
    if str(corpus_meta.get("source", "")).startswith(HF_PREFIX):
        corpus = _streamed_held_out(lm, corpus_meta, codes, eval_fraction, max_tokens, progress)
    else:
        corpus = _unchanged_corpus(corpus_meta, codes, eval_fraction, held_out=True)
    neurons = run.masks if masks is None else masks
    compute_matrix = (
        cached_ablation_matrix if cache and isinstance(corpus, Corpus) else ablation_matrix
    )
    result = compute_matrix(
        lm,
        neurons,
        run.languages,
        corpus,  # type: ignore[arg-type]
        languages=codes,
        eval_fraction=eval_fraction,
        max_tokens=max_tokens,
        progress=progress,
    )
    if not isinstance(corpus, Corpus):
        result.info["held_out"] = {"source": corpus_meta["source"], "max_tokens": max_tokens}
    result.info["run"] = str(run.path)
    return result


def _unchanged_corpus(
    corpus_meta: dict[str, Any], codes: Sequence[str], eval_fraction: float, held_out: bool
) -> Corpus:
    """The run's local corpus, checked to hold the same held-out (or counted) text as when
    the run was computed."""
    corpus = load_corpus(corpus_meta["name"], codes)
    part = "evaluate" if held_out else "identify"
    for code in codes:
        recorded = corpus_meta["languages"][code][f"{part}_sha256"]
        text = (corpus.evaluate_text if held_out else corpus.identify_text)(code, eval_fraction)
        if recorded != hashlib.sha256(text.encode()).hexdigest():
            which = "held-out " if held_out else ""
            raise CorpusError(
                f"The {which}{code} text of {corpus_meta['name']!r} changed since the run was "
                "computed. Recompute the run on the current corpus."
            )
    return corpus


def run_samples(
    lm: LoadedModel, run: Run, progress: ProgressCallback | None = None
) -> SampleActivations:
    """The run's per-sample activations: the ones it keeps, or collected with ``lm`` from
    the run's own corpus and windows (checked unchanged), cached on disk."""
    if run.samples is not None:
        return run.samples
    check_model_matches(lm, run)
    corpus_meta = run.meta.get("corpus") or {}
    counting_meta = run.meta.get("counting") or {}
    if "split" not in corpus_meta or str(corpus_meta.get("source", "")).startswith(HF_PREFIX):
        raise ResultsError(
            f"{str(run.path)!r} was counted on a streamed dataset or merged from other runs: "
            "its texts cannot be read again for per-sample activations. Compute the run with "
            "--method average-precision on a local corpus."
        )
    eval_fraction = corpus_meta["split"]["eval_fraction"]
    corpus = _unchanged_corpus(corpus_meta, run.languages, eval_fraction, held_out=False)
    counting = from_mapping(
        CountingConfig,
        {k: v for k, v in counting_meta.items() if k in CountingConfig.__dataclass_fields__},
        f"{run.path} counting",
    )
    return collect_samples(lm, corpus, run.languages, counting=counting, progress=progress)


def _streamed_held_out(
    lm: LoadedModel,
    corpus_meta: dict[str, Any],
    codes: list[str],
    eval_fraction: float,
    max_tokens: int | None,
    progress: ProgressCallback | None,
) -> dict[str, str]:
    """The held-out records of a streamed run's dataset, per language, up to the budget."""
    if max_tokens is None:
        raise CorpusError(
            f"This run streamed {corpus_meta['source']}; give the held-out tokens to read per "
            "language (--max-tokens)."
        )
    source = HFSource.from_description(corpus_meta)
    texts = {}
    for code in codes:
        emit(progress, "tokenize", f"Reading held-out {code} records", language=code)
        texts[code], _ = held_out_text(
            lm.tokenizer,
            source.records(code),
            max_tokens=max_tokens,
            eval_fraction=eval_fraction,
            language=code,
        )
    return texts


class NothingToChange(InterventionError):
    """The choices select no neuron at all (a hint, not a failure, in a UI)."""


def intervention_for(
    lm: LoadedModel,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    statistics: Statistics | None = None,
    *,
    deactivate_languages: Sequence[str] = (),
    steer_language: str | None = None,
    strength: float = 1.0,
    layers: str | None = None,
    neurons: str | None = None,
    prompt: str | None = None,
    where: str = "these results",
    mode: str = "set",
) -> Intervention:
    """The intervention the CLI and the playground describe in words.

    ``deactivate_languages``' neurons (and explicit ``layer:neuron`` pairs) are set to 0;
    with ``steer_language`` its neurons are set to ``strength x`` their mean activation
    on that language (from ``statistics``), and, unless other languages to deactivate
    were given, the neurons of the prompt's own language (detected) are switched off
    first.  ``layers`` (``"A-B"``) limits the language neuron sets.  ``mode="add"`` adds
    the steering value to what the neurons compute instead of setting them to it.
    """
    layer_range = parse_layers(layers, lm.num_layers) if layers else None
    off = [code for code in deactivate_languages if code != steer_language]
    intervention = Intervention()
    if steer_language is not None:
        if steer_language not in languages:
            raise InterventionError(
                f"Cannot steer towards {steer_language!r}: {where} covers {', '.join(languages)}."
            )
        if statistics is None:
            raise ResultsError(
                f"{where} holds imported masks without statistics, and steering needs them. "
                "Run `langneurons compute` for these languages first."
            )
        if not off and prompt:
            source, _ = detect_language(prompt, languages)
            if source is not None and source in languages and source != steer_language:
                off = [source]
    if off:
        intervention += deactivate(
            language_neurons(masks, languages, off, layer_range), ",".join(off)
        )
    if neurons:
        intervention += deactivate(parse_pairs(neurons), neurons)
    if steer_language is not None:
        assert statistics is not None
        mean = statistics.mean_activation()[..., statistics.index(steer_language)]
        target = language_neurons(masks, languages, [steer_language], layer_range)
        intervention += steer(mean, target, strength, mode=mode, label=steer_language)
    if layers:
        intervention = Intervention(
            intervention.edits, (*intervention.description, ("layers", layers))
        )
    if not intervention.edits:
        raise NothingToChange(
            "Nothing to change: the chosen languages have no neurons in these layers. Pass "
            "--deactivate LANGS, --steer LANG or --neurons L:N, or widen --layers."
        )
    return intervention


def build_intervention(run: Run, lm: LoadedModel, **choices: Any) -> Intervention:
    """:func:`intervention_for` with a run folder's neurons and statistics."""
    return intervention_for(
        lm, run.masks, run.languages, run.statistics, where=repr(str(run.path)), **choices
    )


def generate_comparison(
    lm: LoadedModel,
    run: Run,
    prompt: str,
    intervention: Intervention,
    config: GenerationConfig,
    trace: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Baseline and modified continuation, with languages among the run's and English;
    with ``trace``, each with its language trace over the run's neurons; ``progress``
    hears each generated token (see :func:`~langneurons.generation.compare`)."""
    check_model_matches(lm, run)
    candidates = sorted({*run.languages, "en"})
    spec = TraceSpec.from_masks(run.masks, run.languages) if trace else None
    return compare(
        lm, prompt, intervention, config, candidates=candidates, trace=spec, progress=progress
    )


def run_trace(
    lm: LoadedModel, run: Run, text: str, intervention: Intervention | None = None
) -> Trace:
    """The language trace of ``text`` over the run's neurons."""
    check_model_matches(lm, run)
    return trace_text(lm, TraceSpec.from_masks(run.masks, run.languages), text, intervention)


def import_mask(
    path: str | Path,
    languages: Sequence[str] | str,
    lm: LoadedModel | None,
    out_dir: str | Path,
    config: str | Path | None = None,
) -> Path:
    """Check a reference-format mask against ``lm`` (or, with no model, against a
    ``config.json`` alone: no weights) and write it as a run folder without statistics."""
    if lm is None and config is None:
        raise ResultsError("Importing a mask needs the model (--model) or its config (--config).")
    check_output_folder(out_dir)  # before reading anything
    codes = parse_languages(languages)
    if lm is not None:
        shape, label = (lm.num_layers, lm.num_neurons), lm.name
        model: dict[str, Any] = lm.describe()
    else:
        assert config is not None
        document = read_config(config)
        shape = config_shape(document)
        folder = Path(config) if Path(config).is_dir() else Path(config).parent
        label = str(document.get("_name_or_path") or folder.name)
        model = {
            "name": label,
            "model_type": document.get("model_type"),
            "source": f"{CONFIG_ONLY} {Path(config).resolve()}",
            "layers": shape[0],
            "neurons": shape[1],
        }
    mask = read_mask_file(path, codes, shape=shape, model_label=label)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    selection = Selection("imported", codes, mask.masks, {"source": str(Path(path).resolve())})
    meta = {
        "format": "langneurons-run/1",
        "imported": True,
        "source": {"file": str(Path(path).resolve()), "sha256": digest},
        "model": model,
        "languages": codes,
        "layers": shape[0],
        "neurons": shape[1],
    }
    return write_imported(out_dir, selection, meta)


def write_json_atomic(path: str | Path, document: dict[str, Any]) -> Path:
    """Write ``document`` to ``path`` via a temporary file (never half-written), marked
    as LangNeurons' own (``written_by``), so a later write may replace it."""
    target = check_output_file(path)
    try:
        return write_json_file(target, {**document, "written_by": WRITTEN_BY})
    except OSError as exc:
        raise LangNeuronsError(
            f"Cannot write {str(target)!r}: {exc.strerror or exc}. Free disk space or choose "
            "another --out."
        ) from exc
