"""One decode loop per loaded model: every generation request joins it (continuous batching).

Several browser sessions, the command line and library calls from many threads generate
on one shared model.  Run separately, each request makes its own small forward pass per
token, and sixteen of them take sixteen times the hardware's time: on a CPU the matrix
products of one row cost nearly as much as those of sixteen, and on a GPU each small
launch waits on the previous one.  Here they share one: the engine keeps the rows of
every request in one batch and makes **one forward pass per step for all of them**.

**Rows and lanes.**  A request is one or more rows (the unmodified and the modified continuation
side by side, the prompts of a sweep); each row has its own prompt, intervention,
sampling settings and seed, trace, and stop condition.  A request's rows are read
(prefilled) together as soon as the loop reaches a step boundary, then join the batch;
a row leaves as soon as it stops (end of text, its token limit, or its caller gone).  A
late request does not wait for the earlier ones to finish.  Rows that change nothing (no
intervention, no editing handler) with the same prompt and settings, arriving together,
read one batch row (a *lane*): they would compute the same values and choose the same
tokens.  A class pressing Generate on one example then computes one unmodified
continuation, not one per student; each row still gets its own trace.

**Isolation.**  A row's intervention and trace act on its row only
(:func:`langneurons.hooks.bound_rows`); the handlers its caller had bound when it asked
(``with apply(lm, ...): generate(...)``) travel with its rows.  Counting statistics and
other forward passes outside generation never pass through the engine and keep their
per-thread isolation.  An exception in one request (an intervention that fails, a
cancelled session) ends that request only.

**Same results.**  The batch is left-padded: each row's cache holds its own tokens at
the right end, padding is masked out, and each row has its own positions, so a row's
greedy continuation is the one it gets alone (up to float rounding of differently sized
products, which does not change an argmax in practice).  The cache is transformers' own
``DynamicCache``; rows are added by padding and concatenating its layers and removed with
its ``batch_select_indices``.  Where a model's cache has another layout, requests are
still served by the one loop, each group in its own forward pass.

The functions of :mod:`langneurons.generation` are thin clients of this module; nothing
here needs to be called directly.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import hooks
from .batch_cache import Cohort
from .decoding import choose_tokens
from .engine_rows import (
    Cancelled,
    EditBatch,
    Lane,
    Request,
    Row,
    RowSpec,
    Step,
    TraceBatch,
    TraceColumns,
    TraceKey,
)
from .greedy_head import HeadScores, exact_scores, head_scores, unproven
from .trace import TraceRecorder

if TYPE_CHECKING:
    from .config import GenerationConfig
    from .models import LoadedModel

IDLE_SECONDS = 5.0
"""The loop's thread ends after this long without work (a new request starts it again)."""


class Engine:
    """The decode loop of one loaded model (see the module's text).  Get it with
    :func:`engine_for`; callers use :meth:`submit`."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.condition = threading.Condition()
        self.pending: list[Request] = []
        self.cohorts: list[Cohort] = []
        self.thread: threading.Thread | None = None
        parameters = inspect.signature(lm.body.forward).parameters
        self.cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self.positions = "position_ids" in parameters
        self.steps = 0  # forward passes made (for tests and benchmarks)
        self.traces: TraceBatch | None = None  # the last forward pass's traces
        self.tables: dict[TraceKey, TraceRecorder] = {}  # what each traced set of neurons needs
        self.widest = 0  # most rows in one forward pass
        self.rechosen = 0  # greedy choices the bounded head could not vouch for
        self.edit_batches: dict[tuple[Lane, ...], hooks.Bindings] = {}  # see _edits

    # -- callers' side ------------------------------------------------------------------

    def submit(self, specs: Sequence[RowSpec]) -> Request:
        """Add ``specs`` as one request; its steps arrive on the returned request (see
        :meth:`Request.results`).  Whatever the calling context has bound with
        :mod:`langneurons.hooks` acts on these rows too."""
        request = Request(specs, contextvars.copy_context())
        with self.condition:
            self.pending.append(request)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name=f"langneurons-engine-{self.lm.name}", daemon=True
                )
                self.thread.start()
            self.condition.notify_all()
        return request

    @property
    def active_rows(self) -> int:
        """Batch rows in the loop now (lanes: rows sharing one count once)."""
        return sum(len(c.rows) for c in self.cohorts)

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.condition:
                if not self.pending and not self.cohorts:
                    self.condition.wait(timeout=IDLE_SECONDS)
                    if not self.pending and not self.cohorts:
                        self.thread = None
                        return
                arrived, self.pending = self.pending, []
            try:
                with torch.inference_mode():
                    if arrived:
                        self._admit(arrived)
                    self._step()
            except Exception as exc:  # a bug or an out-of-memory: fail what was running
                self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for cohort in self.cohorts:
            for lane in cohort.rows:
                for row in lane.rows:
                    self._finish_row(row, exc)
        self.cohorts = []

    def _edits(self, lanes: list[Lane]) -> hooks.Bindings:
        """The interventions of ``lanes`` written for the whole batch (made again only when
        the batch's lanes change)."""
        key = tuple(lanes)
        found = self.edit_batches.pop(key, None)
        if found is None:
            found = EditBatch(self.lm, lanes).bindings(self.lm)
        self.edit_batches[key] = found  # most recently used last
        while len(self.edit_batches) > 4:
            self.edit_batches.pop(next(iter(self.edit_batches)))
        return found

    def _forward(
        self, lanes: list[Lane], ids: torch.Tensor, mask: torch.Tensor, cache: Any
    ) -> tuple[HeadScores | None, list[int], Any]:
        """One forward pass of these lanes (each row's handlers on its lane's row): the
        scores at the last position of the lanes that go on (``[len(going), vocab]``;
        none for a lane reading its last token: nothing follows, and the vocabulary head
        is the dearest product of a step; bounded where every row is greedy, see
        :mod:`~langneurons.greedy_head`), the lanes they belong to, and the cache."""
        lm = self.lm
        readers = [(b, row) for b, lane in enumerate(lanes) for row in lane.alive]

        def failed(k: int, exc: BaseException) -> None:
            row = readers[k][1]
            row.error = row.error or exc

        extra: dict[str, Any] = {self.cache_arg: cache} if cache is not None else {}
        if self.positions:
            extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        bindings = [(b, row.bindings) for b, row in readers]
        traced = any(row.trace_key is not None for _, row in readers)
        self.traces = TraceBatch(readers, len(lanes), self._table) if traced else None
        whole = self.traces.bindings(lm) if self.traces is not None else {}
        edits = self._edits(lanes) if any(lane.fused for lane in lanes) else None
        with hooks.bound_rows(bindings, len(lanes), failed, whole, edits):
            out = lm.body(input_ids=ids, attention_mask=mask, use_cache=True, **extra)
        self.steps += 1
        self.widest = max(self.widest, len(lanes))
        cache_out = out.get("cache")
        if cache_out is None:
            cache_out = out.get("past_key_values")
        need = [b for b, lane in enumerate(lanes) if not lane.last]
        if not need:
            return None, need, cache_out
        hidden = out.last_hidden_state[:, -1]
        picked = hidden if len(need) == len(lanes) else hidden[need]
        going = [lanes[b] for b in need]
        greedy = not any(lane.config.do_sample for lane in going)
        keep = [lane.text.seen_set for lane in going] if greedy else None
        return head_scores(lm, picked, keep), need, cache_out

    def _table(self, row: Row) -> TraceRecorder:
        """The membership matrices of the neurons ``row`` traces (made once per set of
        neurons; a few sets are kept)."""
        key = row.trace_key
        assert key is not None and row.spec.trace is not None
        found = self.tables.pop(key, None) or TraceRecorder(self.lm, row.spec.trace, 1)
        self.tables[key] = found  # most recently used last
        while len(self.tables) > 8:
            self.tables.pop(next(iter(self.tables)))
        return found

    def _admit(self, requests: list[Request]) -> None:
        """Read the prompts of the requests that arrived (all their lanes in one pass,
        left-padded) and add them to the loop; each request's first step gives its
        prompts' trace columns."""
        lm = self.lm
        lanes: list[Lane] = []
        shared: dict[tuple[tuple[int, ...], GenerationConfig], Lane] = {}
        admitted: list[Request] = []
        for request in requests:
            try:
                if request.cancelled.is_set():
                    raise Cancelled()
                request.rows = [Row(lm, request, i, spec) for i, spec in enumerate(request.specs)]
                for row in request.rows:
                    row.bind(lm)
            except Exception as exc:
                for row in request.rows:
                    self._finish_row(row, exc)
                request._put(exc)
                continue
            admitted.append(request)
            for row in request.rows:
                key = (row.spec.prompt, row.spec.config)
                if not row.edits and key in shared:
                    shared[key].add(row)
                    continue
                lane = Lane(lm, row)
                lanes.append(lane)
                if not row.edits:
                    shared[key] = lane
        if lanes:
            self._prefill(lanes, admitted)

    def _prefill(self, lanes: list[Lane], requests: list[Request]) -> None:
        """The prompts' forward pass of ``lanes`` (of ``requests``); when it fails for
        several requests at once, each is tried alone, so a bad one fails alone."""
        lm = self.lm
        width = max(len(lane.prompt) for lane in lanes)
        pad = lm.tokenizer.pad_token_id
        pad = pad if pad is not None else (lm.tokenizer.eos_token_id or 0)
        ids = torch.full((len(lanes), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(lanes), width), dtype=torch.long)
        for b, lane in enumerate(lanes):
            ids[b, width - len(lane.prompt) :] = torch.tensor(lane.prompt)
            mask[b, width - len(lane.prompt) :] = 1
        ids, mask = ids.to(lm.input_device), mask.to(lm.input_device)
        try:
            logits, need, cache = self._forward(lanes, ids, mask, None)
        except Exception as exc:
            if len(requests) > 1:
                for request in requests:
                    mine = [Lane(lm, row) for row in request.rows]
                    self._prefill(mine, [request])
                return
            for lane in lanes:
                for row in lane.rows:
                    self._finish_row(row, exc)
            return
        bos = getattr(lm.tokenizer, "bos_token_id", None)
        columns: dict[int, list[TraceColumns | None]] = {}
        self._hand_out(lanes, logits, need)
        for b, lane in enumerate(lanes):
            prompt = lane.prompt
            skip = width - len(prompt) + (1 if bos is not None and prompt[0] == bos else 0)
            for row in lane.rows:
                if row.error is not None:
                    self._finish_row(row, row.error)  # its request fails; the others go on
                    continue
                found = columns.setdefault(id(row.request), [None] * len(row.request.specs))
                found[row.index] = row.columns(ids[b].tolist(), skip, self.traces)
        for request in requests:
            if id(request) in columns and not request.finished:
                request._put(Step([""] * len(request.specs), columns[id(request)]))
        self.cohorts.append(Cohort(list(lanes), cache, mask))
        self._leave(lambda lane: False)  # lanes whose every row failed

    @staticmethod
    def _hand_out(lanes: list[Lane], logits: HeadScores | None, need: list[int]) -> None:
        """Give each lane that goes on its row of the pass's ``logits``."""
        for lane in lanes:
            lane.logits = None
        if logits is not None:
            for k, b in enumerate(need):
                lanes[b].logits = (logits, k)

    def _finish_row(self, row: Row, failure: BaseException | None = None) -> None:
        """Take ``row`` out of the loop (its lane goes on while others read it); the
        request ends with its last row, or at once with ``failure``."""
        if row.done:
            return
        row.done = True
        with contextlib.suppress(Exception):
            row.release()
        request = row.request
        if failure is not None:
            request.cancel()  # its other rows leave at the next boundary
            request._put(failure)

    def _choose(self) -> None:
        """Each lane's next token (the lanes of one forward pass together, see
        :func:`~langneurons.decoding.choose_tokens`); rows whose callers left leave, and
        lanes that stop (end of text, no reader left) leave."""
        eos = self.lm.tokenizer.eos_token_id
        passes: dict[int, tuple[HeadScores, list[tuple[Lane, int]]]] = {}
        for cohort in self.cohorts:
            for lane in cohort.rows:
                lane.feed = None
                for row in lane.alive:
                    if row.request.cancelled.is_set():
                        self._finish_row(row, Cancelled())
                if lane.done or lane.logits is None or not lane.alive:
                    continue
                scores, k = lane.logits
                passes.setdefault(id(scores), (scores, []))[1].append((lane, k))
                lane.logits = None
        for scores, chosen in passes.values():
            rows = [k for _, k in chosen]
            whole = rows == list(range(scores.matrix.shape[0]))
            texts = [lane.text for lane, _ in chosen]
            configs = [lane.config for lane, _ in chosen]
            try:
                logits = scores.matrix if whole else scores.matrix[rows]
                tokens = choose_tokens(texts, logits, configs)
                floor = scores.floor
                again = unproven(logits, floor if whole or floor is None else floor[rows], tokens)
                if again:  # the bounds cannot vouch for these: every score, as before
                    exact = exact_scores(self.lm, scores.hidden[[rows[k] for k in again]])
                    redone = choose_tokens(
                        [texts[k] for k in again], exact.matrix, [configs[k] for k in again]
                    )
                    for k, token in zip(again, redone, strict=True):
                        tokens[k] = token
                    self.rechosen += len(again)
            except Exception as exc:  # a bug: fail these lanes, not the loop
                tokens = [exc] * len(chosen)
            for (lane, _), token in zip(chosen, tokens, strict=True):
                if isinstance(token, BaseException):
                    for row in lane.alive:
                        self._finish_row(row, token)
                elif token != eos:
                    lane.feed = token  # else it stops without reading it

    def _step(self) -> None:
        """Choose, let stopped lanes leave, merge cohorts, read the chosen tokens in one
        forward pass, and send each request its step."""
        if not self.cohorts:
            return
        self._choose()
        deltas: dict[int, list[str]] = {}
        for cohort in self.cohorts:
            for lane in cohort.rows:
                if lane.feed is None:
                    continue
                delta = lane.text.add(lane.feed)
                for row in lane.alive:
                    found = deltas.setdefault(id(row.request), [""] * len(row.request.specs))
                    found[row.index] = delta
        self._leave(lambda lane: lane.feed is None)
        self._merge()
        for cohort in self.cohorts:
            self._advance(cohort, deltas)
        self._leave(lambda lane: lane.last)

    def _advance(self, cohort: Cohort, deltas: dict[int, list[str]]) -> None:
        lanes = cohort.rows
        feed = [lane.feed for lane in lanes if lane.feed is not None]
        assert len(feed) == len(lanes)  # lanes without a token to read have left
        device = cohort.mask.device
        ids = torch.tensor([[t] for t in feed], device=device)
        mask = torch.cat([cohort.mask, cohort.mask.new_ones((len(lanes), 1))], dim=1)
        try:
            logits, need, cache = self._forward(lanes, ids, mask, cohort.cache)
        except Exception as exc:
            for lane in lanes:
                for row in lane.rows:
                    self._finish_row(row, exc)
            cohort.rows = []
            return
        cohort.cache, cohort.mask = cache, mask
        by_request: dict[Request, list[TraceColumns | None]] = {}
        self._hand_out(lanes, logits, need)
        for b, lane in enumerate(lanes):
            for row in lane.alive:
                if row.error is not None:
                    self._finish_row(row, row.error)
                    continue
                found = by_request.setdefault(row.request, [None] * len(row.request.specs))
                found[row.index] = row.columns([feed[b]], 0, self.traces)
        for request, found in by_request.items():
            request._put(Step(deltas.get(id(request), [""] * len(request.specs)), found))

    def _leave(self, stops: Callable[[Lane], bool]) -> None:
        """Lanes for which ``stops`` holds, or that no row reads any more, leave; a request
        whose rows have all left gets its last step."""
        for cohort in self.cohorts:
            keep = [b for b, lane in enumerate(cohort.rows) if lane.alive and not stops(lane)]
            if len(keep) == len(cohort.rows):
                continue
            leaving = [lane for b, lane in enumerate(cohort.rows) if b not in keep]
            cohort.keep(keep)
            for lane in leaving:
                lane.done = True
                lane.logits = None
                lane.tail = lane.text.flush()
                for row in lane.rows:
                    self._finish_row(row)
                    self._close_if_done(row.request)
        self.cohorts = [c for c in self.cohorts if c.rows]

    def _close_if_done(self, request: Request) -> None:
        rows = request.rows
        if request.finished or not all(row.done for row in rows):
            return
        lanes = [row.lane for row in rows]
        if any(lane is None for lane in lanes):
            return
        request._put(
            Step(
                [lane.tail for lane in lanes if lane is not None],
                [None] * len(rows),
                done=True,
                texts=[lane.text.text() for lane in lanes if lane is not None],
                token_ids=[tuple(lane.text.generated) for lane in lanes if lane is not None],
            )
        )

    def _merge(self) -> None:
        """Fold every cohort whose cache allows it into the first such one."""
        if len(self.cohorts) < 2:
            return
        merged: list[Cohort] = []
        target: Cohort | None = None
        for cohort in self.cohorts:
            if not cohort.mergeable():
                merged.append(cohort)
            elif target is None:
                target = cohort
                merged.append(cohort)
            else:
                target.absorb(cohort)
        self.cohorts = merged


_ENGINES_LOCK = threading.Lock()


def engine_for(lm: LoadedModel) -> Engine:
    """The decode loop of ``lm`` (made on first use; its thread runs only while there is
    work)."""
    with _ENGINES_LOCK:
        found: Engine | None = lm.__dict__.get("_engine")
        if found is None:
            found = lm.__dict__["_engine"] = Engine(lm)
        return found
