"""The language trace: what it counts, that generation carries the same trace as one
forward pass over the final text, and that threads keep their traces apart."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.generation import (
    GenerationConfig,
    generate,
    stream_side_by_side,
    stream_traced,
)
from langneurons.interventions import deactivate
from langneurons.trace import TraceSpec, trace_ids, trace_text


def _spec(lm, seed: int = 0) -> TraceSpec:
    """Three 'languages' of random neurons; the last has none in layer 1."""
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for k in range(3):
        per_layer = []
        for layer in range(lm.num_layers):
            if k == 2 and layer == 1:
                per_layer.append(torch.tensor([], dtype=torch.int64))
            else:
                per_layer.append(
                    torch.sort(torch.randperm(lm.num_neurons, generator=gen)[:6]).values
                )
        masks.append(per_layer)
    return TraceSpec.from_masks(masks, ["en", "fr", "ja"])


def _capture(lm, ids):
    values = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, i=i: values.__setitem__(i, out[0].clone()))
        for i, m in enumerate(lm.modules)
    ]
    try:
        with torch.inference_mode():
            lm.body(input_ids=torch.tensor([ids]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return values


def test_activity_is_the_share_of_a_languages_neurons_that_fire(tiny_model):
    spec = _spec(tiny_model)
    bos = tiny_model.tokenizer.bos_token_id
    ids = tiny_model.tokenizer("All human beings are born free", add_special_tokens=False)[
        "input_ids"
    ]
    trace = trace_ids(tiny_model, spec, [bos, *ids])
    values = _capture(tiny_model, [bos, *ids])
    assert len(trace.tokens) == len(ids) and trace.token_ids == ids
    activity = trace.activity()
    for layer in range(tiny_model.num_layers):
        for k in range(3):
            neurons = spec.masks[k][layer]
            if len(neurons) == 0:
                assert np.isnan(activity[:, layer, k]).all()
                continue
            expected = (values[layer][1:, neurons] > 0).float().mean(-1).numpy()
            assert np.allclose(activity[:, layer, k], expected)
    pooled = trace.overall()
    assert pooled.shape == (len(ids), 3) and np.all((pooled >= 0) & (pooled <= 1))
    assert set(trace.dominant()) <= {"en", "fr", "ja"}
    assert all(0 <= c <= 1 for c in trace.confidence())


def test_json_layout_and_text_rendering(tiny_model):
    trace = trace_text(tiny_model, _spec(tiny_model), "Everyone has the right")
    document = json.loads(json.dumps(trace.to_json()))
    assert set(document) == {"tokens", "languages", "layers", "activity", "dominant", "confidence"}
    assert document["layers"] == tiny_model.num_layers
    assert len(document["activity"]) == len(document["tokens"]) == len(document["dominant"])
    assert len(document["activity"][0]) == tiny_model.num_layers
    assert document["activity"][0][1][2] is None  # 'ja' has no neuron in layer 1
    assert trace.render().count("[") == len(trace.tokens)
    assert len(trace.sparkline(0, 0)) == tiny_model.num_layers
    with pytest.raises(LangNeuronsError, match="Nothing to trace"):
        trace_text(tiny_model, _spec(tiny_model), "")


@pytest.mark.parametrize("intervene", [False, True])
def test_generation_carries_the_trace_of_one_pass_over_the_final_text(tiny_model, intervene):
    spec = _spec(tiny_model)
    off = deactivate({0: spec.masks[1][0], 1: spec.masks[1][1]}, "fr") if intervene else None
    config = GenerationConfig(max_new_tokens=10, repetition_penalty=1.0)
    steps = list(stream_traced(tiny_model, "All human beings", spec, config, off))
    text, trace = "".join(d for d, _ in steps), steps[-1][1]
    assert text == generate(tiny_model, "All human beings", config, off)
    fed = tiny_model.tokenizer("All human beings")["input_ids"]  # as generation reads it
    skip = int(fed[0] == tiny_model.tokenizer.bos_token_id)
    assert trace.token_ids[: len(fed) - skip] == fed[skip:]
    whole = trace_ids(tiny_model, spec, fed[:skip] + trace.token_ids, off)
    assert whole.tokens == trace.tokens
    # Incremental (KV cache) and whole-sequence passes round differently: a value within
    # rounding of zero may land on the other side, a handful of counts at most.
    assert np.abs(whole.fired - trace.fired).sum() <= 3
    assert np.abs(whole.fired_after - trace.fired_after).sum() <= 3
    if intervene:  # the deactivated set reads zero after the write, by construction
        assert trace.fired_after[:, 0, 1].sum() == 0 and trace.fired[:, 0, 1].sum() > 0
        assert trace.changed_by_intervention() and "activity_after" in trace.to_json()
    else:
        assert np.array_equal(trace.fired, trace.fired_after)


def test_the_trace_grows_while_tokens_stream(tiny_model):
    spec = _spec(tiny_model)
    config = GenerationConfig(max_new_tokens=8, repetition_penalty=1.0)
    sizes = [len(trace.tokens) for _, trace in stream_traced(tiny_model, "All", spec, config)]
    assert sizes[0] >= 1  # the prompt first
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


def test_side_by_side_traces_are_each_rows_own(tiny_model):
    spec = _spec(tiny_model)
    off = deactivate({layer: spec.masks[0][layer] for layer in range(2)}, "en")
    config = GenerationConfig(max_new_tokens=10, repetition_penalty=1.0)
    final = list(stream_side_by_side(tiny_model, "All human beings", off, config, trace=spec))[-1]
    alone = list(stream_traced(tiny_model, "All human beings", spec, config))[-1][1]
    base, modified = final.baseline_trace, final.modified_trace
    assert base is not None and modified is not None
    assert base.tokens == alone.tokens
    assert np.abs(base.fired - alone.fired).sum() <= 3
    assert not base.changed_by_intervention()
    assert modified.fired_after[:, :, 0].sum() == 0  # English switched off, in its row only
    assert base.fired_after[:, :, 0].sum() > 0


def test_traced_generations_in_threads_equal_sequential_ones(make_tiny_model):
    lm = make_tiny_model("gemma3_text", seed=5)
    spec = _spec(lm, seed=1)
    config = GenerationConfig(max_new_tokens=8, repetition_penalty=1.0)
    jobs = {
        "plain": None,
        "en-off": deactivate({layer: spec.masks[0][layer] for layer in range(2)}),
        "fr-off": deactivate({layer: spec.masks[1][layer] for layer in range(2)}),
    }

    def run(job):
        return list(stream_traced(lm, "Everyone has", spec, config, job))[-1][1]

    sequential = {name: run(job) for name, job in jobs.items()}
    results, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def worker(name):
        try:
            barrier.wait()
            results[name] = run(jobs[name])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in jobs:
        assert results[name].tokens == sequential[name].tokens
        assert np.array_equal(results[name].fired, sequential[name].fired)
        assert np.array_equal(results[name].fired_after, sequential[name].fired_after)
    assert all(not m._forward_hooks for m in lm.modules)
