"""Exports of the selected neurons: the files' contents, not only that they exist."""

from __future__ import annotations

import csv
import io
import json

import torch

from langneurons.export import mask_bytes, neurons_csv, neurons_document, neurons_json
from langneurons.results import read_mask
from langneurons.selection import Selection


def _selection() -> Selection:
    masks = [
        [torch.tensor([1, 5]), torch.tensor([], dtype=torch.int64)],
        [torch.tensor([5]), torch.tensor([0, 2])],
    ]
    return Selection("lape", ["en", "fr"], masks, {"top_rate": 0.01}, {"filter_value": 0.5})


def test_csv_has_one_row_per_language_and_neuron():
    rows = list(csv.DictReader(io.StringIO(neurons_csv(_selection()))))
    assert [(r["language"], int(r["layer"]), int(r["neuron"])) for r in rows] == [
        ("en", 0, 1),
        ("en", 0, 5),
        ("fr", 0, 5),
        ("fr", 1, 0),
        ("fr", 1, 2),
    ]


def test_json_carries_settings_neurons_and_where_they_came_from():
    meta = {"model": {"name": "tiny", "fingerprint": "abc"}, "corpus": {"name": "udhr"}}
    document = json.loads(neurons_json(_selection(), meta))
    assert document == neurons_document(_selection(), meta)
    assert document["method"] == "lape" and document["settings"] == {"top_rate": 0.01}
    assert document["neurons"]["fr"] == {"total": 3, "per_layer": [[5], [0, 2]]}
    assert document["distinct_total"] == 4  # (0,5) is shared
    assert document["model"]["name"] == "tiny" and document["corpus"] == "udhr"


def test_mask_file_is_the_reference_format_and_reads_back_without_pickle(tmp_path):
    path = tmp_path / "activation_mask.pth"
    path.write_bytes(mask_bytes(_selection()))
    masks = read_mask(path)
    assert len(masks) == 2 and all(len(m) == 2 for m in masks)
    assert all(t.dtype == torch.int64 for m in masks for t in m)
    assert masks[1][1].tolist() == [0, 2]
    assert torch.load(path, weights_only=True)[0][0].tolist() == [1, 5]
