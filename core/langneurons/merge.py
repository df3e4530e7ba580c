"""Merging runs: statistics counted separately (other machines, other shards of a
corpus) summed into one run, and the selection made again on the sums.

Counts add up exactly: ``over_zero``, ``tokens`` and the activation sums of one
language over two disjoint sets of tokens are the sums of each set's.  Runs must
come from the same model weights, dtype and counting settings; two runs that
counted the *same* text of a language would count it twice and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .errors import ResultsError
from .outputs import check_output_folder
from .results import RUN_FORMAT, Run, read_run, selection_record, write_run
from .selection import SelectionConfig, detector_for, make_config, select
from .stats import Statistics


def _identity(run: Run) -> dict[str, Any]:
    model = run.meta.get("model", {})
    counting = run.meta.get("counting", {})
    return {
        "model weights (fingerprint)": model.get("fingerprint"),
        "dtype": model.get("dtype"),
        "layers x neurons": (run.meta.get("layers"), run.meta.get("neurons")),
        "window length (seq_len)": counting.get("seq_len"),
        "BOS handling": counting.get("bos_prepended_and_skipped"),
    }


def merge_runs(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    selection: SelectionConfig | None = None,
) -> Path:
    """Sum the statistics of ``paths`` per language and write a new run into ``out_dir``.

    The selection uses the first run's method and settings unless ``selection`` gives
    another detector's settings.  Raises :class:`ResultsError` naming the first
    difference between incompatible runs.

    >>> import os, tempfile
    >>> from langneurons import compute
    >>> from langneurons.tiny import tiny_model
    >>> lm, root = tiny_model(), tempfile.mkdtemp()
    >>> _ = compute(lm, ["en", "fr"], max_tokens=200, out_dir=os.path.join(root, "a"))
    >>> _ = compute(lm, ["de", "es"], max_tokens=200, out_dir=os.path.join(root, "b"))
    >>> parts = [os.path.join(root, "a"), os.path.join(root, "b")]
    >>> merged = merge_runs(parts, os.path.join(root, "all"))
    >>> read_run(merged).languages
    ['en', 'fr', 'de', 'es']
    """
    if len(paths) < 2:
        raise ResultsError("merge needs at least two run folders.")
    check_output_folder(out_dir)  # before reading anything
    runs = [read_run(p) for p in paths]
    for run in runs:
        if run.statistics is None:
            raise ResultsError(
                f"{str(run.path)!r} holds imported masks without statistics; only runs of "
                "`langneurons compute` can be merged."
            )
    reference = _identity(runs[0])
    for run in runs[1:]:
        for key, value in _identity(run).items():
            if value != reference[key]:
                raise ResultsError(
                    f"Cannot merge {str(runs[0].path)!r} and {str(run.path)!r}: their {key} "
                    f"differ ({reference[key]!r} vs {value!r}). Merge only runs of the same "
                    "model and counting settings."
                )
    languages: list[str] = []
    per_language: dict[str, dict[str, torch.Tensor]] = {}
    seen_text: dict[tuple[str, str], str] = {}
    corpus_records: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        stats = run.statistics
        assert stats is not None
        corpus = run.meta.get("corpus", {})
        for k, code in enumerate(stats.languages):
            text_hash = corpus.get("languages", {}).get(code, {}).get("identify_sha256", "")
            shard = (code, text_hash)
            if text_hash and shard in seen_text:
                raise ResultsError(
                    f"{str(run.path)!r} and {seen_text[shard]!r} counted the same {code} text; "
                    "merging would count it twice. Merge runs over different shards of text."
                )
            seen_text[shard] = str(run.path)
            corpus_records.setdefault(code, []).append(
                {
                    "run": str(run.path),
                    "corpus": corpus.get("name"),
                    "identify_sha256": text_hash,
                    "tokens": int(stats.tokens[k]),
                }
            )
            parts = {
                "over_zero": stats.over_zero[..., k],
                "tokens": stats.tokens[k],
                "activation_sum": stats.activation_sum[..., k],
                "activation_sq_sum": stats.activation_sq_sum[..., k],
            }
            if code not in per_language:
                languages.append(code)
                per_language[code] = {name: t.clone() for name, t in parts.items()}
            else:
                for name, tensor in parts.items():
                    per_language[code][name] += tensor
    merged = _stack(languages, per_language)
    chosen = select(merged, _merged_selection(runs[0], selection))
    meta = {
        "format": RUN_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "merged_from": [str(run.path) for run in runs],
        "model": runs[0].meta["model"],
        "languages": languages,
        "layers": runs[0].meta["layers"],
        "neurons": runs[0].meta["neurons"],
        "corpus": {"merged": corpus_records},
        "counting": {
            **runs[0].meta.get("counting", {}),
            "tokens": {c: int(per_language[c]["tokens"]) for c in languages},
        },
        "selection": selection_record(chosen),
        "versions": runs[0].meta.get("versions", {}),
    }
    return write_run(out_dir, merged, chosen, meta)


def _stack(languages: list[str], per_language: dict[str, dict[str, torch.Tensor]]) -> Statistics:
    """The summed parts of each language as one :class:`Statistics`, in ``languages`` order."""

    def stacked(name: str) -> torch.Tensor:
        return torch.stack([per_language[c][name] for c in languages], dim=-1)

    return Statistics(
        languages=languages,
        over_zero=stacked("over_zero"),
        tokens=stacked("tokens"),
        activation_sum=stacked("activation_sum"),
        activation_sq_sum=stacked("activation_sq_sum"),
    )


def _merged_selection(first: Run, selection: SelectionConfig | None) -> SelectionConfig:
    """The detector of a merged run: ``selection``, or the first run's; never one that
    needs per-sample activations, which merged statistics lack."""
    recorded = first.meta.get("selection", {})
    config: SelectionConfig = selection or make_config(
        recorded.get("method", "lape"), recorded.get("settings")
    )
    if detector_for(config).needs_samples:
        raise ResultsError(
            f"The {detector_for(config).name} detector ranks texts by per-sample activations, "
            "which merged statistics do not have: merge with another method (--method lape), "
            "or compute the languages in one run."
        )
    return config
