"""Guards on decoding: no repeated n-grams, no broken UTF-8 from byte tokens.

Steering holds neurons at a value on every position, and a small model pushed into
another language tends to say one phrase again and again, and (with tokenizers that
spell rare characters as single bytes, ``<0xE3>``) to emit byte tokens that never form
a character, shown as U+FFFD.  Two guards act on the scores before a token is chosen:

- ``no_repeat_ngram = n`` (n > 0): a token that would repeat an n-gram already in the
  prompt or the continuation is never chosen (the rule of ``no_repeat_ngram_size`` in
  other generation libraries);
- the byte guard: while a UTF-8 character is incomplete only its continuation bytes may
  follow, and a continuation byte or a byte that never occurs in UTF-8 cannot start one.
  Tokenizers without ``<0xNN>`` byte tokens are left alone.

Both are measured in ``docs/steering.md``.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .config import GenerationConfig

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@dataclass(frozen=True)
class ByteTokens:
    """The byte tokens of a vocabulary: ``value[token]`` (``-1`` for other tokens), and
    the ids of continuation bytes (``0x80-0xBF``) and of bytes no character starts with."""

    value: torch.Tensor  # int64 [vocab]
    continuation: torch.Tensor  # int64 ids
    never_first: torch.Tensor  # int64 ids: continuation bytes, 0xC0, 0xC1, 0xF5-0xFF

    @property
    def present(self) -> bool:
        return bool(self.continuation.numel())

    def byte(self, token: int) -> int:
        """The byte ``token`` spells, or -1 for any other token."""
        return int(self.value[token]) if 0 <= token < len(self.value) else -1

    def starts_character(self, token: int) -> bool:
        """Whether ``token`` is a byte that starts a multi-byte character."""
        return 0xC2 <= self.byte(token) <= 0xF4

    def expected_after(self, token: int, pending: int) -> int:
        """Continuation bytes still expected after ``token`` when ``pending`` were."""
        value = self.byte(token)
        if value < 0:
            return 0
        if pending and 0x80 <= value <= 0xBF:
            return pending - 1
        if 0xC2 <= value <= 0xDF:
            return 1
        if 0xE0 <= value <= 0xEF:
            return 2
        if 0xF0 <= value <= 0xF4:
            return 3
        return 0


_TABLES: weakref.WeakKeyDictionary[Any, ByteTokens] = weakref.WeakKeyDictionary()
"""Tables by tokenizer, dropped with their tokenizer (a model pool unloads models)."""


def byte_tokens(tokenizer: Any) -> ByteTokens:
    """The byte tokens of ``tokenizer`` (read once per tokenizer object)."""
    with contextlib.suppress(TypeError):  # a tokenizer that cannot be weakly referenced
        found = _TABLES.get(tokenizer)
        if found is not None:
            return found
    size = len(tokenizer)
    value = torch.full((size,), -1, dtype=torch.int64)
    for token, index in tokenizer.get_vocab().items():
        match = _BYTE_TOKEN.match(token)
        if match and 0 <= index < size:
            value[index] = int(match.group(1), 16)
    continuation = torch.nonzero((value >= 0x80) & (value <= 0xBF)).flatten()
    never = (value >= 0x80) & ((value <= 0xC1) | (value >= 0xF5))
    table = ByteTokens(value, continuation, torch.nonzero(never).flatten())
    with contextlib.suppress(TypeError):
        _TABLES[tokenizer] = table
    return table


def repeated_ngram_tokens(history: list[int], n: int) -> list[int]:
    """Tokens that would complete an ``n``-gram already in ``history``."""
    if n <= 0 or len(history) < n:
        return []
    if n == 1:
        return list(set(history))
    prefix = history[len(history) - n + 1 :]
    return [
        history[i + n - 1] for i in range(len(history) - n + 1) if history[i : i + n - 1] == prefix
    ]


def guard(
    logits: torch.Tensor,
    history: list[int],
    no_repeat_ngram: int,
    table: ByteTokens | None,
    pending: int,
    in_place: bool = False,
) -> torch.Tensor:
    """``logits`` (one row) with the guarded tokens set to ``-inf`` (a copy when any is,
    unless ``in_place``: a caller that owns the row saves copying the vocabulary)."""
    banned = repeated_ngram_tokens(history, no_repeat_ngram)
    if table is None or not table.present:
        if not banned:
            return logits
        logits = logits if in_place else logits.clone()
        logits[torch.tensor(banned, device=logits.device)] = -float("inf")
        return logits
    if pending:
        allowed = table.continuation.to(logits.device)
        out = torch.full_like(logits, -float("inf"))
        out[allowed] = logits[allowed]
        if banned:
            out[torch.tensor(banned, device=logits.device)] = -float("inf")
        return out if bool(torch.isfinite(out).any()) else logits
    logits = logits if in_place else logits.clone()
    logits[table.never_first.to(logits.device)] = -float("inf")
    if banned:
        logits[torch.tensor(banned, device=logits.device)] = -float("inf")
    return logits


def _next_token(
    logits: torch.Tensor, seen: torch.Tensor, config: GenerationConfig, rng: torch.Generator
) -> int:
    """The next token from one row's ``logits`` (changed in place: the row owns them)."""
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


class RowText:
    """One continuation's tokens and text so far, and how it chooses its next token (its
    own random generator, repetition penalty and decoding guards)."""

    def __init__(self, tokenizer: Any, prompt: list[int], seed: int) -> None:
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.pending = 0  # continuation bytes a started UTF-8 character still needs
        self.partial = 0  # byte tokens of that character so far
        self.generated: list[int] = []
        self.emitted = ""
        self.seen = torch.tensor(sorted(set(prompt)), dtype=torch.long)
        self.rng = torch.Generator().manual_seed(seed)

    def choose(self, logits: torch.Tensor, config: GenerationConfig) -> int:
        """The next token from ``logits`` under the decoding guards and ``config``
        (``logits`` are this row's own and are changed in place)."""
        table = byte_tokens(self.tokenizer) if config.byte_guard else None
        if config.no_repeat_ngram or table is not None:
            history = self.prompt + self.generated if config.no_repeat_ngram else []
            logits = guard(logits, history, config.no_repeat_ngram, table, self.pending, True)
        return _next_token(logits, self.seen.to(logits.device), config, self.rng)

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
        if not bool((self.seen == token).any()):
            self.seen = torch.cat([self.seen, torch.tensor([token])]).sort().values
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
