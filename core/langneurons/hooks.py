"""The one mechanism that reaches into a model's activation modules.

Counting statistics, capturing activations for the inspector, tracing language activity
and applying interventions are all *clients* of this module: each binds handlers to
layers for the duration of a ``with`` block, and a handler sees (and may replace) the
activation module's output, the neuron values ``[..., neurons]``.

Several browser sessions share one loaded model, so bindings are per context: they live
in a :mod:`contextvars` variable, and the single forward hook per activation module
(installed while at least one binding exists anywhere, reference-counted under a lock)
runs only the handlers of the *calling* thread or context.  One session's counting,
capture or intervention never touches another session's forward passes, and a generator
that interleaves with another in one thread binds around each forward pass only.

Handlers of one module run in phase order: :data:`OBSERVE` (what the model computed),
then :data:`EDIT` (interventions write their values), then :data:`OBSERVE_AFTER` (what
flows on); within a phase, in the order they were bound (outer blocks first).

**Rows.**  Generation runs in one decode loop per model (:mod:`langneurons.engine`),
whose batch holds the rows of many callers.  A caller's bindings travel with its rows
(:func:`current_bindings`, taken where the caller asked for generation), and the loop
runs them with :func:`bound_rows`: each row's handlers see that row of the batch only,
``[1, positions, neurons]``, exactly as if the row had been computed alone.  So a
binding acts on the forward passes of its own context, and on the rows computed on that
context's behalf, never on anyone else's.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch import nn


class LoadedModel(Protocol):
    """What the hooks need of a loaded model (:class:`langneurons.models.LoadedModel`
    has it; named structurally, since loading a model uses this module to measure it)."""

    model: nn.Module
    modules: list[nn.Module]


Handler = Callable[[torch.Tensor], torch.Tensor | None]
"""Takes a layer's neuron values; returns a replacement tensor, or ``None`` to leave them."""

OBSERVE = 0
EDIT = 1
OBSERVE_AFTER = 2

# id(activation module) -> ((phase, handler), ...) of the current context, phase-sorted.
_BOUND: contextvars.ContextVar[Mapping[int, tuple[tuple[int, Handler], ...]]] = (
    contextvars.ContextVar("langneurons_bound_handlers", default=MappingProxyType({}))
)


def _hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
    handlers = _BOUND.get().get(id(module))
    if not handlers:
        return None
    value, replaced = output, False
    for _phase, handler in handlers:
        result = handler(value)
        if result is not None:
            value, replaced = result, True
    return value if replaced else None


class _Installed:
    """Reference-counted forward hooks on one model's activation modules."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.handles: list[Any] = []

    def acquire(self, modules: list[nn.Module]) -> None:
        with self.lock:
            if self.users == 0:
                try:
                    self.handles = [m.register_forward_hook(_hook) for m in modules]
                except BaseException:
                    self._remove()
                    raise
            self.users += 1

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                self._remove()

    def _remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


_INSTALLED: weakref.WeakKeyDictionary[nn.Module, _Installed] = weakref.WeakKeyDictionary()
_INSTALLED_LOCK = threading.Lock()


def _installed_for(model: nn.Module) -> _Installed:
    with _INSTALLED_LOCK:
        found = _INSTALLED.get(model)
        if found is None:
            found = _INSTALLED[model] = _Installed()
        return found


@contextlib.contextmanager
def bound(lm: LoadedModel, handlers: Mapping[int, Handler], phase: int = OBSERVE) -> Iterator[None]:
    """Run ``handlers[layer]`` on that layer's neuron values in every forward pass of this
    thread or context until the block ends (nested blocks add up; all are removed on exit,
    also after an exception)."""
    with bound_modules(lm.model, lm.modules, handlers, phase):
        yield


@contextlib.contextmanager
def bound_modules(
    model: nn.Module,
    modules: list[nn.Module],
    handlers: Mapping[int, Handler],
    phase: int = OBSERVE,
) -> Iterator[None]:
    """:func:`bound` for a model not wrapped yet (``modules``: its activation modules, by
    layer), as when its width is read while it is being loaded."""
    if not handlers:
        yield
        return
    current = dict(_BOUND.get())
    for layer, handler in handlers.items():
        key = id(modules[layer])
        merged = (*current.get(key, ()), (phase, handler))
        current[key] = tuple(sorted(merged, key=lambda item: item[0]))  # stable: bind order
    installed = _installed_for(model)
    installed.acquire(modules)
    token = _BOUND.set(MappingProxyType(current))
    try:
        yield
    finally:
        _BOUND.reset(token)
        installed.release()


Bindings = Mapping[int, tuple[tuple[int, Handler], ...]]
"""What one context has bound: ``id(activation module) -> ((phase, handler), ...)``."""


def current_bindings() -> Bindings:
    """The handlers bound in this thread or context now (to run them on rows computed
    elsewhere, see :func:`bound_rows`)."""
    return _BOUND.get()


@contextlib.contextmanager
def holding(lm: LoadedModel) -> Iterator[None]:
    """Keep the forward hooks installed on ``lm`` until the block ends (rows whose
    bindings outlive the block that bound them, see :func:`bound_rows`)."""
    installed = _installed_for(lm.model)
    installed.acquire(lm.modules)
    try:
        yield
    finally:
        installed.release()


def _on_row(
    handler: Handler, row: int, batch: int, failed: Callable[[BaseException], None]
) -> Handler:
    def handle(values: torch.Tensor) -> None:
        view = rows_view(values, batch)[row : row + 1]
        try:
            result = handler(view)
            if result is not None and result is not view:
                view.copy_(result)
        except Exception as exc:  # this row's failure only: the others go on
            failed(exc)

    return handle


@contextlib.contextmanager
def bound_rows(
    bindings: Sequence[tuple[int, Bindings]],
    batch: int,
    failed: Callable[[int, BaseException], None],
    whole: Bindings | None = None,
    last: Bindings | None = None,
) -> Iterator[None]:
    """Run each ``(row, handlers)`` of ``bindings`` on that row of the batch (``batch``
    rows) in this context's forward passes until the block ends.  Handlers edit their row
    in place (a replacement is copied into it), which is what generation needs: no
    gradient flows.  A handler that raises calls ``failed(k, exception)`` (``k``: its
    entry in ``bindings``) and leaves everything else alone.  ``whole`` are handlers on
    the whole batch (the engine's trace of many rows at once), run in the same phase order;
    ``last`` too, after the rows' own handlers of their phase (the engine's interventions
    of many rows at once: a row's intervention comes after its caller's handlers).

    The caller keeps the hooks installed (:func:`holding`) for as long as rows with
    bindings run.
    """
    merged: dict[int, list[tuple[int, Handler]]] = {
        key: list(handlers) for key, handlers in (whole or {}).items()
    }
    for k, (row, bound) in enumerate(bindings):
        report = functools.partial(failed, k)
        for key, handlers in bound.items():
            for phase, handler in handlers:
                merged.setdefault(key, []).append((phase, _on_row(handler, row, batch, report)))
    for key, handlers in (last or {}).items():
        merged.setdefault(key, []).extend(handlers)
    table = {key: tuple(sorted(found, key=lambda item: item[0])) for key, found in merged.items()}
    token = _BOUND.set(MappingProxyType(table))
    try:
        yield
    finally:
        _BOUND.reset(token)


def active_hook_count(lm: LoadedModel) -> int:
    """Number of LangNeurons forward hooks now on ``lm`` (0 when nothing is bound)."""
    return sum(1 for m in lm.modules for hook in m._forward_hooks.values() if hook is _hook)


def rows_view(values: torch.Tensor, batch: int) -> torch.Tensor:
    """``values`` as ``[batch, positions, neurons]``: the layout of most families, and of
    OPT's flattened ``[batch * positions, neurons]``."""
    return values if values.dim() == 3 else values.view(batch, -1, values.shape[-1])
