"""The decode loop every generation request joins (langneurons.engine): rows of different
prompts, lengths, interventions and settings served together give each row what it gets
alone; rows join and leave at step boundaries; one request's failure is its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from langneurons import hooks
from langneurons.engine import Cancelled, RowSpec, engine_for
from langneurons.generation import (
    GenerationConfig,
    generate,
    stream,
    stream_side_by_side,
    stream_traced,
)
from langneurons.interventions import deactivate, prepare, scale, steer
from langneurons.trace import TraceSpec

from .conftest import FAMILY_TYPES

PROMPTS = ["The weather today is", "Hi", "Every child has the right to learn and to play"]


def _spec(lm, seed: int = 1) -> TraceSpec:
    g = torch.Generator().manual_seed(seed)
    masks = [
        [torch.randperm(lm.num_neurons, generator=g)[:10].sort().values for _ in range(2)]
        for _ in range(3)
    ]
    return TraceSpec.from_masks(masks, ["en", "fr", "de"])


@contextmanager
def held(engine) -> Iterator[None]:
    """Hold the loop at a step boundary: requests submitted meanwhile join together."""
    with engine.condition:
        yield


def _specs(lm, prompt: str, config, intervention=None, trace=None) -> list[RowSpec]:
    ids = tuple(lm.tokenizer(prompt)["input_ids"])
    ready = prepare(lm, intervention) if intervention is not None else None
    return [RowSpec(ids, config, ready, trace)]


def _final(request):
    *_, last = request.results()
    return last


def test_rows_of_every_kind_together_get_what_they_get_alone(tiny_model):
    lm = tiny_model
    spec = _spec(lm)
    neurons = {0: torch.arange(0, 20), 1: torch.arange(10, 40)}
    means = torch.rand(2, lm.num_neurons)
    jobs = [
        ("The weather today is", GenerationConfig(max_new_tokens=12), None),
        ("Hi", GenerationConfig(max_new_tokens=5), deactivate(neurons)),
        (PROMPTS[2], GenerationConfig(max_new_tokens=9, repetition_penalty=1.3), scale(neurons, 3)),
        (
            "Everyone has",
            GenerationConfig(max_new_tokens=10, do_sample=True, seed=3, temperature=1.4),
            steer(means, neurons, 2.0),
        ),
        ("Everyone has", GenerationConfig(max_new_tokens=7, no_repeat_ngram=2), None),
    ]
    alone = [_final(engine_for(lm).submit(_specs(lm, p, c, i, spec))) for p, c, i in jobs]
    engine = engine_for(lm)
    with held(engine):
        requests = [engine.submit(_specs(lm, p, c, i, spec)) for p, c, i in jobs]
    together = [list(r.results()) for r in requests]
    assert engine.widest >= len(jobs)  # they did share forward passes
    for solo, steps in zip(alone, together, strict=True):
        assert steps[-1].token_ids == solo.token_ids
        assert steps[-1].texts == solo.texts
    assert len(together[1][-1].token_ids[0]) <= 5 < len(together[0][-1].token_ids[0])
    assert hooks.active_hook_count(lm) == 0


def test_traces_together_equal_traces_alone_within_rounding(tiny_model):
    lm = tiny_model
    spec = _spec(lm)
    config = GenerationConfig(max_new_tokens=8)
    off = deactivate({0: spec.masks[1][0], 1: spec.masks[1][1]})
    alone = [
        list(stream_traced(lm, p, spec, config, i))[-1][1]
        for p, i in ((PROMPTS[0], None), (PROMPTS[1], off))
    ]
    results: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def run(k: int, prompt: str, intervention) -> None:
        barrier.wait()
        results[k] = list(stream_traced(lm, prompt, spec, config, intervention))[-1][1]

    threads = [
        threading.Thread(target=run, args=(0, PROMPTS[0], None)),
        threading.Thread(target=run, args=(1, PROMPTS[1], off)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, solo in enumerate(alone):
        got = results[k]
        assert got.tokens == solo.tokens  # type: ignore[attr-defined]
        assert np.allclose(got.fired, solo.fired, atol=1)  # type: ignore[attr-defined]
        assert np.allclose(got.fired_after, solo.fired_after, atol=1)  # type: ignore[attr-defined]


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_a_row_joins_mid_way_and_another_stops_early_in_every_family(make_tiny_model, family):
    lm = make_tiny_model(family)
    long = GenerationConfig(max_new_tokens=24, repetition_penalty=1.0)  # past gemma3's window
    short = GenerationConfig(max_new_tokens=3)
    alone = {
        "first": _final(engine_for(lm).submit(_specs(lm, PROMPTS[2], long))).token_ids,
        "late": _final(engine_for(lm).submit(_specs(lm, "Hi", long))).token_ids,
        "short": _final(engine_for(lm).submit(_specs(lm, PROMPTS[0], short))).token_ids,
    }
    engine = engine_for(lm)
    first = engine.submit(_specs(lm, PROMPTS[2], long))
    steps = first.results()
    for _ in range(6):  # the first row is well under way
        next(steps)
    with held(engine):
        late = engine.submit(_specs(lm, "Hi", long))
        stopper = engine.submit(_specs(lm, PROMPTS[0], short))
    rest = list(steps)
    assert rest[-1].token_ids == alone["first"]
    assert _final(late).token_ids == alone["late"]
    assert _final(stopper).token_ids == alone["short"]
    assert engine.widest >= 3


def test_a_failing_or_cancelled_request_ends_alone(tiny_model):
    lm = tiny_model
    config = GenerationConfig(max_new_tokens=12)
    expected = generate(lm, PROMPTS[0], config)
    engine = engine_for(lm)

    def broken(values: torch.Tensor) -> None:
        raise RuntimeError("this session's handler broke")

    failures: list[BaseException] = []
    outputs: dict[str, str] = {}
    ready = threading.Barrier(3)

    def failing() -> None:
        ready.wait()
        with hooks.bound(lm, {1: broken}, hooks.EDIT):
            try:
                generate(lm, "Hi", config)
            except RuntimeError as exc:
                failures.append(exc)

    def leaving() -> None:
        ready.wait()
        pieces = stream(lm, PROMPTS[2], config)
        next(pieces)
        pieces.close()  # the tab was closed: its rows leave

    def staying() -> None:
        ready.wait()
        outputs["kept"] = generate(lm, PROMPTS[0], config)

    threads = [threading.Thread(target=f) for f in (failing, leaving, staying)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [str(e) for e in failures] == ["this session's handler broke"]
    assert outputs["kept"] == expected
    with held(engine):
        request = engine.submit(_specs(lm, "Hi", config))
        request.cancel()
    with pytest.raises(Cancelled):
        list(request.results())
    assert engine.active_rows == 0 and hooks.active_hook_count(lm) == 0


def test_what_a_caller_bound_acts_on_its_rows_only(tiny_model):
    lm = tiny_model
    config = GenerationConfig(max_new_tokens=10)
    off = deactivate({0: torch.arange(48), 1: torch.arange(48)})
    plain, modified = generate(lm, PROMPTS[0], config), generate(lm, PROMPTS[0], config, off)
    assert plain != modified
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def inside() -> None:
        from langneurons.interventions import apply

        with apply(lm, off):
            barrier.wait()
            results["inside"] = generate(lm, PROMPTS[0], config)

    def outside() -> None:
        barrier.wait()
        results["outside"] = generate(lm, PROMPTS[0], config)

    threads = [threading.Thread(target=inside), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"inside": modified, "outside": plain}


def test_sixteen_side_by_side_pairs_in_threads_equal_their_solo_runs(make_tiny_model):
    lm = make_tiny_model("gemma3_text", seed=2)
    spec = _spec(lm)
    config = GenerationConfig(max_new_tokens=10)
    interventions = [
        deactivate({layer: spec.masks[k % 3][layer] for layer in range(2)}, str(k))
        for k in range(16)
    ]

    def pair(k: int):
        *_, last = stream_side_by_side(lm, PROMPTS[k % 3], interventions[k], config, trace=spec)
        return last

    solo = [pair(k) for k in range(16)]
    engine = engine_for(lm)
    engine.widest = 0
    results: dict[int, object] = {}
    barrier = threading.Barrier(16)

    def worker(k: int) -> None:
        barrier.wait()
        results[k] = pair(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.widest > 2  # pairs were served together, not one after another
    for k in range(16):
        got = results[k]
        assert (got.baseline, got.modified) == (solo[k].baseline, solo[k].modified)  # type: ignore[attr-defined]
        assert got.modified_trace.tokens == solo[k].modified_trace.tokens  # type: ignore[attr-defined]


def test_a_prompt_beyond_the_context_is_refused_with_the_limit(make_tiny_model):
    from langneurons.errors import LangNeuronsError
    from langneurons.generation import context_length, generate_batch

    lm = make_tiny_model("gpt2")  # 512 positions
    assert context_length(lm) == 512
    long = "All human beings are born free " * 120
    for call in (
        lambda: generate(lm, long, GenerationConfig(max_new_tokens=5)),
        lambda: next(stream_side_by_side(lm, long, None)),
        lambda: generate_batch(lm, ["Hi", long]),
        lambda: generate(lm, "Hi", GenerationConfig(max_new_tokens=600)),
    ):
        with pytest.raises(LangNeuronsError, match=r"context of 512 tokens"):
            call()
    assert engine_for(lm).steps == 0  # refused before anything was computed


def test_a_prompt_longer_than_generation_reads_is_refused_at_once(make_tiny_model, monkeypatch):
    from langneurons import generation
    from langneurons.errors import LangNeuronsError

    lm = make_tiny_model("llama")  # a long context: the generation limit comes first
    monkeypatch.setattr(generation, "MAX_PROMPT_TOKENS", 50)
    long = "All human beings are born free " * 40
    with pytest.raises(LangNeuronsError, match=r"generation reads at most 50"):
        generate(lm, long, GenerationConfig(max_new_tokens=5))
    assert engine_for(lm).steps == 0


def test_a_prompt_that_breaks_the_model_fails_its_own_request_only(make_tiny_model):
    lm = make_tiny_model("gpt2")
    config = GenerationConfig(max_new_tokens=6)
    expected = _final(engine_for(lm).submit(_specs(lm, PROMPTS[0], config))).token_ids
    engine = engine_for(lm)
    too_long = RowSpec(tuple(5 + i % 300 for i in range(600)), config)  # past 512 positions
    with held(engine):
        good = engine.submit(_specs(lm, PROMPTS[0], config))
        bad = engine.submit([too_long])
    with pytest.raises(Exception):  # noqa: B017 - whatever the model raises
        list(bad.results())
    assert _final(good).token_ids == expected


def test_identical_unmodified_rows_share_one_batch_row_and_keep_their_own_traces(tiny_model):
    lm = tiny_model
    spec = _spec(lm)
    config = GenerationConfig(max_new_tokens=8)
    off = deactivate({0: spec.masks[1][0], 1: spec.masks[1][1]})

    def fired(steps) -> np.ndarray:
        return np.concatenate([s.columns[0].fired for s in steps if s.columns[0] is not None])

    alone_steps = list(engine_for(lm).submit(_specs(lm, PROMPTS[0], config, None, spec)).results())
    off_steps = list(engine_for(lm).submit(_specs(lm, PROMPTS[0], config, off, spec)).results())
    alone, alone_off = alone_steps[-1], off_steps[-1]
    engine = engine_for(lm)
    engine.widest = 0
    with held(engine):
        plain = [engine.submit(_specs(lm, PROMPTS[0], config, None, spec)) for _ in range(4)]
        modified = [engine.submit(_specs(lm, PROMPTS[0], config, off, spec)) for _ in range(2)]
        leaver = engine.submit(_specs(lm, PROMPTS[0], config, None, spec))
    first = leaver.results()
    next(first)
    leaver.cancel()  # one reader of the shared row leaves; the row goes on for the others
    assert engine.widest == 3  # four unmodified requests (and the leaver) read one row
    pairs = [(r, alone_steps) for r in plain] + [(r, off_steps) for r in modified]
    for request, expected in pairs:
        steps = list(request.results())
        assert steps[-1].token_ids == expected[-1].token_ids
        assert np.allclose(fired(steps), fired(expected), atol=1)  # each its own whole trace
    with pytest.raises(Cancelled):
        list(first)

    # Rows whose caller bound an edit get a row of their own.
    from langneurons.interventions import apply

    engine.widest = 0
    results: dict[str, str] = {}
    with held(engine):
        with apply(lm, off):
            inside = engine.submit(_specs(lm, PROMPTS[0], config))
        outside = engine.submit(_specs(lm, PROMPTS[0], config))
    results["inside"] = _final(inside).texts[0]
    results["outside"] = _final(outside).texts[0]
    assert engine.widest == 2
    assert results == {"inside": alone_off.texts[0], "outside": alone.texts[0]}


def _plain_greedy(lm, prompt: str, steps: int, intervention=None) -> tuple[int, ...]:
    """Greedy tokens from whole forward passes, the intervention written by its own
    handlers (:func:`~langneurons.interventions.apply`): what the loop must reproduce."""
    from langneurons.interventions import apply

    ids = list(lm.tokenizer(prompt)["input_ids"])
    start = len(ids)
    with apply(lm, intervention), torch.inference_mode():
        for _ in range(steps):
            hidden = lm.body(input_ids=torch.tensor([ids])).last_hidden_state[:, -1]
            token = int(lm.logits(hidden)[0].argmax())
            if token == lm.tokenizer.eos_token_id:
                break
            ids.append(token)
    return tuple(ids[start:])


def test_interventions_written_for_the_whole_batch_equal_their_own_handlers(tiny_model):
    """The loop writes fusable interventions (no neuron edited twice in a layer) for all
    rows at once; each mode, each row's own neurons and an unfusable intervention (taking
    the per-row path) give the tokens of a plain loop with the intervention's handlers."""
    from langneurons.engine_rows import fusable

    lm = tiny_model
    config = GenerationConfig(max_new_tokens=10, repetition_penalty=1.0, byte_guard=False)
    g = torch.Generator().manual_seed(4)
    some = {layer: torch.randperm(lm.num_neurons, generator=g)[:30] for layer in (0, 1)}
    others = {1: torch.randperm(lm.num_neurons, generator=g)[:30]}
    means = torch.rand(2, lm.num_neurons, generator=g) * 20
    overlapping = (
        scale({0: some[0][:10]}, 50.0)
        + deactivate({1: some[1]})
        + steer(means, {0: some[0][5:20]}, 3.0, mode="add")
    )
    jobs = [
        (PROMPTS[0], deactivate(some)),
        (PROMPTS[0], scale(others, -30.0)),
        (PROMPTS[2], steer(means, some, 2.0)),
        (PROMPTS[2], steer(means, others, 5.0, mode="add")),
        (PROMPTS[1], overlapping),
        (PROMPTS[1], None),
    ]
    assert not fusable(prepare(lm, overlapping)) and fusable(prepare(lm, deactivate(some)))
    expected = [_plain_greedy(lm, p, 10, i) for p, i in jobs]
    plain = {p: _plain_greedy(lm, p, 10) for p, _ in jobs}
    changed = [e != plain[p] for e, (p, _) in zip(expected, jobs, strict=True)]
    assert sum(changed) >= 4 and not changed[-1], changed  # the edits matter here
    engine = engine_for(lm)
    with held(engine):
        requests = [engine.submit(_specs(lm, p, config, i)) for p, i in jobs]
    got = [_final(r).token_ids[0] for r in requests]
    assert engine.widest >= len(jobs)
    assert got == expected


def test_a_rows_intervention_acts_after_what_its_caller_bound(tiny_model):
    """Solo, ``with apply(lm, A): generate(..., intervention=B)`` writes A, then B; the
    loop's batch-wide writing of B keeps that order."""
    from langneurons.interventions import Intervention, NeuronEdit, apply

    lm = tiny_model
    config = GenerationConfig(max_new_tokens=10, repetition_penalty=1.0, byte_guard=False)
    neurons = torch.arange(lm.num_neurons)
    values = torch.full((lm.num_neurons,), 4.0)
    five = Intervention(tuple(NeuronEdit(layer, neurons, "set", values) for layer in (0, 1)))
    zero = deactivate({0: neurons, 1: neurons})  # fused: written for the batch
    then_zero = Intervention(five.edits + zero.edits)
    assert _plain_greedy(lm, PROMPTS[0], 10, five) != _plain_greedy(lm, PROMPTS[0], 10, zero)
    with apply(lm, five):
        got = generate(lm, PROMPTS[0], config, zero)
    assert got == generate(lm, PROMPTS[0], config, then_zero)
    assert got == generate(lm, PROMPTS[0], config, zero)
