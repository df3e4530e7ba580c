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

Files are written into a temporary folder first and moved into place one by one
only when all were written, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import ResultsError
from .selection import Selection
from .stats import Statistics

RUN_FORMAT = "langneurons-run/1"
FILES = ("stats.safetensors", "meta.json", "neurons.json", "activation_mask.pth")


@dataclass
class Run:
    """A run read back from disk.  ``statistics`` is ``None`` for imported masks."""

    path: Path
    statistics: Statistics | None
    meta: dict[str, Any]
    neurons: dict[str, Any]

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


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write_atomic(out_dir: str | Path, writers: dict[str, Callable[[Path], object]]) -> Path:
    """Run each ``writer(path)`` into a staging folder, then move all files into place."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {str(out)!r} is a file; pass a folder.")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".writing-"))
    except OSError as exc:
        raise ResultsError(f"Cannot create {str(out)!r}: {exc.strerror}.") from exc
    try:
        for name, writer in writers.items():
            writer(staging / name)
        for name in writers:
            os.replace(staging / name, out / name)
    except OSError as exc:
        raise ResultsError(f"Cannot write results into {str(out)!r}: {exc.strerror}.") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
    return out


def mask_bytes(selection: Selection) -> bytes:
    """``activation_mask.pth``, the reference format: a list over languages of lists over
    layers of int64 index tensors, loadable with ``torch.load(..., weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save([[t.to(torch.int64) for t in per_layer] for per_layer in selection.masks], buffer)
    return buffer.getvalue()


def write_run(
    out_dir: str | Path, statistics: Statistics, selection: Selection, meta: dict[str, Any]
) -> Path:
    """Write the four contract files into ``out_dir`` (created if needed)."""
    tensors = {
        "over_zero": statistics.over_zero.contiguous(),
        "tokens": statistics.tokens.contiguous(),
        "activation_sum": statistics.activation_sum.contiguous(),
        "activation_sq_sum": statistics.activation_sq_sum.contiguous(),
    }
    metadata = {"languages": json.dumps(statistics.languages), "format": RUN_FORMAT}
    return _write_atomic(
        out_dir,
        {
            "stats.safetensors": lambda p: save_file(tensors, str(p), metadata=metadata),
            "meta.json": lambda p: p.write_bytes(_json_bytes(meta)),
            "neurons.json": lambda p: p.write_bytes(_json_bytes(selection.to_json())),
            "activation_mask.pth": lambda p: p.write_bytes(mask_bytes(selection)),
        },
    )


def write_imported(out_dir: str | Path, selection: Selection, meta: dict[str, Any]) -> Path:
    """Write a run folder for masks imported from elsewhere (no statistics)."""
    return _write_atomic(
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


def read_run(path: str | Path) -> Run:
    """Read a run folder written by :func:`write_run`; clear errors if it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ResultsError(
            f"{str(folder)!r} is not a folder with results of `langneurons compute`."
        )
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    needed = FILES[1:3] if meta.get("imported") else FILES[:3]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ResultsError(
            f"{str(folder)!r} lacks {', '.join(missing)}: it is not a complete run. "
            "Run `langneurons compute ... --out` into it again."
        )
    try:
        neurons = json.loads((folder / "neurons.json").read_text(encoding="utf-8"))
        statistics = None
        languages = neurons["languages"]
        if not meta.get("imported"):
            tensors = load_file(str(folder / "stats.safetensors"))
            with safe_open(str(folder / "stats.safetensors"), framework="pt") as handle:
                languages = json.loads((handle.metadata() or {})["languages"])
            statistics = Statistics(
                languages=languages,
                over_zero=tensors["over_zero"],
                tokens=tensors["tokens"],
                activation_sum=tensors["activation_sum"],
                activation_sq_sum=tensors["activation_sq_sum"],
            )
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ResultsError(
            f"{str(folder)!r} holds unreadable results ({exc}). Recompute them."
        ) from exc
    if meta.get("languages") != languages:
        raise ResultsError(
            f"{str(folder)!r} is inconsistent: meta.json and stats.safetensors list different "
            "languages. Recompute it."
        )
    return Run(path=folder, statistics=statistics, meta=meta, neurons=neurons)


def read_mask(path: str | Path) -> list[list[torch.Tensor]]:
    """Read a reference-format mask (``.pth``) safely: tensors and lists only, no pickle code."""
    try:
        masks = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResultsError(
            f"{str(path)!r} is not a neuron mask in the reference format ({exc})."
        ) from exc
    if not isinstance(masks, list) or not all(isinstance(m, list) for m in masks):
        raise ResultsError(f"{str(path)!r} is not a list over languages of lists over layers.")
    return masks
