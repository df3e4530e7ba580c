"""Published neuron masks without their model.

The LAPE authors released masks for several 7B-class models (``*.neuron.pth``: a list
over languages of lists over layers of index tensors).  Reading one needs no model:
the number of layers is the mask's, and the neuron range is the largest index it holds
(a lower bound), or the model's width when its ``config.json`` is given (read alone, no
weights).  :func:`read_mask_file` returns what needs no model: counts per layer and
language, the distinct neurons, and the overlap between languages.

>>> import torch
>>> mask = MaskFile.from_masks([[torch.tensor([1, 5])], [torch.tensor([5])]], ["fr", "es"])
>>> mask.counts().tolist(), mask.distinct_neurons
([[2, 1]], 2)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ResultsError
from .results import read_mask

# Where families' configs name their number of layers and their MLP width.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
WIDTH_KEYS = ("intermediate_size", "n_inner", "ffn_dim")
HIDDEN_KEYS = ("hidden_size", "n_embd")


MOST_NEURONS = 1 << 22
"""A neuron index at or above this is refused even without a model to check against (the
widest MLP layers of released models have around 100k neurons)."""


def read_config(path: str | Path) -> dict[str, Any]:
    """A model's ``config.json`` (its path or folder) as a dict, without any weights."""
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ResultsError(
            f"Cannot read the model configuration {str(file)!r}: {exc}. Give a config.json "
            "or the folder holding it."
        ) from exc
    return parse_config(data, str(file))


def parse_config(data: bytes, name: str) -> dict[str, Any]:
    """A ``config.json``'s bytes (from a file or an upload named ``name``) as a dict: the
    one reader every caller uses, so each bad file gets the same one line."""
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:160]
        raise ResultsError(
            f"Cannot read the model configuration {name!r}: it is not JSON ({reason}). Give "
            "the model's config.json."
        ) from exc
    if not isinstance(config, dict):
        raise ResultsError(f"{name!r} is not a model configuration (a JSON object).")
    return config


def config_shape(path: str | Path | dict[str, Any]) -> tuple[int, int]:
    """``(layers, neurons per layer)`` from a model's ``config.json`` (its path, folder or
    parsed content), without loading weights.  MLPs without an explicit width are
    4 x hidden (GPT-2, BLOOM)."""
    config = path if isinstance(path, dict) else read_config(path)
    source = "the configuration" if isinstance(path, dict) else str(path)
    if not isinstance(config, dict):
        raise ResultsError(f"{source!r} is not a model configuration (a JSON object).")
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers (Gemma 3)
        config = {**config, **config["text_config"]}
    layers = next((config[k] for k in LAYER_KEYS if isinstance(config.get(k), int)), None)
    width = next((config[k] for k in WIDTH_KEYS if isinstance(config.get(k), int)), None)
    if width is None:
        hidden = next((config[k] for k in HIDDEN_KEYS if isinstance(config.get(k), int)), None)
        width = 4 * hidden if hidden else None
    if layers is None or width is None:
        raise ResultsError(
            f"{source!r} names no number of layers ({', '.join(LAYER_KEYS)}) or MLP "
            f"width ({', '.join(WIDTH_KEYS)}): is it a causal LM's config.json?"
        )
    return int(layers), int(width)


SAVE_AS = (
    "A mask is a list over languages of lists over layers of 1-D integer tensors: "
    "torch.save([[torch.tensor([3, 17]), ...], ...], 'mask.pth')."
)
"""What to do, said after a malformed mask's error."""


@dataclass
class MaskFile:
    """A neuron mask read without its model: per language, per layer, the neurons."""

    masks: list[list[torch.Tensor]]
    languages: list[str]
    num_layers: int
    num_neurons: int
    width_known: bool = False
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_masks(
        cls,
        masks: Sequence[Sequence[torch.Tensor]],
        languages: Sequence[str],
        shape: tuple[int, int] | None = None,
        source: str = "",
        model_label: str = "",
    ) -> MaskFile:
        """Check ``masks`` against ``languages`` (and ``shape``, ``(layers, neurons)``, when
        known) and wrap them."""
        where = source or "the mask"
        if len(masks) != len(languages):
            raise ResultsError(
                f"{where} holds masks for {len(masks)} languages but {len(languages)} codes were "
                f"given ({', '.join(languages)}): name one code per language, in the mask's order."
            )
        if len(set(languages)) != len(languages):
            raise ResultsError(
                f"Language codes repeat: {', '.join(languages)}; name each of the mask's "
                "languages once, in its order."
            )
        checked: list[list[torch.Tensor]] = []
        for code, per_layer in zip(languages, masks, strict=True):
            layers_of_code = []
            for layer, idx in enumerate(per_layer):
                not_indices = ResultsError(
                    f"{where}: the {code} entry, layer {layer}, is not a list of whole "
                    f"neuron indices (a 1-D integer tensor). {SAVE_AS}"
                )
                try:
                    tensor = torch.as_tensor(idx)
                except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
                    raise not_indices from exc  # strings, None, ragged lists
                whole = not (tensor.is_floating_point() or tensor.is_complex())
                if (
                    tensor.dtype == torch.bool
                    or tensor.dim() != 1
                    or (tensor.numel() and not whole)
                ):
                    raise not_indices  # [] may be float; booleans are a mask, not indices
                unique = torch.unique(tensor.to(torch.int64))
                if unique.numel() != tensor.numel():
                    raise ResultsError(
                        f"{where}: the {code} entry, layer {layer}, names a neuron twice; a "
                        "mask lists each neuron once (save torch.unique of the indices)."
                    )
                layers_of_code.append(unique)
            checked.append(layers_of_code)
        layers = {len(m) for m in checked}
        if len(layers) != 1 or not checked or not checked[0]:
            raise ResultsError(
                f"{where}: its languages have different numbers of layers (or none); every "
                f"language lists every layer, an empty tensor where it has no neuron. {SAVE_AS}"
            )
        num_layers = layers.pop()
        largest = max((int(i.max()) for m in checked for i in m if i.numel()), default=-1)
        for code, per_layer in zip(languages, checked, strict=True):
            for layer, idx in enumerate(per_layer):
                if idx.numel() and int(idx.min()) < 0:
                    raise ResultsError(
                        f"{where}: the {code} entry, layer {layer}, holds negative neuron "
                        f"indices ({int(idx.min())}); indices count from 0. {SAVE_AS}"
                    )
        if largest >= MOST_NEURONS:
            raise ResultsError(
                f"{where} names neuron {largest}; no model has {MOST_NEURONS:,} or more MLP "
                "neurons per layer, so it is not a neuron mask."
            )
        if shape is not None:
            model = model_label or "the model's configuration"
            if shape[0] != num_layers:
                raise ResultsError(
                    f"{where} has {num_layers} layers but {model} has {shape[0]}: it was made "
                    "for another model."
                )
            if largest >= shape[1]:
                raise ResultsError(
                    f"{where} names neuron {largest}, but {model} has {shape[1]} neurons per "
                    "layer: it was made for another model."
                )
        return cls(
            masks=checked,
            languages=list(languages),
            num_layers=num_layers,
            num_neurons=shape[1] if shape is not None else largest + 1,
            width_known=shape is not None,
            source=source,
        )

    def counts(self) -> torch.Tensor:
        """``[layers, languages]``: how many neurons each language has in each layer."""
        return torch.tensor(
            [
                [len(self.masks[k][layer]) for k in range(len(self.languages))]
                for layer in range(self.num_layers)
            ]
        )

    def neuron_sets(self) -> dict[str, set[tuple[int, int]]]:
        return {
            code: {(layer, int(i)) for layer, idx in enumerate(self.masks[k]) for i in idx}
            for k, code in enumerate(self.languages)
        }

    @property
    def distinct_neurons(self) -> int:
        return len(set().union(*self.neuron_sets().values()))

    def overlap(self) -> Any:
        """Jaccard overlap between languages' neuron sets (a pandas DataFrame)."""
        import pandas as pd

        sets = self.neuron_sets()
        return pd.DataFrame(
            [
                [
                    len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else 0.0
                    for b in self.languages
                ]
                for a in self.languages
            ],
            index=self.languages,
            columns=self.languages,
        )

    def summary(self) -> dict[str, Any]:
        """What ``show FILE.pth --json`` prints."""
        counts = self.counts()
        return {
            "path": self.source,
            "languages": self.languages,
            "layers": self.num_layers,
            "neurons_per_layer": self.num_neurons,
            "neurons_per_layer_from": "config" if self.width_known else "largest index",
            "neurons": {c: int(counts[:, k].sum()) for k, c in enumerate(self.languages)},
            "per_layer": {c: counts[:, k].tolist() for k, c in enumerate(self.languages)},
            "distinct_neurons": self.distinct_neurons,
            "selected_share": self.distinct_neurons / (self.num_layers * self.num_neurons)
            if self.width_known
            else None,
        }

    def meta(self) -> dict[str, Any]:
        """The fields of a run's ``meta.json`` that describe these masks (for summaries)."""
        return {
            "model": {"name": Path(self.source).name or "mask"},
            "layers": self.num_layers,
            "neurons": self.num_neurons if self.width_known else f">={self.num_neurons}",
            "languages": self.languages,
            "selection": {"method": "published mask"},
        }


def read_mask_file(
    path: str | Path | bytes,
    languages: Sequence[str],
    config: str | Path | dict[str, Any] | None = None,
    name: str = "",
    shape: tuple[int, int] | None = None,
    model_label: str = "",
) -> MaskFile:
    """Read a reference-format mask (a path or its bytes; safely, no pickle) with the codes
    of its languages, checked against a model's ``config.json`` when given (or against
    ``shape``, ``(layers, neurons)``, of ``model_label``).

    >>> import io, torch
    >>> buffer = io.BytesIO()
    >>> torch.save([[torch.tensor([1, 2])], [torch.tensor([7])]], buffer)
    >>> read_mask_file(buffer.getvalue(), ["en", "fr"]).counts().tolist()
    [[2, 1]]
    """
    if config is not None:
        shape = config_shape(config)
    label = name or (str(path) if not isinstance(path, bytes) else "the uploaded mask")
    masks = read_mask(path, label)
    return MaskFile.from_masks(masks, languages, shape, source=label, model_label=model_label)
