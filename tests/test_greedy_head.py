"""The two-pass vocabulary head: its bounds hold, every token that can win is computed
exactly, a choice the bounds cannot vouch for is made again, and the decode loop's
tokens are those of the float32 head."""

from __future__ import annotations

import pytest
import torch

from langneurons import greedy_head
from langneurons.config import GenerationConfig
from langneurons.decoding import RowText, choose_tokens
from langneurons.engine import engine_for
from langneurons.greedy_head import bounded_scores, unproven

from .test_engine import PROMPTS, _final, _specs, held


def _head(vocab: int = 6000, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A head whose rows have nearly equal norms (as trained heads do), with near ties:
    token 1 is token 0 nudged, token 3 is token 2 nudged."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, width, generator=g)
    weight = (
        weight / weight.norm(dim=1, keepdim=True) * (1 + 0.01 * torch.rand(vocab, 1, generator=g))
    )
    weight[1] = weight[0] + 1e-5 * torch.randn(width, generator=g)
    weight[3] = weight[2] - 1e-5 * torch.randn(width, generator=g)
    return weight


def _scores(weight: torch.Tensor, hidden: torch.Tensor, keep):
    norm = float(weight.norm(dim=1).max()) * 1.001
    found = bounded_scores(weight, weight.to(torch.bfloat16), norm, hidden, keep)
    assert found is not None
    return found


def test_bounds_hold_and_every_token_that_can_win_is_exact():
    weight = _head()
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(12, weight.shape[1], generator=g) * torch.logspace(0, 2.5, 12)[:, None]
    hidden[0] = weight[0] * 80  # tokens 0 and 1 nearly tie at the top
    hidden[1] = weight[2] * 300  # tokens 2 and 3, at a large scale
    keep = [set(torch.randint(0, 6000, (20,), generator=g).tolist()) for _ in range(12)]
    keep[1] |= {2}  # the favourite is a token already read (so the penalty may lower it)
    scores = _scores(weight, hidden, keep)
    exact = hidden @ weight.T
    assert scores.floor is not None
    for row in range(12):
        kept = sorted(keep[row])
        assert torch.allclose(scores.matrix[row, kept], exact[row, kept], rtol=1e-5, atol=1e-4)
        unkept = torch.ones(6000, dtype=torch.bool)
        unkept[kept] = False
        best = exact[row][unkept].max()
        assert scores.floor[row] <= best + 1e-4  # some unread token reaches the floor
        contenders = unkept & (exact[row] >= scores.floor[row] - 1e-4)
        assert torch.allclose(scores.matrix[row, contenders], exact[row, contenders], atol=1e-4)
        # what is left approximate is never above the floor: it cannot win a proven choice
        approximate = ~torch.isclose(scores.matrix[row], exact[row], atol=1e-4)
        assert bool((scores.matrix[row, approximate] < scores.floor[row]).all())
    assert int(scores.matrix[0].argmax()) == int(exact[0].argmax())
    assert int(scores.matrix[1].argmax()) == int(exact[1].argmax())


def test_guarded_and_penalised_choices_equal_the_float32_heads(tiny_tokenizer):
    weight = _head(vocab=len(tiny_tokenizer))
    g = torch.Generator().manual_seed(2)
    rows = 10
    hidden = torch.randn(rows, weight.shape[1], generator=g) * 30
    prompts = [
        torch.randint(0, len(tiny_tokenizer), (8,), generator=g).tolist() for _ in range(rows)
    ]
    for k in range(0, rows, 2):  # half the rows have read their favourite token
        prompts[k][0] = int((hidden[k] @ weight.T).argmax())
    texts = [RowText(tiny_tokenizer, p, 0) for p in prompts]
    configs = [
        GenerationConfig(
            repetition_penalty=(1.0, 1.3, 3.0)[k % 3], no_repeat_ngram=k % 2, byte_guard=False
        )
        for k in range(rows)
    ]
    scores = _scores(weight, hidden, [t.seen_set for t in texts])
    tokens = choose_tokens(texts, scores.matrix, configs)
    assert unproven(scores.matrix, scores.floor, tokens) == []
    assert tokens == choose_tokens(texts, hidden @ weight.T, configs)


def test_a_choice_the_bounds_cannot_vouch_for_is_flagged():
    weight = _head()
    hidden = torch.stack([weight[7] * 60, weight[9] * 60])
    scores = _scores(weight, hidden, [{100}, {100}])
    assert scores.floor is not None
    scores.matrix[0, 7] = -float("inf")  # a guard bans row 0's clear favourite
    tokens = scores.matrix.argmax(dim=1).tolist()
    assert tokens[1] == 9
    assert unproven(scores.matrix, scores.floor, tokens) == [0]
    assert unproven(scores.matrix, scores.floor, [ValueError("failed"), 9]) == []


def _force_bounded(lm, monkeypatch) -> list[int]:
    """Every pass of two rows or more takes the two-pass head, whatever this machine's
    timing would say; the list counts the passes that did."""
    monkeypatch.setattr(greedy_head, "FAST_ROWS", 2)
    weight = greedy_head._head_weight(lm)
    assert weight is not None
    greedy_head._copy(lm, weight).fast = True
    calls: list[int] = []
    original = greedy_head.bounded_scores

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(greedy_head, "bounded_scores", counted)
    return calls


JOBS = [
    (PROMPTS[0], GenerationConfig(max_new_tokens=10)),
    (PROMPTS[1], GenerationConfig(max_new_tokens=8, repetition_penalty=1.0)),
    (PROMPTS[2], GenerationConfig(max_new_tokens=9, repetition_penalty=2.5)),
    ("Everyone has", GenerationConfig(max_new_tokens=10, no_repeat_ngram=1)),
    ("Everyone has", GenerationConfig(max_new_tokens=6, no_repeat_ngram=2, repetition_penalty=1.0)),
]


def _together(lm) -> list[tuple[int, ...]]:
    engine = engine_for(lm)
    with held(engine):
        requests = [engine.submit(_specs(lm, p, c)) for p, c in JOBS]
    return [_final(r).token_ids[0] for r in requests]


def test_the_loop_with_the_two_pass_head_gives_the_float32_heads_tokens(tiny_model, monkeypatch):
    lm = tiny_model
    expected = _together(lm)  # five rows: fewer than FAST_ROWS, every score
    assert len(expected) < greedy_head.FAST_ROWS
    calls = _force_bounded(lm, monkeypatch)
    assert _together(lm) == expected
    assert calls  # the two-pass head was used
    assert engine_for(lm).rechosen == 0


def test_rows_the_bounds_cannot_vouch_for_are_chosen_from_every_score(tiny_model, monkeypatch):
    lm = tiny_model
    expected = _together(lm)
    _force_bounded(lm, monkeypatch)
    original = greedy_head.bounded_scores

    def unprovable(*args, **kwargs):
        found = original(*args, **kwargs)
        found.floor = torch.full_like(found.floor, float("inf"))  # no choice is proven
        return found

    monkeypatch.setattr(greedy_head, "bounded_scores", unprovable)
    assert _together(lm) == expected
    assert engine_for(lm).rechosen > 0


@pytest.mark.parametrize("sampled", [True, False])
def test_only_a_pass_of_greedy_rows_is_bounded(tiny_model, monkeypatch, sampled):
    lm = tiny_model
    calls = _force_bounded(lm, monkeypatch)
    config = GenerationConfig(max_new_tokens=4, do_sample=sampled, seed=5)
    engine = engine_for(lm)
    with held(engine):
        requests = [engine.submit(_specs(lm, p, config)) for p in PROMPTS]
    for request in requests:
        _final(request)
    assert bool(calls) is not sampled
