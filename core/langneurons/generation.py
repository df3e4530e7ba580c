"""Text generation with and without an intervention, side by side.

A small generation loop of its own (KV cache, greedy or sampling, repetition
penalty) rather than ``model.generate``: it streams tokens, and its sampling uses a
per-call ``torch.Generator``, so seeded runs are reproducible even when several
threads generate on one shared model at once.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .config import setting, validate
from .errors import LangNeuronsError
from .interventions import Intervention, activate, prepare
from .langid import detect_language
from .models import LoadedModel

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


def stream(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> Iterator[str]:
    """Yield the continuation of ``prompt`` piece by piece (decoded text deltas)."""
    config = config or GenerationConfig()
    if not prompt or not prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")
    tokenizer = lm.tokenizer
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(lm.input_device)
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    rng = torch.Generator().manual_seed(config.seed)
    generated: list[int] = []
    emitted = ""
    cache_arg = _cache_argument(lm.body)
    prepared = prepare(lm, intervention) if intervention and not intervention.is_empty else None

    def forward(input_ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        # Intervention and inference mode hold around each forward pass only, never
        # across a yield: a generator shares its caller's context and grad mode, so two
        # interleaved streams in one thread stay apart.
        with torch.inference_mode(), activate(prepared):
            extra = {cache_arg: cache} if cache is not None else {}
            out = lm.body(input_ids=input_ids, use_cache=True, **extra)
            return lm.logits(out.last_hidden_state[0, -1]), _cache_of(out)

    logits, cache = forward(ids, None)
    seen = ids[0].unique()
    for _ in range(config.max_new_tokens):
        token = _next_token(logits, seen, config, rng)
        if token in eos:
            break
        generated.append(token)
        seen = torch.unique(torch.cat([seen, torch.tensor([token], device=seen.device)]))
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for complete UTF-8 characters
            yield text[len(emitted) :]
            emitted = text
        logits, cache = forward(torch.tensor([[token]], device=ids.device), cache)
    final = tokenizer.decode(generated, skip_special_tokens=True)
    if len(final) > len(emitted):
        yield final[len(emitted) :]


def generate(
    lm: LoadedModel,
    prompt: str,
    config: GenerationConfig | None = None,
    intervention: Intervention | None = None,
) -> str:
    """The whole continuation of ``prompt`` (see :func:`stream`)."""
    return "".join(stream(lm, prompt, config, intervention))


@dataclass
class SideBySide:
    """The unmodified and the modified continuation of one prompt so far.

    ``done`` is set on the last state, which also carries each text's detected
    language and its probability.
    """

    baseline: str = ""
    modified: str = ""
    done: bool = False
    baseline_language: tuple[str | None, float] = (None, 0.0)
    modified_language: tuple[str | None, float] = (None, 0.0)


def stream_side_by_side(
    lm: LoadedModel,
    prompt: str,
    intervention: Intervention | None,
    config: GenerationConfig | None = None,
    candidates: Sequence[str] | None = None,
) -> Iterator[SideBySide]:
    """Generate the unmodified and the modified continuation together, yielding the state
    after each new piece of either, so a caller can show both growing side by side; the
    last state has ``done`` and the detected languages (among ``candidates``).

    Raises on a bad prompt or intervention before anything is generated.
    """
    if not prompt or not prompt.strip():
        raise LangNeuronsError("The prompt is empty: give some text to continue.")
    if intervention is not None and not intervention.is_empty:
        prepare(lm, intervention)  # streams start lazily: check before anything is drawn
    streams: list[Iterator[str] | None] = [
        stream(lm, prompt, config),
        stream(lm, prompt, config, intervention),
    ]
    texts = ["", ""]
    while any(s is not None for s in streams):
        for i, pieces in enumerate(streams):
            if pieces is None:
                continue
            try:
                texts[i] += next(pieces)
            except StopIteration:
                streams[i] = None
                continue
            yield SideBySide(texts[0], texts[1])
    yield SideBySide(
        texts[0],
        texts[1],
        done=True,
        baseline_language=detect_language(texts[0], candidates),
        modified_language=detect_language(texts[1], candidates),
    )


def compare(
    lm: LoadedModel,
    prompt: str,
    intervention: Intervention,
    config: GenerationConfig | None = None,
    candidates: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Unmodified and modified continuations with their detected languages.

    Returns ``{"baseline": {"text", "language", "probability"}, "modified": {...},
    "intervention": {...}, "generation": {...}}``.
    """
    config = config or GenerationConfig()
    (final,) = deque(stream_side_by_side(lm, prompt, intervention, config, candidates), maxlen=1)
    result: dict[str, Any] = {}
    for key, text, (language, probability) in (
        ("baseline", final.baseline, final.baseline_language),
        ("modified", final.modified, final.modified_language),
    ):
        result[key] = {"text": text, "language": language, "probability": round(probability, 3)}
    result["intervention"] = intervention.describe()
    result["generation"] = asdict(config)
    return result
