"""Interventions: change chosen neuron values in every forward pass, then restore.

An :class:`Intervention` is plain data: a list of edits, each naming a layer, neuron
indices, a mode (``"set"``, ``"add"`` or ``"scale"``) and one value per neuron.
Builders make the usual ones: :func:`deactivate` (set to 0, as the reference),
:func:`steer` (set to, or add, ``strength x`` a language's mean activation) and
:func:`scale` (multiply).  Edits apply at every position, in every forward pass,
during generation too.

:func:`apply` is the context manager that makes an intervention act on a model.
It is a client of :mod:`langneurons.hooks`, so it is safe when several threads share one
loaded model: the edits act only on the forward passes of the calling thread's context,
and nothing stays attached after the block, also after an exception.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import hooks
from .errors import LangNeuronsError
from .families import resolve_activation_modules
from .models import LoadedModel

MODES = ("set", "add", "scale")
MAX_INDEX = 2**31 - 1  # beyond any model; larger numbers would overflow an index tensor


class InterventionError(LangNeuronsError):
    """An intervention names neurons, layers or languages that do not exist."""


@dataclass(frozen=True)
class NeuronEdit:
    """One edit: ``values[j]`` applies to neuron ``neurons[j]`` of ``layer``."""

    layer: int
    neurons: torch.Tensor  # int64 [M]
    mode: str
    values: torch.Tensor  # float32 [M]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InterventionError(f"Unknown mode {self.mode!r}; use one of {', '.join(MODES)}.")
        if self.neurons.dim() != 1 or self.values.shape != self.neurons.shape:
            raise InterventionError(
                f"Layer {self.layer}: {self.neurons.numel()} neurons but "
                f"{tuple(self.values.shape)} values; give one value per neuron."
            )


@dataclass(frozen=True)
class Intervention:
    """Edits applied in order, plus a JSON-ready description of what they mean."""

    edits: tuple[NeuronEdit, ...] = ()
    description: tuple[tuple[str, Any], ...] = field(default=())

    def __add__(self, other: Intervention) -> Intervention:
        return Intervention(self.edits + other.edits, self.description + other.description)

    @property
    def is_empty(self) -> bool:
        return all(e.neurons.numel() == 0 for e in self.edits)

    def neuron_count(self) -> int:
        return len({(e.layer, int(i)) for e in self.edits for i in e.neurons})

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for key, value in self.description:
            info.setdefault(key, value)
        info["neurons"] = self.neuron_count()
        return info


NeuronSet = dict[int, torch.Tensor]
"""Neurons per layer: ``{layer: sorted int64 indices}``."""


def union(*sets: Mapping[int, torch.Tensor]) -> NeuronSet:
    """The union of neuron sets, layer by layer."""
    merged: dict[int, list[torch.Tensor]] = {}
    for neuron_set in sets:
        for layer, idx in neuron_set.items():
            merged.setdefault(int(layer), []).append(torch.as_tensor(idx, dtype=torch.int64))
    return {layer: torch.unique(torch.cat(parts)) for layer, parts in sorted(merged.items())}


def language_neurons(
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    pick: Iterable[str],
    layers: Iterable[int] | None = None,
) -> NeuronSet:
    """The union of the neurons of the languages in ``pick``, limited to ``layers``."""
    wanted = list(pick)
    unknown = [code for code in wanted if code not in languages]
    if unknown:
        raise InterventionError(
            f"No neurons for {', '.join(unknown)}: these results cover {', '.join(languages)}."
        )
    allowed = None if layers is None else set(layers)
    sets = []
    for code in wanted:
        per_layer = masks[list(languages).index(code)]
        sets.append(
            {
                layer: idx
                for layer, idx in enumerate(per_layer)
                if allowed is None or layer in allowed
            }
        )
    return union(*sets)


def parse_layers(spec: str, num_layers: int) -> range:
    """``"A-B"`` (inclusive), ``"A"``, ``"A-"`` or ``"-B"`` -> a range of layers."""
    match = re.fullmatch(r"\s*(\d*)\s*(-?)\s*(\d*)\s*", spec)
    if not match or not (match.group(1) or match.group(3)):
        raise InterventionError(f"Layers {spec!r}: use A-B, A, A- or -B (0-based, inclusive).")
    start = int(match.group(1)) if match.group(1) else 0
    end = int(match.group(3)) if match.group(3) else (num_layers - 1 if match.group(2) else start)
    if start > end or end >= num_layers:
        raise InterventionError(
            f"Layers {spec!r} do not fit this model's layers 0-{num_layers - 1}."
        )
    return range(start, end + 1)


def parse_pairs(spec: str) -> NeuronSet:
    """``"3:17,5:200"`` -> ``{3: [17], 5: [200]}`` (layer:neuron pairs)."""
    pairs: dict[int, list[int]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = re.fullmatch(r"(\d+):(\d+)", item)
        if not match:
            raise InterventionError(f"Neuron {item!r}: write layer:neuron, e.g. 3:17.")
        layer, neuron = int(match.group(1)), int(match.group(2))
        if layer > MAX_INDEX or neuron > MAX_INDEX:
            raise InterventionError(
                f"Neuron {item!r} is out of range: no model has that many layers or neurons."
            )
        pairs.setdefault(layer, []).append(neuron)
    return {layer: torch.tensor(sorted(set(idx))) for layer, idx in pairs.items()}


def _edits(neurons: Mapping[int, torch.Tensor], mode: str, values: Any) -> tuple[NeuronEdit, ...]:
    edits = []
    for layer, idx in sorted(neurons.items()):
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        if idx.numel() == 0:
            continue
        vals = values(layer, idx) if callable(values) else torch.full((idx.numel(),), values)
        edits.append(NeuronEdit(int(layer), idx, mode, vals.to(torch.float32)))
    return tuple(edits)


def deactivate(neurons: Mapping[int, torch.Tensor], label: str = "") -> Intervention:
    """Set ``neurons`` to 0 (the reference's deactivation)."""
    return Intervention(_edits(neurons, "set", 0.0), (("deactivate", label or "neurons"),))


def scale(neurons: Mapping[int, torch.Tensor], factor: float, label: str = "") -> Intervention:
    """Multiply ``neurons`` by ``factor``."""
    return Intervention(
        _edits(neurons, "scale", float(factor)),
        (("scale", label or "neurons"), ("factor", float(factor))),
    )


def steer(
    mean_activation: torch.Tensor,
    neurons: Mapping[int, torch.Tensor],
    strength: float = 1.0,
    mode: str = "set",
    label: str = "",
) -> Intervention:
    """Set ``neurons`` to ``strength x`` their mean activation (``mode="set"``), add
    that (``"add"``), or multiply what they compute by ``1 + strength`` (``"scale"``).

    ``mean_activation`` is the target language's mean value per neuron, ``[layers,
    neurons]`` (``Statistics.mean_activation()[..., k]``).
    """
    if mode not in ("set", "add", "scale"):
        raise InterventionError(f"Steering mode must be 'set', 'add' or 'scale', got {mode!r}.")
    values: Any = 1.0 + float(strength)
    if mode != "scale":
        values = lambda layer, idx: strength * mean_activation[layer, idx]  # noqa: E731
    return Intervention(
        _edits(neurons, mode, values),
        (("steer", label or "neurons"), ("strength", float(strength)), ("mode", mode)),
    )


def validate(lm: LoadedModel, intervention: Intervention) -> None:
    """Raise :class:`InterventionError` unless every edit fits ``lm``'s shape."""
    for edit in intervention.edits:
        if not 0 <= edit.layer < lm.num_layers:
            raise InterventionError(
                f"Layer {edit.layer} does not exist: {lm.name} has layers 0-{lm.num_layers - 1}."
            )
        if edit.neurons.numel() and (
            int(edit.neurons.min()) < 0 or int(edit.neurons.max()) >= lm.num_neurons
        ):
            raise InterventionError(
                f"Neuron index {int(edit.neurons.max())} in layer {edit.layer} is out of range: "
                f"{lm.name} has neurons 0-{lm.num_neurons - 1} per layer. Were these neurons "
                "found on another model?"
            )
        if not bool(torch.isfinite(edit.values).all()):
            raise InterventionError(f"Layer {edit.layer}: intervention values must be finite.")


def _edit_handler(
    edits: tuple[NeuronEdit, ...], rows: slice | None, batch: int | None
) -> hooks.Handler:
    """A hooks client that writes ``edits`` into a layer's neuron values (of ``rows`` of the
    batch only, when given).  :func:`prepare` put the edits on the layer's device in its
    dtype already, so a forward pass costs one indexed write per edit, no conversion."""

    def handle(output: torch.Tensor) -> torch.Tensor:
        # In place where no gradient flows (generation, evaluation); a copy otherwise.
        out = output if not torch.is_grad_enabled() else output.clone()
        target = out if rows is None else hooks.rows_view(out, batch or 1)[rows]
        for edit in edits:
            neurons, values = edit.neurons, edit.values
            if values.device != target.device or values.dtype != target.dtype:
                neurons, values = neurons.to(target.device), values.to(target.device, target.dtype)
            if edit.mode == "set":
                target[..., neurons] = values
            elif edit.mode == "add":
                target[..., neurons] += values
            else:
                target[..., neurons] *= values
        return out

    return handle


@dataclass(frozen=True)
class PreparedIntervention:
    """An intervention checked against one model, its edits on the layers' devices."""

    lm: LoadedModel
    edits: Mapping[int, tuple[NeuronEdit, ...]]  # layer -> edits


def prepare(lm: LoadedModel, intervention: Intervention) -> PreparedIntervention:
    """Validate ``intervention`` for ``lm`` and move its edits to the layers' devices.

    Raises :class:`InterventionError` for layers or neurons that do not exist and
    :class:`~langneurons.errors.UnsupportedModelError` when the model's activation
    modules no longer resolve.
    """
    validate(lm, intervention)
    _adapter, modules = resolve_activation_modules(lm.model)
    if any(a is not b for a, b in zip(modules, lm.modules, strict=True)):
        raise InterventionError(
            f"{lm.name}'s activation modules changed since it was loaded; load it again."
        )
    by_layer: dict[int, list[NeuronEdit]] = {}
    for edit in intervention.edits:
        param = next(lm.layers[edit.layer].parameters(), None)
        if param is not None:  # the layer's device and dtype, once, not in every pass
            values = edit.values.to(param.device, param.dtype)
            edit = NeuronEdit(edit.layer, edit.neurons.to(param.device), edit.mode, values)
        by_layer.setdefault(edit.layer, []).append(edit)
    return PreparedIntervention(lm, {layer: tuple(e) for layer, e in by_layer.items()})


@contextlib.contextmanager
def activate(
    prepared: PreparedIntervention | None, rows: slice | None = None, batch: int | None = None
) -> Iterator[None]:
    """Make a prepared intervention act in this thread's context until the block ends; with
    ``rows``, only on those rows of a batch of ``batch`` sequences (the modified row of a
    side-by-side generation).

    Cheap enough to wrap each forward pass: generators that interleave (a baseline and
    a modified stream in one thread) must not hold an intervention across ``yield``,
    since a generator shares its caller's context.
    """
    if prepared is None or not prepared.edits:
        yield
        return
    handlers = {layer: _edit_handler(edits, rows, batch) for layer, edits in prepared.edits.items()}
    with hooks.bound(prepared.lm, handlers, hooks.EDIT):
        yield


@contextlib.contextmanager
def apply(lm: LoadedModel, intervention: Intervention | None) -> Iterator[None]:
    """Make ``intervention`` act on ``lm`` in this thread until the block ends.

    Validates it first (see :func:`prepare`).  Nested blocks compose (inner edits
    apply after outer ones).  ``None`` or an empty intervention is a no-op.

    >>> import torch
    >>> from langneurons.generation import GenerationConfig, generate
    >>> from langneurons.tiny import tiny_model
    >>> lm, config = tiny_model(), GenerationConfig(max_new_tokens=6)
    >>> before = generate(lm, "All human beings", config)
    >>> with apply(lm, deactivate({0: torch.arange(128), 1: torch.arange(128)})):
    ...     off = generate(lm, "All human beings", config)
    >>> off != before, generate(lm, "All human beings", config) == before
    (True, True)
    """
    if intervention is None or intervention.is_empty:
        yield
        return
    with activate(prepare(lm, intervention)):
        yield


def active_hook_count(lm: LoadedModel) -> int:
    """Number of LangNeurons forward hooks now on ``lm`` (0 when nothing is active)."""
    return hooks.active_hook_count(lm)
