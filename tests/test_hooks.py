"""The one hook mechanism: handlers run in phase order, only in the context that bound
them, and counting, capture and generation on one shared model in several threads give
each the result it would give alone."""

from __future__ import annotations

import threading

import torch

from langneurons import hooks
from langneurons.generation import GenerationConfig, generate
from langneurons.interventions import apply, deactivate, scale
from langneurons.stats import collect_language_stats

IDS = torch.tensor([[1, 40, 41, 42, 43, 44]])


def test_observers_see_values_before_and_after_edits_whatever_the_binding_order(tiny_model):
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def handle(values):
            seen[name] = values.clone()

        return handle

    off = deactivate({0: torch.arange(tiny_model.num_neurons)})
    with (
        hooks.bound(tiny_model, {0: keep("after")}, hooks.OBSERVE_AFTER),
        apply(tiny_model, off),
        hooks.bound(tiny_model, {0: keep("before")}, hooks.OBSERVE),
        torch.inference_mode(),
    ):
        tiny_model.body(input_ids=IDS, use_cache=False)
    assert seen["after"].abs().sum() == 0  # the edit wrote zeros
    assert seen["before"].abs().sum() > 0  # what the model computed
    assert hooks.active_hook_count(tiny_model) == 0


def test_a_binding_acts_only_in_its_own_thread(tiny_model):
    counted = []
    started, release = threading.Event(), threading.Event()

    def other_thread():
        with hooks.bound(tiny_model, {0: lambda values: counted.append(values.shape)}):
            started.set()
            release.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    started.wait(10)
    with torch.inference_mode():
        tiny_model.body(input_ids=IDS, use_cache=False)  # this thread: nothing bound
    release.set()
    thread.join()
    assert counted == []
    assert hooks.active_hook_count(tiny_model) == 0


def test_counting_while_other_threads_generate_and_capture(make_tiny_model):
    """Counting statistics in one thread while others generate (one with its neurons
    switched off) and capture activations: each gets exactly what it gets alone."""
    lm = make_tiny_model("qwen2", seed=7)
    bos = lm.tokenizer.bos_token_id
    gen = torch.Generator().manual_seed(0)
    windows = [torch.cat([torch.tensor([bos]), torch.randint(4, 300, (31,), generator=gen)])]
    windows = windows * 12
    config = GenerationConfig(max_new_tokens=12, repetition_penalty=1.0)
    off = scale({layer: torch.arange(lm.num_neurons) for layer in range(lm.num_layers)}, -4.0)

    def count():
        return collect_language_stats(lm, windows, batch_size=2)

    def capture():
        found = []
        with (
            hooks.bound(lm, {1: lambda v: found.append(v.detach().clone())}),
            torch.inference_mode(),
        ):
            for _ in range(6):
                lm.body(input_ids=IDS, use_cache=False)
        return torch.stack(found)

    jobs = {
        "count": count,
        "plain": lambda: generate(lm, "Everyone has", config),
        "off": lambda: generate(lm, "Everyone has", config, off),
        "capture": capture,
    }
    alone = {name: job() for name, job in jobs.items()}
    together, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def worker(name):
        try:
            barrier.wait()
            together[name] = jobs[name]()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert together["count"].tokens == alone["count"].tokens == 12 * 31
    assert torch.equal(together["count"].over_zero, alone["count"].over_zero)
    assert torch.equal(together["count"].activation_sum, alone["count"].activation_sum)
    assert together["plain"] == alone["plain"] and together["off"] == alone["off"]
    assert alone["plain"] != alone["off"]
    assert torch.equal(together["capture"], alone["capture"])
    assert hooks.active_hook_count(lm) == 0
