"""A run's output folder: the file contract that scripts and users rely on.

``stats.safetensors``
    ``over_zero`` int64 [layers, neurons, languages], ``tokens`` int64 [languages],
    ``activation_sum`` and ``activation_sq_sum`` float64 [layers, neurons, languages];
    the language order is in its metadata and in ``meta.json``.
``meta.json``
    model, languages in tensor order, layers, neurons, corpus hashes and split,
    settings, thresholds, versions.
``neurons.json``
    the selected neurons per language and layer, with the thresholds used.
``activation_mask.pth``
    the reference format: a list over languages of lists over layers of int64 index
    tensors, loadable with ``torch.load(path, weights_only=True)``.

The whole folder is written beside its target and swapped in only when every file was
written and flushed, so a failure or a kill never leaves a half-written file or a mix of
two runs' files; a folder LangNeurons did not write is never replaced (see
:mod:`langneurons.outputs`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import LangNeuronsError, ResultsError
from .outputs import check_can_create, interrupted_hint, write_folder
from .samples import SAMPLES_FILE, SampleActivations, read_samples, samples_tensors
from .selection import Selection
from .stats import Statistics

RUN_FORMAT = "langneurons-run/1"
FILES = ("stats.safetensors", "meta.json", "neurons.json", "activation_mask.pth")
RECIPES_FILE = "recipes.json"
"""Steering recipes found for a run (written by ``steer-eval --search``): they belong to
its neurons, so a run written again into the folder does not carry them over."""


@dataclass
class Run:
    """A run read back from disk.  ``statistics`` is ``None`` for imported masks."""

    path: Path
    statistics: Statistics | None
    meta: dict[str, Any]
    neurons: dict[str, Any]
    samples: SampleActivations | None = None
    """Per-sample activations, kept when the run's detector needed them."""

    @property
    def languages(self) -> list[str]:
        return list(self.meta["languages"])

    @property
    def masks(self) -> list[list[torch.Tensor]]:
        """Neuron indices per language and layer (from ``neurons.json``)."""
        return [
            [
                torch.tensor(idx, dtype=torch.int64)
                for idx in self.neurons["neurons"][code]["per_layer"]
            ]
            for code in self.languages
        ]

    def selection_config(self) -> Any:
        """The detector settings the run was made with (LAPE's defaults when it records
        none, or records a method or settings this version does not know)."""
        from .config import ConfigError
        from .selection import DETECTORS, make_config

        recorded = self.meta.get("selection", {})
        method = recorded.get("method", "lape")
        if method not in DETECTORS:
            method, recorded = "lape", {}
        try:
            return make_config(method, recorded.get("settings"))
        except ConfigError:
            return make_config(method)

    def selection(self) -> Selection:
        """The run's neurons (``neurons.json``) with the scores of its detector, computed
        again from the statistics (none for imported masks)."""
        from .selection import select

        if self.statistics is None:
            method = self.neurons.get("method", "imported")
            return Selection(str(method), self.languages, self.masks, {})
        chosen = select(self.statistics, self.selection_config(), samples=self.samples)
        chosen.masks = self.masks  # the recorded neurons are the run's, whatever the version
        return chosen

    def neurons_table(self) -> Any:
        """One row per selected neuron and language as a DataFrame (see
        :func:`langneurons.tables.neurons_table` for the columns)."""
        from .tables import neurons_table

        return neurons_table(self.selection(), self.statistics)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


WRITTEN_BY = "langneurons"
"""The ``written_by`` entry of every JSON output file (``ablation --out``, ``steer-eval
--out``): an existing file is replaced only when it has it."""


def _written_by_us(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("written_by") == WRITTEN_BY


def check_output_file(path: str | Path) -> Path:
    """Refuse an output file path that cannot or must not be written, before any work is
    done: empty, a folder, a path under a file, a folder without write permission, or
    an existing file LangNeurons did not write (it is never replaced)."""
    if not str(path).strip():
        raise ResultsError("--out is empty: name a file for the results, e.g. results.json.")
    target = Path(path).expanduser()
    if target.is_dir():
        raise ResultsError(f"--out {str(target)!r} is a folder; pass a file name.")
    if (target.exists() or target.is_symlink()) and not _written_by_us(target):
        raise ResultsError(
            f"--out {str(target)!r} exists and was not written by LangNeurons; it is never "
            "replaced. Choose another file name."
        )
    check_can_create(target, str(target))
    return target


def mask_bytes(selection: Selection) -> bytes:
    """``activation_mask.pth``, the reference format: a list over languages of lists over
    layers of int64 index tensors, loadable with ``torch.load(..., weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save([[t.to(torch.int64) for t in per_layer] for per_layer in selection.masks], buffer)
    return buffer.getvalue()


def write_run(
    out_dir: str | Path,
    statistics: Statistics,
    selection: Selection,
    meta: dict[str, Any],
    samples: SampleActivations | None = None,
) -> Path:
    """Write the four contract files into ``out_dir`` (created if needed), and the
    per-sample activations (``samples.safetensors``) when given."""
    tensors = {
        "over_zero": statistics.over_zero.contiguous(),
        "tokens": statistics.tokens.contiguous(),
        "activation_sum": statistics.activation_sum.contiguous(),
        "activation_sq_sum": statistics.activation_sq_sum.contiguous(),
    }
    metadata = {"languages": json.dumps(statistics.languages), "format": RUN_FORMAT}
    writers: dict[str, Callable[[Path], object]] = {
        "stats.safetensors": lambda p: save_file(tensors, str(p), metadata=metadata),
        "meta.json": lambda p: p.write_bytes(_json_bytes(meta)),
        "neurons.json": lambda p: p.write_bytes(_json_bytes(selection.to_json())),
        "activation_mask.pth": lambda p: p.write_bytes(mask_bytes(selection)),
    }
    if samples is not None:
        sample_tensors, sample_meta = samples_tensors(samples)
        writers[SAMPLES_FILE] = lambda p: save_file(sample_tensors, str(p), metadata=sample_meta)
    return _write(out_dir, writers)


def _write(out_dir: str | Path, writers: dict[str, Callable[[Path], object]]) -> Path:
    """:func:`~langneurons.outputs.write_folder` for a run: the run files of an earlier
    run are never carried into the new one (samples belong to their own statistics)."""
    try:
        return write_folder(
            out_dir, writers, never_carried=frozenset((*FILES, SAMPLES_FILE, RECIPES_FILE))
        )
    except SafetensorError as exc:
        raise ResultsError(
            f"Cannot write results into {str(out_dir)!r}: {exc}. Free disk space or choose "
            "another --out; an earlier run there is left as it was."
        ) from exc


def write_imported(out_dir: str | Path, selection: Selection, meta: dict[str, Any]) -> Path:
    """Write a run folder for masks imported from elsewhere (no statistics)."""
    return _write(
        out_dir,
        {
            "meta.json": lambda p: p.write_bytes(_json_bytes(meta)),
            "neurons.json": lambda p: p.write_bytes(_json_bytes(selection.to_json())),
            "activation_mask.pth": lambda p: p.write_bytes(mask_bytes(selection)),
        },
    )


def selection_record(selection: Selection) -> dict[str, Any]:
    """The selection part of ``meta.json``: method, settings, thresholds, sizes."""
    return {
        "method": selection.method,
        "settings": selection.settings,
        "thresholds": selection.thresholds,
        "per_language": {code: selection.language_total(code) for code in selection.languages},
    }


def corpus_label(meta: dict[str, Any]) -> str:
    """The corpus a run was counted on, in a word (a merged run names several)."""
    corpus = meta.get("corpus") or {}
    if "merged" in corpus:
        return "merged runs"
    return str(corpus.get("name", "unknown"))


def _shape_error(folder: Path, what: str) -> ResultsError:
    return ResultsError(
        f"{str(folder)!r} is inconsistent: {what}. Its files do not belong together; "
        "recompute it with `langneurons compute --out`."
    )


def _check_neurons(
    folder: Path, neurons: dict[str, Any], languages: list[str], layers: int, width: int
) -> None:
    """``neurons.json`` names the run's languages, one list per layer of neuron indices in
    range, whole numbers only."""
    if neurons.get("languages") != languages:
        raise _shape_error(folder, "neurons.json and meta.json list different languages")
    chosen = neurons.get("neurons")
    if not isinstance(chosen, dict) or not all(
        isinstance(chosen.get(code), dict) for code in languages
    ):
        raise _shape_error(folder, "neurons.json's 'neurons' is not an object by language")
    for code in languages:
        total = chosen[code].get("total")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise _shape_error(folder, f"neurons.json's {code} has no whole 'total'")
        per_layer = chosen[code].get("per_layer")
        if not isinstance(per_layer, list) or len(per_layer) != layers:
            raise _shape_error(folder, f"neurons.json has no {layers} layers of neurons for {code}")
        for layer, indices in enumerate(per_layer):
            if not isinstance(indices, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < width for i in indices
            ):
                raise _shape_error(
                    folder,
                    f"neurons.json's {code} layer {layer} holds something other than neuron "
                    f"indices 0-{width - 1}",
                )
            if len(set(indices)) != len(indices):
                raise _shape_error(folder, f"neurons.json's {code} layer {layer} repeats a neuron")
        if sum(len(indices) for indices in per_layer) != total:
            raise _shape_error(folder, f"neurons.json's {code} 'total' is not its neurons' count")


RECOMPUTE = "Recompute the run with `langneurons compute ... --out DIR`."


def _reason(exc: BaseException) -> str:
    """An exception in a few words, for a message of one line."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, KeyError):
        return f"{exc.args[0]!r} is missing" if exc.args else "a part is missing"
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def _read_json(folder: Path, name: str) -> Any:
    """``folder/name`` parsed, or one line naming the file and what is wrong with it."""
    path = folder / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except ValueError as exc:
        reason = f"not valid JSON: {_reason(exc)}"
    except (OSError, RecursionError) as exc:
        reason = _reason(exc)
    raise ResultsError(
        f"{str(path)!r} is unreadable ({reason}): it was cut short, edited, or not written "
        f"by LangNeurons. {RECOMPUTE}"
    )


def _check_shape_fields(folder: Path, meta: Any) -> dict[str, Any]:
    """``meta.json``'s content with its shape fields checked one by one: ``layers`` and
    ``neurons`` positive whole numbers, ``languages`` a non-empty list of text."""
    where = repr(str(folder / "meta.json"))
    if not isinstance(meta, dict):
        raise ResultsError(f"{where} is not a JSON object. {RECOMPUTE}")
    for field in ("layers", "neurons"):
        value = meta.get(field)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            found = "missing" if field not in meta else f"{value!r}"[:40]
            raise ResultsError(
                f"{where}: {field!r} is {found}, not a positive whole number (the model's "
                f"{'layers' if field == 'layers' else 'MLP neurons per layer'}). {RECOMPUTE}"
            )
    languages = meta.get("languages")
    if not (
        isinstance(languages, list) and languages and all(isinstance(c, str) for c in languages)
    ):
        found = "missing" if "languages" not in meta else f"{languages!r}"[:40]
        raise ResultsError(
            f"{where}: 'languages' is {found}, not a list of language codes. {RECOMPUTE}"
        )
    return meta


def _check_meta(folder: Path, meta: dict[str, Any], languages: list[str]) -> None:
    """``meta.json``'s languages are distinct language codes (they reach pages and
    links) and its records are objects where the readers expect objects."""
    from .corpus import parse_languages
    from .errors import CorpusError

    try:
        parse_languages(languages)
    except CorpusError as exc:
        raise ResultsError(
            f"{str(folder / 'meta.json')!r}: 'languages' is wrong: {exc} {RECOMPUTE}"
        ) from exc
    for field in ("model", "counting", "selection", "corpus"):
        if field in meta and not isinstance(meta[field], dict):
            raise ResultsError(
                f"{str(folder / 'meta.json')!r}: {field!r} is not an object; it was edited or "
                f"not written by LangNeurons. {RECOMPUTE}"
            )


def _check_statistics(
    folder: Path, statistics: Statistics, layers: int, width: int, meta: dict[str, Any]
) -> None:
    """The counts have the run's shape and possible values, and the token counts of
    ``meta.json``."""
    k = len(statistics.languages)
    for name in ("over_zero", "activation_sum", "activation_sq_sum"):
        shape = tuple(getattr(statistics, name).shape)
        if shape != (layers, width, k):
            raise _shape_error(
                folder,
                f"stats.safetensors's {name} is {list(shape)} but meta.json says "
                f"{[layers, width, k]}",
            )
    for name in ("activation_sum", "activation_sq_sum"):
        if not bool(torch.isfinite(getattr(statistics, name)).all()):
            raise _shape_error(
                folder, f"stats.safetensors's {name} holds values that are not finite (NaN or inf)"
            )
    if tuple(statistics.tokens.shape) != (k,) or bool((statistics.tokens <= 0).any()):
        raise _shape_error(folder, "stats.safetensors's token counts are missing or not positive")
    if bool((statistics.over_zero > statistics.tokens).any()):
        raise _shape_error(folder, "stats.safetensors holds counts above the tokens counted")
    recorded = (meta.get("counting") or {}).get("tokens")
    if isinstance(recorded, dict) and recorded:
        counted = dict(zip(statistics.languages, statistics.tokens.tolist(), strict=True))
        if not all(type(v) is int for v in recorded.values()):
            raise _shape_error(folder, "meta.json's 'counting' tokens are not whole numbers")
        if {c: int(v) for c, v in recorded.items() if c in counted} != {
            c: counted[c] for c in recorded if c in counted
        }:
            raise _shape_error(folder, "meta.json's token counts differ from stats.safetensors")


def read_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`write_run`, checking that its files belong
    together (languages, shapes, tokens, neuron indices); a clear error otherwise.  Reading
    changes nothing on disk.

    >>> import tempfile
    >>> from langneurons import compute
    >>> from langneurons.tiny import tiny_model
    >>> folder = tempfile.mkdtemp()
    >>> _ = compute(tiny_model(), ["en", "fr"], max_tokens=200, out_dir=folder)
    >>> run = read_run(folder)
    >>> run.languages, len(run.masks[0]), run.neurons_table().columns[:3].tolist()
    (['en', 'fr'], 2, ['language', 'layer', 'neuron'])
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ResultsError(
            f"{str(folder)!r} is not a folder with results of `langneurons compute`."
            + interrupted_hint(folder.absolute())
        )
    raw = _read_json(folder, "meta.json") if (folder / "meta.json").is_file() else {}
    imported = isinstance(raw, dict) and raw.get("imported")
    missing = [
        name for name in (FILES[1:3] if imported else FILES[:3]) if not (folder / name).is_file()
    ]
    if missing:
        raise ResultsError(
            f"{str(folder)!r} lacks {', '.join(missing)}: it is not a complete run. "
            "Run `langneurons compute ... --out` into it again."
        )
    meta = _check_shape_fields(folder, raw)
    layers, width, languages = meta["layers"], meta["neurons"], meta["languages"]
    _check_meta(folder, meta, languages)
    neurons = _read_json(folder, "neurons.json")
    try:
        statistics = None
        if not meta.get("imported"):
            tensors = load_file(str(folder / "stats.safetensors"))
            with safe_open(str(folder / "stats.safetensors"), framework="pt") as handle:
                stats_languages = json.loads((handle.metadata() or {})["languages"])
            statistics = Statistics(
                languages=stats_languages,
                over_zero=tensors["over_zero"],
                tokens=tensors["tokens"],
                activation_sum=tensors["activation_sum"],
                activation_sq_sum=tensors["activation_sq_sum"],
            )
    except (SafetensorError, KeyError, ValueError, OSError, TypeError, RecursionError) as exc:
        raise ResultsError(
            f"{str(folder / 'stats.safetensors')!r} is unreadable ({_reason(exc)}): it was "
            f"cut short or edited. {RECOMPUTE}"
        ) from exc
    if not isinstance(neurons, dict):
        raise _shape_error(folder, "neurons.json is not a JSON object")
    if statistics is not None and statistics.languages != languages:
        raise _shape_error(folder, "meta.json and stats.safetensors list different languages")
    _check_neurons(folder, neurons, languages, layers, width)
    if statistics is not None:
        _check_statistics(folder, statistics, layers, width, meta)
    samples = None
    if (folder / SAMPLES_FILE).is_file():
        try:
            samples = read_samples(folder / SAMPLES_FILE)
        except LangNeuronsError as exc:
            raise ResultsError(str(exc)) from exc
        if samples.languages != languages or samples.means.shape[1:] != (layers, width):
            raise _shape_error(folder, f"{SAMPLES_FILE} does not match meta.json")
    return Run(path=folder, statistics=statistics, meta=meta, neurons=neurons, samples=samples)


def read_mask(path: str | Path | bytes, name: str = "") -> list[list[torch.Tensor]]:
    """Read a reference-format mask (``.pth``, a path or its bytes) safely: tensors and
    lists only, no pickle code."""
    source = io.BytesIO(path) if isinstance(path, bytes) else Path(path)
    label = name or ("the uploaded file" if isinstance(path, bytes) else str(path))
    try:
        masks = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResultsError(
            f"{label!r} is not a neuron mask in the reference format (torch.load: "
            f"{str(exc).splitlines()[0][:160]})."
        ) from exc
    if not isinstance(masks, list) or not all(isinstance(m, list) for m in masks):
        raise ResultsError(
            f"{label!r} is not a list over languages of lists over layers. A mask is saved "
            "as torch.save([[torch.tensor([3, 17]), ...], ...], 'mask.pth')."
        )
    return masks
