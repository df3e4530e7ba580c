"""Text generation with and without an intervention, side by side.

A small generation loop of its own (KV cache, greedy or sampling, repetition
penalty) rather than ``model.generate``: it streams tokens, and its sampling uses a
per-call ``torch.Generator``, so seeded runs are reproducible even when several
threads generate on one shared model at once.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .config import setting, validate
from .corpus import token_piece
from .decoding import byte_tokens, guard
from .errors import LangNeuronsError
from .interventions import Intervention, activate, prepare
from .langid import detect_language
from .models import LoadedModel
from .trace import Trace, TraceRecorder, TraceSpec

MAX_NEW_TOKENS_LIMIT = 4096


@dataclass(frozen=True)
class GenerationConfig:
    """How to continue a prompt.  Greedy unless ``do_sample``."""

    max_new_tokens: int = setting(
        40, "tokens to generate at most", minimum=1, maximum=MAX_NEW_TOKENS_LIMIT, slider=(1, 200)
    )
    do_sample: bool = setting(False, "sample instead of greedy decoding")
    temperature: float = setting(
        1.0, "sampling temperature", above=0.0, step=0.05, slider=(0.05, 3.0)
    )
    top_p: float = setting(
        1.0,
        "nucleus sampling: keep the most likely tokens up to this mass",
        above=0.0,
        maximum=1.0,
        step=0.05,
        slider=(0.05, 1.0),
        label="Top-p",
    )
    repetition_penalty: float = setting(
        1.1,
        "divide the logits of tokens already seen by this (1: off)",
        minimum=1.0,
        step=0.05,
        slider=(1.0, 2.0),
    )
    seed: int = setting(0, "seed of the sampling generator", minimum=0, maximum=2**31 - 1)
    no_repeat_ngram: int = setting(
        0,
        "never repeat an n-gram of this many tokens (0: off)",
        minimum=0,
        maximum=16,
        slider=(0, 6),
        label="No repeated n-grams of",
    )
    byte_guard: bool = setting(
        True, "never emit byte tokens that break a UTF-8 character (shown as \ufffd)"
    )

    def __post_init__(self) -> None:
        validate(self)


def _cache_argument(body: torch.nn.Module) -> str:
    """The keyword for the KV cache: ``cache`` in newer ``transformers``, else
    ``past_key_values``."""
    parameters = inspect.signature(body.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = output.get("cache")
    return cache if cache is not None else output.get("past_key_values")


def _next_token(
    logits: torch.Tensor, seen: torch.Tensor, config: GenerationConfig, rng: torch.Generator
) -> int:
    logits = logits.clone()
    if config.repetition_penalty != 1.0 and seen.numel():
        scores = logits[seen]
        logits[seen] = torch.where(
            scores > 0, scores / config.repetition_penalty, scores * config.repetition_penalty
        )
    if not config.do_sample:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / config.temperature, dim=-1)
    if config.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < config.top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=rng))


class _Row:
    """One continuation being generated: its tokens, text so far, random generator, and
    (when traced) its trace."""

    def __init__(self, tokenizer: Any, prompt_ids: torch.Tensor, seed: int, trace: Trace | None):
        self.tokenizer = tokenizer
        self.prompt: list[int] = prompt_ids.tolist()
        self.pending = 0  # continuation bytes a started UTF-8 character still needs
        self.partial = 0  # byte tokens of that character so far
        self.generated: list[int] = []
        self.emitted = ""
        self.seen = prompt_ids.unique()
        self.rng = torch.Generator().manual_seed(seed)
        self.done = False
        self.trace = trace

    def choose(self, logits: torch.Tensor, config: GenerationConfig) -> int:
        """The next token from ``logits`` under the decoding guards and ``config``."""
        table = byte_tokens(self.tokenizer) if config.byte_guard else None
        if config.no_repeat_ngram or table is not None:
            history = self.prompt + self.generated if config.no_repeat_ngram else []
            logits = guard(logits, history, config.no_repeat_ngram, table, self.pending)
        return _next_token(logits, self.seen, config, self.rng)

    def add(self, token: int) -> str:
        """Take a new token; the newly complete text (held back while a UTF-8 character is
        incomplete)."""
        table = byte_tokens(self.tokenizer)
        before, self.pending = self.pending, table.expected_after(token, self.pending)
        if not self.pending:
            self.partial = 0
        elif before and not table.starts_character(token):
            self.partial += 1
        else:
            self.partial = 1
        self.generated.append(token)
        self.seen = torch.unique(
            torch.cat([self.seen, torch.tensor([token], device=self.seen.device)])
        )
        text = self.tokenizer.decode(self.generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.emitted = text[len(self.emitted) :], text
        return delta

    def text(self) -> str:
        """The continuation's text, without a last character left incomplete (byte
        tokens cut by the token limit would otherwise turn their whole run into U+FFFD)."""
        whole = len(self.generated) - (self.partial if self.pending else 0)
        return self.tokenizer.decode(self.generated[:whole], skip_special_tokens=True)

    def flush(self) -> str:
        final = self.text()
        delta = final[len(self.emitted) :] if len(final) > len(self.emitted) else ""
        self.emitted = final
        return delta


def _check_prompt(prompt: str) -> None:
    if not prompt or not prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")


def _generate_rows(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig,
    interventions: Sequence[Intervention | None],
    spec: TraceSpec | None = None,
) -> Iterator[tuple[list[str], list[Trace | None]]]:
    """Continue ``prompt`` once per intervention, all rows in one batched forward pass per
    step, each intervention acting on its own row only; yields each row's new text per
    step, with each row's :class:`~langneurons.trace.Trace` (with ``spec``; it grows as
    tokens are read: the prompt's columns come with the first step, each generated
    token's when it is read, one step after it appears)."""
    _check_prompt(prompt)
    batch = len(interventions)
    prepared = [prepare(lm, i) if i is not None and not i.is_empty else None for i in interventions]
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"].to(lm.input_device)
    eos = lm.tokenizer.eos_token_id
    recorder = TraceRecorder(lm, spec, batch) if spec is not None else None
    rows = [
        _Row(lm.tokenizer, ids[0], config.seed, recorder.new_trace() if recorder else None)
        for _ in range(batch)
    ]
    cache_arg = _cache_argument(lm.body)

    def forward(input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        # Interventions, the trace and inference mode hold around each forward pass only,
        # never across a yield: a generator shares its caller's context and grad mode, so
        # interleaved generators in one thread stay apart.
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            for r, ready in enumerate(prepared):
                rows_of = slice(r, r + 1) if batch > 1 else None
                stack.enter_context(activate(ready, rows=rows_of, batch=batch))
            if recorder is not None:
                stack.enter_context(recorder.recording(edited=any(prepared)))
            extra = {cache_arg: cache} if cache is not None else {}
            out = lm.body(input_ids=input_ids, use_cache=True, **extra)
            return lm.logits(out.last_hidden_state[:, -1]), _cache_of(out)

    def record(fed: list[list[int]], skip: int = 0) -> None:
        if recorder is None:
            return
        before, after = recorder.take()
        for r, row in enumerate(rows):
            if fed[r] and row.trace is not None:
                pieces = [token_piece(lm.tokenizer, t) for t in fed[r][skip:]]
                row.trace.extend(pieces, fed[r][skip:], before[r, skip:], after[r, skip:])

    logits, cache = forward(ids.expand(batch, -1).contiguous(), None)
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    prompt_ids = ids[0].tolist()
    record([prompt_ids] * batch, skip=1 if bos is not None and prompt_ids[0] == bos else 0)
    traces = [row.trace for row in rows]
    yield [""] * batch, traces  # the prompt's trace is there before the first token
    for _ in range(config.max_new_tokens):
        deltas: list[str] = []
        fed: list[list[int]] = []
        for r, row in enumerate(rows):
            token = eos if row.done else row.choose(logits[r], config)
            if row.done or token == eos:
                row.done = True
                deltas.append("")
                fed.append([])
                continue
            deltas.append(row.add(token))
            fed.append([token])
        if all(row.done for row in rows):
            break
        next_ids = [f[0] if f else (eos if eos is not None else 0) for f in fed]
        logits, cache = forward(torch.tensor(next_ids, device=ids.device)[:, None], cache)
        record(fed)  # each new token's column, read as it was fed
        yield deltas, traces
    yield [row.flush() for row in rows], traces


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
    """Continue several prompts at once, one batched forward pass per step (prompts
    left-padded, each row with its own positions and attention mask), the same
    ``intervention`` acting on every row.  Sampling uses one seeded generator per row, so
    a row's continuation does not depend on the others'.  For sweeps over many prompts,
    where one at a time would leave most of the hardware idle."""
    config = config or GenerationConfig()
    if not prompts:
        return []
    for prompt in prompts:
        _check_prompt(prompt)
    tokenizer = lm.tokenizer
    encoded = [tokenizer(p, return_tensors="pt")["input_ids"][0] for p in prompts]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    width = max(len(e) for e in encoded)
    device = lm.input_device
    ids = torch.full((len(prompts), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, e in enumerate(encoded):
        ids[r, width - len(e) :] = e
        mask[r, width - len(e) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    rows = [_Row(tokenizer, e.to(device), config.seed, None) for e in encoded]
    prepared = prepare(lm, intervention) if intervention and not intervention.is_empty else None
    cache_arg = _cache_argument(lm.body)

    def forward(step_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
        extra = {cache_arg: cache} if cache is not None else {}
        with torch.inference_mode(), activate(prepared):
            out = lm.body(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **extra,
            )
            return lm.logits(out.last_hidden_state[:, -1]), _cache_of(out)

    logits, cache = forward(ids, None)
    for _ in range(config.max_new_tokens):
        next_ids = []
        for r, row in enumerate(rows):
            token = eos if row.done else row.choose(logits[r], config)
            if row.done or token == eos:
                row.done = True
                next_ids.append(int(pad))
            else:
                row.add(token)
                next_ids.append(token)
        if all(row.done for row in rows):
            break
        done = torch.tensor([0 if row.done else 1 for row in rows], device=device)
        mask = torch.cat([mask, done[:, None]], dim=1)
        logits, cache = forward(torch.tensor(next_ids, device=device)[:, None], cache)
    return [
        Continuation(prompt, row.text(), tuple(row.generated))
        for prompt, row in zip(prompts, rows, strict=True)
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
    _check_prompt(prompt)
    if intervention is not None and not intervention.is_empty:
        prepare(lm, intervention)  # rows start lazily: check before anything is drawn
    steps = _generate_rows(lm, prompt, config or GenerationConfig(), [None, intervention], trace)
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
) -> dict[str, Any]:
    """Unmodified and modified continuations with their detected languages.

    Returns ``{"baseline": {"text", "language", "probability"}, "modified": {...},
    "intervention": {...}, "generation": {...}}``; with ``trace``, each side also has
    ``"trace"`` (:meth:`~langneurons.trace.Trace.to_json`: the prompt's tokens, then the
    generated ones).
    """
    config = config or GenerationConfig()
    steps = stream_side_by_side(lm, prompt, intervention, config, candidates, trace)
    (final,) = deque(steps, maxlen=1)
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
