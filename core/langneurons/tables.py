"""The library's results as pandas DataFrames, with documented columns, for notebooks,
the dashboard's tables and the CSV export.

>>> import torch
>>> from langneurons.selection import Selection
>>> masks = [[torch.tensor([3]), torch.tensor([])], [torch.tensor([1, 3]), torch.tensor([0])]]
>>> selection = Selection("lape", ["en", "fr"], masks, {})
>>> neurons_table(selection)
  language  layer  neuron
0       en      0       3
1       fr      0       1
2       fr      0       3
3       fr      1       0
>>> layer_counts(selection)  # doctest: +NORMALIZE_WHITESPACE
language  en  fr
layer
0          1   2
1          0   1
>>> language_overlap(selection).round(2)  # doctest: +NORMALIZE_WHITESPACE
language    en    fr
language
en        1.00  0.33
fr        0.33  1.00
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .selection import Selection
from .stats import Statistics

OVERLAP_KINDS = ("jaccard", "shared")


def neurons_table(selection: Selection, statistics: Statistics | None = None) -> pd.DataFrame:
    """One row per selected neuron and language, in language, layer and neuron order.

    Columns: ``language``, ``layer``, ``neuron``; the detector's score when it has one,
    named after it (``entropy`` for LAPE, lower is more specific; ``effect`` for
    mean-diff; ``score`` for the three-way split; ``average_precision``), for that
    language when the score is per language; with ``statistics``, ``p_<code>``: the
    neuron's activation probability on each language.

    >>> import torch
    >>> from langneurons.selection import Selection
    >>> neurons_table(Selection("lape", ["en"], [[torch.tensor([4, 9])]], {}))["neuron"].tolist()
    [4, 9]
    """
    key = selection.score_key
    score = selection.scores.get(key) if key else None
    probs = statistics.probabilities() if statistics is not None else None
    rows: list[dict[str, Any]] = []
    for k, (code, per_layer) in enumerate(zip(selection.languages, selection.masks, strict=True)):
        for layer, idx in enumerate(per_layer):
            for i in idx.tolist():
                row: dict[str, Any] = {"language": code, "layer": layer, "neuron": int(i)}
                if key is not None and score is not None:
                    value = score[layer, i, k] if score.dim() == 3 else score[layer, i]
                    row[key] = float(value)
                if probs is not None and statistics is not None:
                    for j, other in enumerate(statistics.languages):
                        row[f"p_{other}"] = float(probs[layer, i, j])
                rows.append(row)
    columns = ["language", "layer", "neuron"]
    if key is not None and score is not None:
        columns.append(key)
    if statistics is not None:
        columns += [f"p_{code}" for code in statistics.languages]
    return pd.DataFrame(rows, columns=columns)


def layer_counts(selection: Selection) -> pd.DataFrame:
    """Selected neurons per layer (rows, ``layer``) and language (columns)."""
    frame = pd.DataFrame(selection.counts().numpy(), columns=list(selection.languages))
    frame.index.name = "layer"
    frame.columns.name = "language"
    return frame


def language_overlap(selection: Selection, kind: str = "jaccard") -> pd.DataFrame:
    """How many neurons two languages share (``kind="shared"``; the diagonal is each
    language's own count) or their Jaccard index (``"jaccard"``), languages x languages."""
    if kind not in OVERLAP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OVERLAP_KINDS)}, got {kind!r}.")
    from .analysis import overlap

    shared, jaccard = overlap(selection)
    languages = list(selection.languages)
    frame = pd.DataFrame(
        shared if kind == "shared" else jaccard, index=languages, columns=languages
    )
    frame.index.name = frame.columns.name = "language"
    return frame
