"""Interventions: exact effects, restoration, validation, and thread safety."""

from __future__ import annotations

import threading

import pytest
import torch

from langneurons.errors import UnsupportedModelError
from langneurons.generation import GenerationConfig, generate
from langneurons.interventions import (
    Intervention,
    InterventionError,
    active_hook_count,
    apply,
    deactivate,
    language_neurons,
    parse_layers,
    parse_pairs,
    scale,
    steer,
    union,
)


def _capture(lm, input_ids):
    """Activation values per layer as the rest of the model sees them."""
    seen = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out.clone()))
        for i, m in enumerate(lm.modules)
    ]
    try:
        with torch.inference_mode():
            lm.model(input_ids=input_ids)
    finally:
        for h in handles:
            h.remove()
    return seen


IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])


def test_deactivate_sets_exactly_the_chosen_neurons_to_zero(tiny_model):
    base = _capture(tiny_model, IDS)
    neurons = {0: torch.tensor([1, 5]), 1: torch.tensor([7])}
    with apply(tiny_model, deactivate(neurons)):
        changed = _capture(tiny_model, IDS)
    assert torch.all(changed[0][..., [1, 5]] == 0) and torch.all(changed[1][..., 7] == 0)
    keep0 = [i for i in range(tiny_model.num_neurons) if i not in (1, 5)]
    assert torch.equal(changed[0][..., keep0], base[0][..., keep0])


def test_steer_set_add_and_scale(tiny_model):
    base = _capture(tiny_model, IDS)
    mean = torch.arange(2 * tiny_model.num_neurons, dtype=torch.float32).reshape(2, -1) / 100
    neurons = {0: torch.tensor([3, 4])}
    with apply(tiny_model, steer(mean, neurons, strength=2.0)):
        got = _capture(tiny_model, IDS)[0][..., [3, 4]]
    assert torch.allclose(got, (2.0 * mean[0, [3, 4]]).expand_as(got))
    with apply(tiny_model, steer(mean, neurons, strength=1.0, mode="add")):
        got = _capture(tiny_model, IDS)[0][..., [3, 4]]
    assert torch.allclose(got, base[0][..., [3, 4]] + mean[0, [3, 4]])
    with apply(tiny_model, scale(neurons, 3.0)):
        got = _capture(tiny_model, IDS)[0][..., [3, 4]]
    assert torch.allclose(got, base[0][..., [3, 4]] * 3.0)


def test_nested_interventions_compose_and_unwind(tiny_model):
    outer = deactivate({0: torch.tensor([2])})
    inner = deactivate({0: torch.tensor([9])})
    with apply(tiny_model, outer):
        with apply(tiny_model, inner):
            both = _capture(tiny_model, IDS)[0]
            assert active_hook_count(tiny_model) == tiny_model.num_layers
        only_outer = _capture(tiny_model, IDS)[0]
    assert torch.all(both[..., [2, 9]] == 0)
    assert torch.all(only_outer[..., 2] == 0) and not torch.all(only_outer[..., 9] == 0)
    assert active_hook_count(tiny_model) == 0


def test_model_is_restored_after_an_exception(tiny_model):
    base = _capture(tiny_model, IDS)
    with (
        pytest.raises(ValueError, match="inside"),
        apply(tiny_model, deactivate({0: torch.arange(10)})),
    ):
        raise ValueError("inside")
    assert active_hook_count(tiny_model) == 0
    assert all(not m._forward_hooks for m in tiny_model.modules)
    after = _capture(tiny_model, IDS)
    assert all(torch.equal(base[i], after[i]) for i in base)


def test_unresolvable_hook_point_raises_and_leaves_no_hook(make_tiny_model):
    lm = make_tiny_model("llama")
    lm.model.model.layers[1].mlp.act_fn = None
    with (
        pytest.raises(UnsupportedModelError, match="no activation module"),
        apply(lm, deactivate({0: torch.tensor([1])})),
    ):
        pass
    assert all(not m._forward_hooks for m in lm.modules)


@pytest.mark.parametrize(
    ("intervention", "message"),
    [
        (lambda: deactivate({5: torch.tensor([1])}), "Layer 5 does not exist"),
        (lambda: deactivate({0: torch.tensor([48])}), "out of range"),
        (lambda: deactivate({0: torch.tensor([-1])}), "out of range"),
        (lambda: scale({0: torch.tensor([1])}, float("nan")), "finite"),
    ],
)
def test_out_of_range_interventions_are_refused(tiny_model, intervention, message):
    with pytest.raises(InterventionError, match=message), apply(tiny_model, intervention()):
        pass
    assert active_hook_count(tiny_model) == 0


def test_neuron_set_helpers():
    masks = [[torch.tensor([1, 2]), torch.tensor([5])], [torch.tensor([2, 3]), torch.tensor([])]]
    got = language_neurons(masks, ["en", "fr"], ["en", "fr"])
    assert got[0].tolist() == [1, 2, 3] and got[1].tolist() == [5]
    assert language_neurons(masks, ["en", "fr"], ["en"], layers=[1]) == {1: masks[0][1]}
    with pytest.raises(InterventionError, match="No neurons for de"):
        language_neurons(masks, ["en", "fr"], ["de"])
    assert parse_layers("2-4", 10) == range(2, 5)
    assert parse_layers("7-", 10) == range(7, 10)
    assert parse_layers("-1", 10) == range(0, 2)
    assert parse_layers("3", 10) == range(3, 4)
    for bad in ("x", "5-2", "0-10", ""):
        with pytest.raises(InterventionError):
            parse_layers(bad, 10)
    assert {k: v.tolist() for k, v in parse_pairs("3:17, 3:2,0:5").items()} == {
        3: [2, 17],
        0: [5],
    }
    with pytest.raises(InterventionError, match="layer:neuron"):
        parse_pairs("3-17")
    assert union({0: torch.tensor([1])}, {0: torch.tensor([0, 1])})[0].tolist() == [0, 1]
    assert Intervention().is_empty


def test_threads_sharing_one_model_get_their_own_results(make_tiny_model):
    lm = make_tiny_model("gemma3_text", seed=4)
    config = GenerationConfig(max_new_tokens=12, repetition_penalty=1.0)
    mean = torch.full((lm.num_layers, lm.num_neurons), 2.0)
    everything = {layer: torch.arange(lm.num_neurons) for layer in range(lm.num_layers)}
    jobs = {
        "none": None,
        "off": deactivate(everything),
        "steer": steer(mean, {1: torch.arange(0, 48, 2)}, strength=3.0),
        "scale": scale({0: torch.arange(10)}, -4.0),
    }
    prompt = "Everyone has the right"
    sequential = {name: generate(lm, prompt, config, job) for name, job in jobs.items()}
    assert len(set(sequential.values())) == len(jobs)  # the interventions do differ

    results: dict[str, list[str]] = {name: [] for name in jobs}
    barrier = threading.Barrier(len(jobs))
    errors = []

    def worker(name):
        try:
            barrier.wait()
            for _ in range(3):
                results[name].append(generate(lm, prompt, config, jobs[name]))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in jobs:
        assert results[name] == [sequential[name]] * 3, name
    assert active_hook_count(lm) == 0
    assert all(not m._forward_hooks for m in lm.modules)


def test_interleaved_streams_in_one_thread_stay_apart(make_tiny_model):
    from langneurons.generation import stream

    lm = make_tiny_model("qwen3", seed=2)
    config = GenerationConfig(max_new_tokens=10, repetition_penalty=1.0)
    off = deactivate({layer: torch.arange(lm.num_neurons) for layer in range(lm.num_layers)})
    expected = (generate(lm, "Everyone", config), generate(lm, "Everyone", config, off))
    assert expected[0] != expected[1]
    baseline, modified = stream(lm, "Everyone", config), stream(lm, "Everyone", config, off)
    got = ["", ""]
    for pair in zip(baseline, modified, strict=False):  # as a UI updating two columns
        got[0] += pair[0]
        got[1] += pair[1]
    got[0] += "".join(baseline)
    got[1] += "".join(modified)
    assert tuple(got) == expected
    assert active_hook_count(lm) == 0
    assert torch.is_grad_enabled()
