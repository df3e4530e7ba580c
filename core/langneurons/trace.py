"""The language trace: which languages' neurons are active, token by token, layer by layer.

**Activity.**  For a token, a layer and a language, the *activity* is the share of that
language's selected neurons in that layer whose value is above zero while the model
reads the token: the quantity LAPE counts, seen one token at a time.  It is ``nan``
(``null`` in JSON) where the layer holds none of the language's neurons.  A token's
*overall* activity for a language pools all layers (selected neurons that fire over
selected neurons), its *dominant* language is the one with the highest overall
activity, and its *confidence* is the margin between that and the runner-up (0: a tie,
1: all of one language's neurons fire and none of the others').

**Before and after an intervention.**  The trace records the neuron values as the
model computed them, *before* an intervention writes its values (``fired``), and as
they flow on, *after* it (``fired_after``).  Without an intervention both are equal; a
deactivated set reads zero after the write by construction, so the values before it
are the ones that show how the rest of the model reacts.

A trace is captured by :class:`TraceRecorder`, a :mod:`langneurons.hooks` client, so
it sees only the forward passes of its own thread, and can ride along generation (see
:func:`langneurons.generation.stream_side_by_side`) or run over any text
(:func:`trace_text`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import hooks
from .corpus import token_piece
from .errors import LangNeuronsError
from .interventions import Intervention, apply
from .models import LoadedModel, context_length

BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class TraceSpec:
    """Which neurons a trace watches: each language's selected neurons per layer."""

    languages: tuple[str, ...]
    masks: tuple[tuple[torch.Tensor, ...], ...]  # [language][layer] -> neuron indices

    @classmethod
    def from_masks(
        cls, masks: Sequence[Sequence[torch.Tensor]], languages: Sequence[str]
    ) -> TraceSpec:
        return cls(tuple(languages), tuple(tuple(per_layer) for per_layer in masks))

    def selected(self) -> np.ndarray:
        """Selected neurons per layer and language, int ``[L, K]``."""
        return np.array(
            [
                [len(self.masks[k][layer]) for k in range(len(self.languages))]
                for layer in range(len(self.masks[0]))
            ],
            dtype=np.int64,
        ).reshape(len(self.masks[0]) if self.masks else 0, len(self.languages))

    def membership(self, layer: int, num_neurons: int, device: torch.device | None) -> torch.Tensor:
        """``[N, K]`` float32: 1 where neuron ``n`` of ``layer`` belongs to language ``k``."""
        matrix = torch.zeros(num_neurons, len(self.languages), dtype=torch.float32)
        for k, per_layer in enumerate(self.masks):
            matrix[per_layer[layer].to(torch.int64), k] = 1.0
        return matrix.to(device) if device is not None else matrix


@dataclass
class Trace:
    """Per token x layer x language counts of firing selected neurons, growing as tokens
    arrive (see the module's docstring for what the numbers mean).

    ``fired[t, l, k]``: selected neurons of language ``k`` in layer ``l`` above zero on
    token ``t``, as computed; ``fired_after``: the same after interventions wrote their
    values; ``selected[l, k]``: how many there are.
    """

    languages: list[str]
    selected: np.ndarray  # int [L, K]
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    fired: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    fired_after: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))

    def __post_init__(self) -> None:
        shape = (0, *self.selected.shape)
        if self.fired.size == 0:
            self.fired = np.zeros(shape, np.float32)
        if self.fired_after.size == 0:
            self.fired_after = np.zeros(shape, np.float32)

    @property
    def layers(self) -> int:
        return int(self.selected.shape[0])

    def extend(
        self, tokens: list[str], ids: list[int], fired: np.ndarray, fired_after: np.ndarray
    ) -> None:
        """Append the columns of new tokens (``fired`` ``[n, L, K]``)."""
        self.tokens.extend(tokens)
        self.token_ids.extend(ids)
        self.fired = np.concatenate([self.fired, fired.astype(np.float32)])
        self.fired_after = np.concatenate([self.fired_after, fired_after.astype(np.float32)])

    def to_frame(self, after: bool = False) -> Any:
        """The trace in long form: one row per token, layer and language, columns
        ``position``, ``token``, ``layer``, ``language``, ``activity`` (share of the
        language's selected neurons in that layer that fire; NaN where it has none there)
        and ``dominant`` (the token's dominant language)."""
        import pandas as pd

        values = self.activity(after)
        tokens, layers, langs = values.shape
        dominant = self.dominant(after) if tokens else []
        position = np.repeat(np.arange(tokens), layers * langs)
        return pd.DataFrame(
            {
                "position": position,
                "token": np.asarray(self.tokens, dtype=object)[position] if tokens else [],
                "layer": np.tile(np.repeat(np.arange(layers), langs), tokens),
                "language": np.tile(np.asarray(self.languages, dtype=object), tokens * layers),
                "activity": values.reshape(-1),
                "dominant": np.asarray(dominant, dtype=object)[position] if tokens else [],
            }
        )

    def activity(self, after: bool = False) -> np.ndarray:
        """Share of each language's selected neurons that fire, ``[T, L, K]``, ``nan`` where
        a layer holds none of a language's neurons."""
        fired = self.fired_after if after else self.fired
        with np.errstate(invalid="ignore", divide="ignore"):
            share = fired / self.selected[None].astype(np.float32)
        share[:, self.selected == 0] = np.nan
        return share

    def overall(self, after: bool = False) -> np.ndarray:
        """All layers pooled: firing selected neurons over selected neurons, ``[T, K]``."""
        fired = (self.fired_after if after else self.fired).sum(axis=1)
        total = self.selected.sum(axis=0).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, fired / np.maximum(total, 1), np.nan)

    def dominant(self, after: bool = False) -> list[str | None]:
        """The language whose neurons are most active on each token (``None`` without any)."""
        overall = self.overall(after)
        return [
            None if np.all(np.isnan(row)) else self.languages[int(np.nanargmax(row))]
            for row in overall
        ]

    def confidence(self, after: bool = False) -> list[float]:
        """Overall activity of the dominant language minus the runner-up's, per token."""
        margins = []
        for row in self.overall(after):
            values = np.sort(row[~np.isnan(row)])[::-1]
            margins.append(
                float(values[0] - values[1])
                if len(values) > 1
                else float(values[0])
                if len(values)
                else 0.0
            )
        return margins

    def changed_by_intervention(self) -> bool:
        return not np.array_equal(self.fired, self.fired_after)

    def to_json(self) -> dict[str, Any]:
        """``{"tokens", "languages", "layers", "activity" [T][L][K] (null where a layer has
        none of a language's neurons), "dominant", "confidence"}``, and ``"activity_after"``
        when an intervention changed the values."""

        def nested(values: np.ndarray) -> list:
            return [
                [
                    [None if np.isnan(v) else round(float(v), 4) for v in per_layer]
                    for per_layer in token
                ]
                for token in values
            ]

        document: dict[str, Any] = {
            "tokens": list(self.tokens),
            "languages": list(self.languages),
            "layers": self.layers,
            "activity": nested(self.activity()),
            "dominant": self.dominant(),
            "confidence": [round(c, 4) for c in self.confidence()],
        }
        if self.changed_by_intervention():
            document["activity_after"] = nested(self.activity(after=True))
        return document

    def render(self) -> str:
        """Tokens with their dominant language, for a terminal: ``Le[fr] temps[fr] ...``."""
        return render_tokens(self.tokens, self.dominant())

    def sparkline(self, token: int, language: int, after: bool = False) -> str:
        """One language's activity over the layers of one token as block characters."""
        values = self.activity(after)[token, :, language]
        return "".join(
            "·" if np.isnan(v) else BLOCKS[min(int(v * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1)]
            for v in values
        )


def render_tokens(tokens: Sequence[str], dominant: Sequence[str | None]) -> str:
    """``Le[fr] temps[fr] ...``: tokens with their dominant language (line breaks as ⏎)."""
    return " ".join(
        f"{token.replace(chr(10), '⏎')}[{language or '-'}]"
        for token, language in zip(tokens, dominant, strict=True)
    )


class TraceRecorder:
    """A hooks client that counts, per forward pass, the firing selected neurons of each
    language in each layer, before and after interventions (``batch`` rows)."""

    def __init__(self, lm: LoadedModel, spec: TraceSpec, batch: int = 1) -> None:
        self.lm, self.spec, self.batch = lm, spec, batch
        self.selected = spec.selected()
        if self.selected.shape[0] != lm.num_layers:
            raise LangNeuronsError(
                f"The trace's neurons cover {self.selected.shape[0]} layers but {lm.name} has "
                f"{lm.num_layers}."
            )
        self.layers = [layer for layer in range(lm.num_layers) if self.selected[layer].any()]
        self.matrices = {
            layer: spec.membership(layer, lm.num_neurons, lm.layer_device(layer))
            for layer in self.layers
        }
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        self.edited = True

    def _handler(self, layer: int, store: dict[int, torch.Tensor]) -> hooks.Handler:
        matrix = self.matrices[layer]

        def handle(values: torch.Tensor) -> None:
            rows = hooks.rows_view(values, self.batch)
            fired = (rows > 0).to(torch.float32) @ matrix.to(rows.device)  # [B, T, K]
            store[layer] = fired

        return handle

    @contextlib.contextmanager
    def recording(self, edited: bool = True) -> Iterator[None]:
        """Record the forward passes of this block (one at a time; see :meth:`take`).
        Without ``edited`` (no intervention acts) the values after equal those before and
        are not counted twice."""
        self.edited = edited
        before = {layer: self._handler(layer, self.before) for layer in self.layers}
        after = {layer: self._handler(layer, self.after) for layer in self.layers}
        with contextlib.ExitStack() as stack:
            stack.enter_context(hooks.bound(self.lm, before, hooks.OBSERVE))
            if edited:
                stack.enter_context(hooks.bound(self.lm, after, hooks.OBSERVE_AFTER))
            yield

    def assemble(self, store: dict[int, torch.Tensor]) -> np.ndarray:
        """Counts of every layer as ``[batch, positions, L, K]``, copied to the CPU once per
        device (one transfer, not one per layer: each is a wait on a GPU)."""
        if not store:
            return np.zeros((self.batch, 0, *self.selected.shape), np.float32)
        some = next(iter(store.values()))
        out = np.zeros((some.shape[0], some.shape[1], *self.selected.shape), np.float32)
        by_device: dict[torch.device, list[int]] = {}
        for layer, fired in store.items():
            by_device.setdefault(fired.device, []).append(layer)
        for layers in by_device.values():
            stacked = torch.stack([store[layer] for layer in layers], dim=2).cpu().numpy()
            out[:, :, layers, :] = stacked
        store.clear()
        return out

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """The last forward pass's counts, ``[batch, positions, L, K]`` before and after."""
        before = self.assemble(self.before)
        after = self.assemble(self.after) if self.edited else before.copy()
        return before, after

    def new_trace(self) -> Trace:
        return Trace(list(self.spec.languages), self.selected.copy())


def trace_ids(
    lm: LoadedModel,
    spec: TraceSpec,
    ids: Sequence[int],
    intervention: Intervention | None = None,
) -> Trace:
    """The trace of one forward pass over exactly ``ids``; a leading BOS is read but not
    traced (as in counting)."""
    if not ids:
        raise LangNeuronsError("Nothing to trace: the text has no tokens.")
    recorder = TraceRecorder(lm, spec)
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    skip = 1 if bos is not None and ids[0] == bos else 0
    edited = intervention is not None and not intervention.is_empty
    with apply(lm, intervention), recorder.recording(edited), torch.inference_mode():
        lm.body(input_ids=torch.tensor([list(ids)], device=lm.input_device), use_cache=False)
    before, after = recorder.take()
    trace = recorder.new_trace()
    kept = list(ids[skip:])
    pieces = [token_piece(lm.tokenizer, i) for i in kept]
    trace.extend(pieces, kept, before[0, skip:], after[0, skip:])
    return trace


def trace_text(
    lm: LoadedModel,
    spec: TraceSpec,
    text: str,
    intervention: Intervention | None = None,
    max_tokens: int = 2048,
) -> Trace:
    """The trace of ``text`` read by the model as a prompt is (the tokenizer's special
    tokens included, so a BOS where the model expects one).  A text of more than
    ``max_tokens`` tokens is refused with the limit, never cut short without a word.

    >>> import torch
    >>> from langneurons.tiny import tiny_model
    >>> spec = TraceSpec.from_masks([[torch.tensor([0, 1]), torch.tensor([5])]], ["fr"])
    >>> trace = trace_text(tiny_model(), spec, "Tous les êtres humains")
    >>> trace.activity().shape[1:], list(trace.to_frame().columns[:3])
    ((2, 1), ['position', 'token', 'layer'])
    """
    if not text or not text.strip():
        raise LangNeuronsError("Nothing to trace: give some text.")
    ids = lm.tokenizer(text)["input_ids"]
    context = context_length(lm)
    if len(ids) > max_tokens or (context is not None and len(ids) > context):
        limit, why = (
            (context, f"{lm.name}'s context")
            if context is not None and context < max_tokens
            else (max_tokens, "every token's activations are held at once")
        )
        raise LangNeuronsError(
            f"The text is {len(ids):,} tokens long; a trace reads at most {limit:,} "
            f"({why}). Trace a shorter part of it."
        )
    return trace_ids(lm, spec, ids, intervention)
