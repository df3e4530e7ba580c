"""Decoding guards: repeated n-grams and broken UTF-8 from byte tokens."""

from __future__ import annotations

import torch

from langneurons.decoding import byte_tokens, guard, repeated_ngram_tokens
from langneurons.generation import GenerationConfig, generate, generate_batch


def test_repeated_ngram_tokens_are_those_that_would_repeat_an_ngram():
    history = [1, 2, 3, 1, 2]
    assert repeated_ngram_tokens(history, 3) == [3]  # "1 2" was followed by 3
    assert repeated_ngram_tokens(history, 2) == [3]  # "2" was followed by 3
    assert repeated_ngram_tokens([5, 5, 5], 2) == [5, 5]
    assert repeated_ngram_tokens(history, 0) == []
    assert sorted(set(repeated_ngram_tokens(history, 1))) == [1, 2, 3]


class _ByteVocab:
    """A vocabulary with SentencePiece-style byte tokens: ids 0-2 words, then <0xNN>."""

    def __init__(self) -> None:
        self.vocab = {"a": 0, "b": 1, "c": 2}
        for value in range(256):
            self.vocab[f"<0x{value:02X}>"] = 3 + value

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)


def test_the_byte_guard_lets_only_continuations_follow_a_started_character():
    vocab = _ByteVocab()
    table = byte_tokens(vocab)
    assert byte_tokens(vocab) is table  # read once per tokenizer
    e3, x81, x41 = 3 + 0xE3, 3 + 0x81, 3 + 0x41
    assert table.expected_after(e3, 0) == 2  # a three-byte character starts
    assert table.expected_after(x81, 2) == 1
    assert table.expected_after(x81, 1) == 0
    assert table.expected_after(0, 1) == 0  # a word token ends any partial character
    logits = torch.zeros(len(vocab))
    after_lead = guard(logits, [], 0, table, pending=2)
    allowed = torch.isfinite(after_lead).nonzero().flatten().tolist()
    assert allowed == [3 + v for v in range(0x80, 0xC0)]
    fresh = guard(logits, [], 0, table, pending=0)
    assert torch.isfinite(fresh[[0, 1, 2, e3, x41]]).all()  # words, lead and ASCII bytes
    assert not torch.isfinite(fresh[[x81, 3 + 0xC0, 3 + 0xFF]]).any()
    # With n-grams: "a b" was followed by "c", so "c" is banned after "a b" again.
    both = guard(logits, [0, 1, 2, 0, 1], 3, table, pending=0)
    assert not torch.isfinite(both[2]) and torch.isfinite(both[0])


def test_a_tokenizer_without_byte_tokens_is_left_alone(tiny_tokenizer):
    assert not byte_tokens(tiny_tokenizer).present
    logits = torch.randn(len(tiny_tokenizer))
    assert guard(logits, [], 0, byte_tokens(tiny_tokenizer), 0) is logits


def _ngrams(ids, n):
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


def test_generation_with_the_ngram_guard_repeats_no_trigram(tiny_model):
    prompt = "All human beings are born free"
    prompt_ids = tiny_model.tokenizer(prompt)["input_ids"]
    free = GenerationConfig(max_new_tokens=40, repetition_penalty=1.0)
    guarded = GenerationConfig(max_new_tokens=40, repetition_penalty=1.0, no_repeat_ngram=3)
    unguarded = generate_batch(tiny_model, [prompt], free)[0]
    # A random tiny model loops at once: the guard has something to prevent.
    assert len(set(_ngrams(list(unguarded.token_ids), 3))) < len(unguarded.token_ids) - 2
    out = generate_batch(tiny_model, [prompt], guarded)[0]
    grams = _ngrams(prompt_ids + list(out.token_ids), 3)
    assert len(grams) == len(set(grams))
    # The streaming path applies the same guard.
    assert generate(tiny_model, prompt, guarded) == out.text


class _ByteTokenizer(_ByteVocab):
    """Decodes like a byte-fallback tokenizer: byte tokens joined, invalid runs replaced."""

    def decode(self, ids, skip_special_tokens=True):
        names = {index: token for token, index in self.vocab.items()}
        out, run = [], bytearray()
        for token in ids:
            name = names[token]
            if name.startswith("<0x"):
                run.append(int(name[3:5], 16))
                continue
            out.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            out.append(name)
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)


def test_a_character_cut_by_the_token_limit_is_left_out_of_the_text():
    from langneurons.decoding import RowText

    tokenizer = _ByteTokenizer()
    row = RowText(tokenizer, [0], 0)
    space = [3 + 0xE3, 3 + 0x80, 3 + 0x80]  # U+3000 as three byte tokens
    for token in [1, *space, 3 + 0xE3, 3 + 0x80]:  # "b", U+3000, then two of three bytes
        row.add(token)
    assert row.pending == 1 and row.partial == 2
    assert row.text() == "b\u3000"  # not "b" followed by five U+FFFD
    assert row.flush() == ""  # everything complete was already streamed
    row.add(3 + 0x81)
    assert row.pending == 0 and row.text() == "b\u3000\u3001"


def test_choosing_many_rows_together_equals_choosing_each_alone():
    """The decode loop chooses a step's tokens for all its rows at once; every guard and
    penalty must act as on each row alone: greedy and sampled rows, byte guard on and
    off, repeated n-grams, several penalties, a row inside a UTF-8 character."""
    from langneurons.decoding import RowText, choose_tokens

    tokenizer = _ByteTokenizer()
    vocab = len(tokenizer)
    configs = [
        GenerationConfig(),
        GenerationConfig(repetition_penalty=1.0),
        GenerationConfig(repetition_penalty=1.7, byte_guard=False),
        GenerationConfig(no_repeat_ngram=2),
        GenerationConfig(do_sample=True, seed=5, temperature=0.7),
        GenerationConfig(),  # will be inside a character
        GenerationConfig(repetition_penalty=1.3, no_repeat_ngram=1),
    ]
    histories = [[0, 1], [2], [0, 0, 1], [0, 1, 2, 0, 1], [1], [0, 3 + 0xE3], [2, 1, 0]]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        logits = torch.randn(len(configs), vocab, generator=generator) * 3
        # Make the guarded tokens the likeliest, so that a guard not applied shows.
        logits[:, 3 + 0x80 : 3 + 0xC0] += 4
        logits[:, :3] += 2

        def rows(seed_offset: int) -> list[RowText]:
            found = []
            for k, history in enumerate(histories):
                row = RowText(tokenizer, history[:1], configs[k].seed + seed_offset)
                for token in history[1:]:
                    row.add(token)
                found.append(row)
            return found

        each = logits.clone()
        alone = [r.choose(each[k], configs[k]) for k, r in enumerate(rows(0))]
        batch = logits.clone()
        together = choose_tokens(rows(0), batch, configs)
        assert together == alone
        # The scores themselves, not only the winners: guards and penalties wrote the
        # same values (the row inside a character is guarded on a copy in both).
        assert torch.equal(batch[:5], each[:5]) and torch.equal(batch[6:], each[6:])
    assert rows(0)[5].pending == 2  # the row inside a character was one


def test_a_row_whose_choice_fails_gets_its_own_error():
    from langneurons.decoding import RowText, choose_tokens

    tokenizer = _ByteTokenizer()
    bad = GenerationConfig(do_sample=True)
    logits = torch.zeros(2, len(tokenizer))
    logits[1, 0] = float("nan")  # sampling from NaN probabilities fails
    chosen = choose_tokens(
        [RowText(tokenizer, [0], 0), RowText(tokenizer, [0], 0)], logits, [GenerationConfig(), bad]
    )
    assert chosen[0] == 0 and isinstance(chosen[1], RuntimeError)
