"""Text generation with and without an intervention, side by side.

A generation loop of its own (KV cache, greedy or sampling, repetition penalty,
decoding guards) rather than ``model.generate``: it streams tokens, and its sampling
uses a per-row ``torch.Generator``, so seeded runs are reproducible even when several
threads generate on one shared model at once.  Every function here is a client of the
model's one decode loop (:mod:`langneurons.engine`): calls from many threads at once are
served together, one batched forward pass per step, each caller receiving its own rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .config import MAX_PROMPT_TOKENS, GenerationConfig
from .corpus import token_piece
from .engine import RowSpec, engine_for
from .errors import LangNeuronsError
from .interventions import Intervention, prepare
from .langid import detect_language
from .models import LoadedModel, context_length
from .progress import ProgressCallback, emit
from .trace import Trace, TraceSpec


def _check_prompt(prompt: str) -> None:
    if not prompt or not prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")


def _encode(lm: LoadedModel, prompt: str, config: GenerationConfig) -> tuple[int, ...]:
    """``prompt``'s token ids, refused with the limit when prompt and continuation would
    not fit the model's context (before anything is computed)."""
    _check_prompt(prompt)
    ids = tuple(lm.tokenizer(prompt)["input_ids"])
    if len(ids) > MAX_PROMPT_TOKENS:
        raise LangNeuronsError(
            f"The prompt is {len(ids):,} tokens; generation reads at most "
            f"{MAX_PROMPT_TOKENS:,} (every token's activations are held at once, and a longer "
            "prompt takes minutes and gigabytes). Shorten the prompt."
        )
    limit = context_length(lm)
    if limit is not None and len(ids) + config.max_new_tokens > limit:
        raise LangNeuronsError(
            f"The prompt is {len(ids)} tokens; with {config.max_new_tokens} new tokens it "
            f"exceeds {lm.name}'s context of {limit} tokens. Shorten the prompt or ask for "
            "fewer new tokens."
        )
    return ids


def _generate_rows(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig,
    interventions: Sequence[Intervention | None],
    spec: TraceSpec | None = None,
) -> Iterator[tuple[list[str], list[Trace | None]]]:
    """Continue ``prompt`` once per intervention, as one request of the model's decode loop
    (:mod:`langneurons.engine`: one batched forward pass per step, shared with every other
    request running now, each intervention acting on its own row only); yields each
    row's new text per step, with each row's :class:`~langneurons.trace.Trace` (with
    ``spec``; it grows as tokens are read: the prompt's columns come with the first step,
    each generated token's when it is read, one step after it appears)."""
    ids = _encode(lm, prompt, config)
    prepared = [prepare(lm, i) if i is not None and not i.is_empty else None for i in interventions]
    request = engine_for(lm).submit([RowSpec(ids, config, ready, spec) for ready in prepared])
    traces: list[Trace | None] = [
        Trace(list(spec.languages), spec.selected()) if spec is not None else None for _ in prepared
    ]
    try:
        for step in request.results():
            for trace, columns in zip(traces, step.columns, strict=True):
                if trace is not None and columns is not None and columns.ids:
                    pieces = [token_piece(lm.tokenizer, t) for t in columns.ids]
                    trace.extend(pieces, columns.ids, columns.fired, columns.fired_after)
            yield step.deltas, traces
    finally:
        request.cancel()  # a caller that stops reading frees its rows at the next step


def stream(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece (decoded text deltas)."""
    for deltas, _traces in _generate_rows(lm, prompt, config or GenerationConfig(), [intervention]):
        if deltas[0]:
            yield deltas[0]


def stream_traced(
    lm: LoadedModel,
    prompt: str,
    spec: TraceSpec,
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> Iterator[tuple[str, Trace]]:
    """Like :func:`stream`, with the trace of everything read so far (the prompt first,
    then each generated token as it is read) alongside each piece of text."""
    for deltas, traces in _generate_rows(
        lm, prompt, config or GenerationConfig(), [intervention], spec
    ):
        assert traces[0] is not None
        yield deltas[0], traces[0]


def generate(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> str:
    """The whole continuation of ``prompt`` (see :func:`stream`).

    >>> from langneurons.tiny import tiny_model
    >>> text = generate(tiny_model(), "Everyone has the right", GenerationConfig(max_new_tokens=8))
    >>> isinstance(text, str) and len(text) > 0
    True
    """
    return "".join(stream(lm, prompt, config, intervention))


@dataclass(frozen=True)
class Continuation:
    """One prompt's continuation from :func:`generate_batch`: its text and token ids."""

    prompt: str
    text: str
    token_ids: tuple[int, ...]


def generate_batch(
    lm: LoadedModel,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> list[Continuation]:
    """Continue several prompts at once, one request of the model's decode loop (prompts
    left-padded, each row with its own positions and attention mask), the same
    ``intervention`` acting on every row.  Sampling uses one seeded generator per row, so
    a row's continuation does not depend on the others'.  For sweeps over many prompts,
    where one at a time would leave most of the hardware idle."""
    config = config or GenerationConfig()
    if not prompts:
        return []
    encoded = [_encode(lm, prompt, config) for prompt in prompts]
    prepared = prepare(lm, intervention) if intervention and not intervention.is_empty else None
    specs = [RowSpec(ids, config, prepared, None) for ids in encoded]
    request = engine_for(lm).submit(specs)
    try:
        (final,) = deque(request.results(), maxlen=1)
    finally:
        request.cancel()
    return [
        Continuation(prompt, text, ids)
        for prompt, text, ids in zip(prompts, final.texts, final.token_ids, strict=True)
    ]


@dataclass
class SideBySide:
    """The unmodified and the modified continuation of one prompt so far.

    ``done`` is set on the last state, which also carries each text's detected
    language and its probability.  With a trace, ``baseline_trace`` and
    ``modified_trace`` grow with the texts (the same objects in every state).
    """

    baseline: str = ""
    modified: str = ""
    done: bool = False
    baseline_language: tuple[str | None, float] = (None, 0.0)
    modified_language: tuple[str | None, float] = (None, 0.0)
    baseline_trace: Trace | None = None
    modified_trace: Trace | None = None


def stream_side_by_side(
    lm: LoadedModel,
    prompt: str,
    intervention: Intervention | None,
    config: GenerationConfig | None = None,
    candidates: Sequence[str] | None = None,
    trace: TraceSpec | None = None,
) -> Iterator[SideBySide]:
    """Generate the unmodified and the modified continuation together, in one batched
    forward pass per step (the intervention acting on the second row only), yielding the
    state after each step so a caller can show both growing side by side; the last state
    has ``done`` and the detected languages (among ``candidates``).  With ``trace``, both
    continuations carry their language trace, column by column.

    Raises on a bad prompt or intervention before anything is generated.
    """
    config = config or GenerationConfig()
    _encode(lm, prompt, config)  # rows start lazily: check before anything is drawn
    if intervention is not None and not intervention.is_empty:
        prepare(lm, intervention)
    steps = _generate_rows(lm, prompt, config, [None, intervention], trace)
    texts = ["", ""]
    traces: list[Trace | None] = [None, None]
    for deltas, traces in steps:
        texts = [texts[0] + deltas[0], texts[1] + deltas[1]]
        yield SideBySide(texts[0], texts[1], baseline_trace=traces[0], modified_trace=traces[1])
    yield SideBySide(
        texts[0],
        texts[1],
        done=True,
        baseline_language=detect_language(texts[0], candidates),
        modified_language=detect_language(texts[1], candidates),
        baseline_trace=traces[0],
        modified_trace=traces[1],
    )


def compare(
    lm: LoadedModel,
    prompt: str,
    intervention: Intervention,
    config: GenerationConfig | None = None,
    candidates: Sequence[str] | None = None,
    trace: TraceSpec | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Unmodified and modified continuations with their detected languages.

    Returns ``{"baseline": {"text", "language", "probability"}, "modified": {...},
    "intervention": {...}, "generation": {...}}``; with ``trace``, each side also has
    ``"trace"`` (:meth:`~langneurons.trace.Trace.to_json`: the prompt's tokens, then the
    generated ones).  ``progress`` hears a ``"generate"`` event per step (``done`` of
    ``total`` new tokens), for a long prompt or many tokens.
    """
    config = config or GenerationConfig()
    _encode(lm, prompt, config)  # a refused prompt fails before any progress is shown
    steps = stream_side_by_side(lm, prompt, intervention, config, candidates, trace)
    total = config.max_new_tokens
    emit(progress, "generate", "", done=0, total=total)
    final, said = SideBySide(), 0
    for done, final in enumerate(steps, start=1):
        if not final.done and said < min(done, total - 1):  # the last said once, below
            said = min(done, total - 1)
            emit(progress, "generate", "", done=said, total=total)
    emit(progress, "generate", "", done=total, total=total)
    result: dict[str, Any] = {}
    for key, text, (language, probability), traced in (
        ("baseline", final.baseline, final.baseline_language, final.baseline_trace),
        ("modified", final.modified, final.modified_language, final.modified_trace),
    ):
        result[key] = {"text": text, "language": language, "probability": round(probability, 3)}
        if traced is not None:
            result[key]["trace"] = traced.to_json()
    result["intervention"] = intervention.describe()
    result["generation"] = asdict(config)
    return result
