"""What the decode loop (:mod:`langneurons.engine`) holds: the rows callers ask for, the
steps they receive, and the batch rows (lanes) that compute them.

A caller sends :class:`RowSpec` s as one :class:`Request` and reads its
:class:`Step` s.  Inside the loop each spec becomes a :class:`Row` (its handlers: the
caller's, its intervention, its trace), and each row reads a :class:`Lane`, one row of
the batch; rows that change nothing with the same prompt and settings, arriving
together, read one lane.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import hooks
from .decoding import RowText
from .interventions import NeuronEdit, PreparedIntervention, activate
from .trace import TraceRecorder, TraceSpec

TraceKey = tuple[tuple[str, ...], tuple[int, ...], str]


def trace_key(spec: TraceSpec) -> TraceKey:
    """What a trace watches, as a key: specs built apart from one run's masks are equal."""
    flat = [torch.as_tensor(m, dtype=torch.int64).reshape(-1) for per in spec.masks for m in per]
    data = torch.cat(flat).cpu().numpy().tobytes() if flat else b""
    sizes = tuple(int(m.numel()) for m in flat)
    return spec.languages, sizes, hashlib.sha1(data).hexdigest()


if TYPE_CHECKING:
    from .config import GenerationConfig
    from .greedy_head import HeadScores
    from .models import LoadedModel


@dataclass(frozen=True)
class RowSpec:
    """One row a caller asks for: its prompt (token ids), settings, intervention (prepared
    for the model, or ``None``) and trace (``None``: untraced)."""

    prompt: tuple[int, ...]
    config: GenerationConfig
    intervention: PreparedIntervention | None = None
    trace: TraceSpec | None = None


@dataclass(frozen=True)
class TraceColumns:
    """New trace columns of one row: the tokens read and their counts ``[n, L, K]``."""

    ids: list[int]
    fired: np.ndarray
    fired_after: np.ndarray


@dataclass(frozen=True)
class Step:
    """What one step gave a request: each row's new text, and for traced rows the columns
    of the tokens just read (``None`` where a row has none this step).  The first step
    carries the prompts' columns and no text; the last has ``done`` and each row's whole
    continuation."""

    deltas: list[str]
    columns: list[TraceColumns | None]
    done: bool = False
    texts: list[str] = field(default_factory=list)
    token_ids: list[tuple[int, ...]] = field(default_factory=list)


class Cancelled(Exception):
    """A request's caller went away; its rows leave the batch."""


class Request:
    """A caller's rows in the loop, and the queue their steps arrive on."""

    def __init__(self, specs: Sequence[RowSpec], context: contextvars.Context) -> None:
        self.specs = list(specs)
        self.context = context
        self.steps: queue.SimpleQueue[Step | BaseException] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.finished = False
        self.rows: list[Row] = []  # once admitted

    def cancel(self) -> None:
        """Leave at the next step boundary (nothing more is computed for these rows)."""
        self.cancelled.set()

    def results(self) -> Iterator[Step]:
        """The steps as they are produced (blocking); raises what failed the request."""
        while True:
            item = self.steps.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.done:
                return

    def _put(self, item: Step | BaseException) -> None:
        if not self.finished:
            self.finished = isinstance(item, BaseException) or item.done
            self.steps.put(item)


class Row:
    """A caller's row inside the loop: its request, its handlers and its trace.  The
    tokens come from its lane (the batch row it reads, possibly shared, see
    :class:`Lane`)."""

    def __init__(self, lm: LoadedModel, request: Request, index: int, spec: RowSpec) -> None:
        self.request = request
        self.index = index  # within its request
        self.spec = spec
        self.trace_key = trace_key(spec.trace) if spec.trace is not None else None
        self.edited = spec.intervention is not None  # or its caller's handlers, see bind
        # The intervention the loop writes for many rows at once (see EditBatch), when it
        # can; otherwise it is one of the row's own handlers.
        self.fused = spec.intervention if fusable(spec.intervention) else None
        self.stack = contextlib.ExitStack()
        self.context = request.context.copy()  # the caller's bindings, then the row's own
        self.bindings: hooks.Bindings = {}
        self.done = False
        self.error: BaseException | None = None
        self.lane: Lane | None = None

    def bind(self, lm: LoadedModel) -> None:
        """The handlers of this row: its caller's, its intervention, its trace.  Entered
        in a copy of the caller's context (the row's own), held until the row leaves."""
        context = self.context
        spec = self.spec
        context.run(self.stack.enter_context, hooks.holding(lm))
        self.edited = self.edited or bool(context.run(hooks.current_bindings))
        if spec.intervention is not None and self.fused is None:
            context.run(self.stack.enter_context, activate(spec.intervention))
        self.bindings = context.run(hooks.current_bindings)

    @property
    def edits(self) -> bool:
        """Whether anything of it may change values (then it needs a lane of its own)."""
        return self.fused is not None or any(
            phase == hooks.EDIT for handlers in self.bindings.values() for phase, _ in handlers
        )

    def release(self) -> None:
        self.context.run(self.stack.close)

    def columns(self, ids: list[int], skip: int, traces: TraceBatch | None) -> TraceColumns | None:
        """This row's trace columns of the last forward pass (``None`` when untraced)."""
        if self.trace_key is None or traces is None:
            return None
        before, after = traces.of(self)
        return TraceColumns(ids[skip:], before[skip:], after[skip:])


class Lane:
    """One row of the batch: a prompt continued under one setting, read by one or more
    callers' rows.  Rows that change nothing (no intervention, no editing handler) with
    the same prompt and settings, arriving together, share a lane: they would compute the
    same values and choose the same tokens (a class pressing Generate on one example
    shares every unmodified continuation), and each still gets its own trace."""

    def __init__(self, lm: LoadedModel, row: Row) -> None:
        spec = row.spec
        self.rows: list[Row] = []
        self.add(row)
        self.prompt = spec.prompt
        self.config = spec.config
        self.affines: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.text = RowText(lm.tokenizer, list(spec.prompt), spec.config.seed)
        # The next choice's logits: a row of one forward pass's logits (matrix, row).
        self.logits: tuple[HeadScores, int] | None = None
        self.feed: int | None = None  # the token to read next step
        self.done = False
        self.tail = ""  # the text held back until the lane stopped

    def add(self, row: Row) -> None:
        self.rows.append(row)
        row.lane = self

    @property
    def last(self) -> bool:
        """Whether the token to read now is the lane's last (its limit is reached)."""
        return len(self.text.generated) >= self.config.max_new_tokens

    @property
    def fused(self) -> PreparedIntervention | None:
        """The intervention the batch writes for this lane (rows with edits never share
        a lane, so it is its first row's)."""
        return self.rows[0].fused

    @property
    def alive(self) -> list[Row]:
        return [row for row in self.rows if not row.done]


def fusable(prepared: PreparedIntervention | None) -> bool:
    """Whether :class:`EditBatch` can write ``prepared`` for its row: no neuron is edited
    twice in one layer, so each neuron's edit is one multiply and one add (``set``: times
    0 plus the value; ``add``: times 1 plus it; ``scale``: times it plus 0), which gives
    the values the edits give written one by one."""
    if prepared is None or not prepared.edits:
        return False
    for edits in prepared.edits.values():
        neurons = torch.cat([edit.neurons.reshape(-1) for edit in edits])
        if torch.unique(neurons).numel() != neurons.numel():
            return False
    return True


def affine(edits: Sequence[NeuronEdit], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's ``edits`` (on distinct neurons) as a factor and a shift per neuron."""
    values = edits[0].values
    scale = torch.ones(width, dtype=values.dtype, device=values.device)
    shift = torch.zeros(width, dtype=values.dtype, device=values.device)
    for edit in edits:
        if edit.mode == "set":
            scale[edit.neurons] = 0
            shift[edit.neurons] = edit.values
        elif edit.mode == "add":
            shift[edit.neurons] = edit.values
        else:
            scale[edit.neurons] = edit.values
    return scale, shift


class EditBatch:
    """The interventions of every lane of one batch, per layer one multiply and one add
    over the whole batch instead of a handful of small writes per row: with a class's
    rows in one forward pass, per-row writes were most of a step's work on a GPU.  Lanes
    without an edit in a layer are multiplied by 1 and shifted by 0, which leaves them
    as they are."""

    def __init__(self, lm: LoadedModel, lanes: Sequence[Lane]) -> None:
        self.batch = len(lanes)
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        edited = sorted({layer for lane in lanes if lane.fused for layer in lane.fused.edits})
        for layer in edited:
            found: list[tuple[torch.Tensor, torch.Tensor] | None] = []
            for lane in lanes:
                if lane.fused is not None and layer in lane.fused.edits:
                    if layer not in lane.affines:
                        lane.affines[layer] = affine(lane.fused.edits[layer], lm.num_neurons)
                    found.append(lane.affines[layer])
                else:
                    found.append(None)
            like = next(pair[0] for pair in found if pair is not None)
            ones, zeros = torch.ones_like(like), torch.zeros_like(like)
            scale = torch.stack([ones if p is None else p[0] for p in found])[:, None, :]
            shift = torch.stack([zeros if p is None else p[1] for p in found])[:, None, :]
            self.layers[layer] = (scale, shift)

    def bindings(self, lm: LoadedModel) -> hooks.Bindings:
        return {
            id(lm.modules[layer]): ((hooks.EDIT, self._handler(scale, shift)),)
            for layer, (scale, shift) in self.layers.items()
        }

    def _handler(self, scale: torch.Tensor, shift: torch.Tensor) -> hooks.Handler:
        def handle(values: torch.Tensor) -> None:
            rows = hooks.rows_view(values, self.batch)
            if scale.device != rows.device or scale.dtype != rows.dtype:
                rows.mul_(scale.to(rows.device, rows.dtype)).add_(shift.to(rows.device, rows.dtype))
            else:
                rows.mul_(scale).add_(shift)

        return handle


class TraceBatch:
    """The language traces of every traced row of one forward pass.  Rows watching the
    same neurons are one group: per layer, one comparison and one product for all of the
    group's lanes (what :class:`~langneurons.trace.TraceRecorder` computes for one row),
    before the edits and, where a row's lane is edited, after them."""

    def __init__(
        self,
        readers: list[tuple[int, Row]],
        batch: int,
        tables: Callable[[Row], TraceRecorder],
    ) -> None:
        self.batch = batch
        self.groups: dict[TraceKey, tuple[TraceRecorder, list[int], bool]] = {}
        self.place: dict[int, tuple[TraceKey, int, bool]] = {}  # id(row) -> where its lane is
        for b, row in readers:
            key = row.trace_key
            if key is None:
                continue
            table, lanes, edited = self.groups.get(key, (tables(row), [], False))
            if b not in lanes:
                lanes.append(b)
            self.groups[key] = (table, lanes, edited or row.edited)
            self.place[id(row)] = (key, lanes.index(b), row.edited)
        self.before: dict[TraceKey, dict[int, torch.Tensor]] = {k: {} for k in self.groups}
        self.after: dict[TraceKey, dict[int, torch.Tensor]] = {k: {} for k in self.groups}
        self.results: dict[TraceKey, tuple[np.ndarray, np.ndarray]] = {}

    def bindings(self, lm: LoadedModel) -> hooks.Bindings:
        """Handlers on the whole batch, per layer: counts before and after the edits."""
        found: dict[int, list[tuple[int, hooks.Handler]]] = {}
        for key, (table, lanes, edited) in self.groups.items():
            index = torch.tensor(lanes, dtype=torch.long)
            for layer in table.layers:
                module = id(lm.modules[layer])
                matrix = table.matrices[layer]
                found.setdefault(module, []).append(
                    (hooks.OBSERVE, self._handler(matrix, index, self.before[key], layer))
                )
                if edited:
                    found.setdefault(module, []).append(
                        (hooks.OBSERVE_AFTER, self._handler(matrix, index, self.after[key], layer))
                    )
        return {module: tuple(handlers) for module, handlers in found.items()}

    def _handler(
        self, matrix: torch.Tensor, index: torch.Tensor, store: dict[int, torch.Tensor], layer: int
    ) -> hooks.Handler:
        def handle(values: torch.Tensor) -> None:
            rows = hooks.rows_view(values, self.batch)
            picked = rows if len(index) == rows.shape[0] else rows[index.to(rows.device)]
            store[layer] = (picked > 0).to(torch.float32) @ matrix

        return handle

    def of(self, row: Row) -> tuple[np.ndarray, np.ndarray]:
        """``row``'s counts of the last pass, ``[positions, L, K]`` before and after."""
        key, position, edited = self.place[id(row)]
        if key not in self.results:
            table = self.groups[key][0]
            before = table.assemble(self.before[key])
            after = table.assemble(self.after[key]) if self.after[key] else before
            self.results[key] = (before, after)
        before, after = self.results[key]
        return before[position], (after if edited else before)[position]
