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
from dataclasses import dataclass, field
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
    copies: dict[torch.device, torch.Tensor] = field(default_factory=dict, compare=False)

    def never_first_on(self, device: torch.device) -> torch.Tensor:
        """:attr:`never_first` on ``device`` (copied once, not once per token)."""
        found = self.copies.get(device)
        if found is None:
            found = self.copies[device] = self.never_first.to(device)
        return found

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
    logits[table.never_first_on(logits.device)] = -float("inf")
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
        self.seen_set = set(prompt)  # tokens the repetition penalty applies to
        self._seen: torch.Tensor | None = None  # the same, as a sorted tensor (when asked)
        self.rng = torch.Generator().manual_seed(seed)

    @property
    def seen(self) -> torch.Tensor:
        """The tokens read so far (prompt and continuation), sorted, as a tensor."""
        if self._seen is None:
            self._seen = torch.tensor(sorted(self.seen_set), dtype=torch.long)
        return self._seen

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
        if token not in self.seen_set:
            self.seen_set.add(token)
            self._seen = None
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


def choose_tokens(
    texts: list[RowText], logits: torch.Tensor, configs: list[GenerationConfig]
) -> list[int | BaseException]:
    """The next token of each row: row ``i`` of ``logits`` ``[rows, vocab]`` (changed in
    place) for ``texts[i]`` under ``configs[i]``, exactly what :meth:`RowText.choose`
    gives each row alone.

    The decode loop serves many rows a step; one at a time, each costs a handful of small
    operations and, on a GPU, a wait for its result.  Greedy rows outside a UTF-8
    character are chosen together here: their guards and repetition penalties are
    written with one indexed operation each and their tokens read with one ``argmax``.
    Sampled rows, and rows completing a character, are chosen one by one.  A row whose
    choice fails gets its exception in its place; the others are unaffected."""
    chosen: list[int | BaseException] = [0] * len(texts)
    together: list[int] = []
    for i, (text, config) in enumerate(zip(texts, configs, strict=True)):
        if config.do_sample or text.pending:
            try:
                chosen[i] = text.choose(logits[i], config)
            except Exception as exc:
                chosen[i] = exc
        else:
            together.append(i)
    if not together:
        return chosen
    device = logits.device
    inf = -float("inf")
    # The guards, in RowText.choose's order: bytes that cannot start a character, then
    # repeated n-grams, then the repetition penalty (which leaves -inf as it is).
    guarded: dict[int, list[int]] = {}
    for i in together:
        text, config = texts[i], configs[i]
        table = byte_tokens(text.tokenizer) if config.byte_guard else None
        if table is not None and table.present:
            guarded.setdefault(id(table), []).append(i)
    for rows in guarded.values():
        table = byte_tokens(texts[rows[0]].tokenizer)
        index = torch.tensor(rows, device=device)
        logits[index[:, None], table.never_first_on(device)[None, :]] = inf
    banned_rows: list[int] = []
    banned_tokens: list[int] = []
    for i in together:
        n = configs[i].no_repeat_ngram
        if n:
            found = repeated_ngram_tokens(texts[i].prompt + texts[i].generated, n)
            banned_rows += [i] * len(found)
            banned_tokens += found
    if banned_rows:
        logits[
            torch.tensor(banned_rows, device=device), torch.tensor(banned_tokens, device=device)
        ] = inf
    by_penalty: dict[float, list[int]] = {}
    for i in together:
        if configs[i].repetition_penalty != 1.0 and texts[i].seen_set:
            by_penalty.setdefault(configs[i].repetition_penalty, []).append(i)
    for penalty, penalised in by_penalty.items():
        lists = [sorted(texts[i].seen_set) for i in penalised]
        width = max(len(found) for found in lists)
        # Rows padded with their own first token: a repeated index writes the same value.
        padded = [found + [found[0]] * (width - len(found)) for found in lists]
        seen = torch.tensor(padded, device=device)
        which = torch.tensor(penalised, device=device)[:, None]
        scores = logits[which, seen]  # the same arithmetic as one row's, scalar included
        logits[which, seen] = torch.where(scores > 0, scores / penalty, scores * penalty)
    picked = logits if len(together) == logits.shape[0] else logits[together]
    for i, token in zip(together, picked.argmax(dim=-1).tolist(), strict=True):
        chosen[i] = int(token)
    return chosen
