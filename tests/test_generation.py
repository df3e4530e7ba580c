"""Generation: deterministic greedy and seeded sampling, streaming, the unmodified and the
modified continuation side by side."""

from __future__ import annotations

import itertools

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.generation import GenerationConfig, generate, stream
from langneurons.interventions import deactivate


def test_generation_is_deterministic_streams_and_validates(tiny_model):
    config = GenerationConfig(max_new_tokens=15)
    first = generate(tiny_model, "All human beings", config)
    assert first == generate(tiny_model, "All human beings", config)
    assert "".join(stream(tiny_model, "All human beings", config)) == first
    assert len(list(stream(tiny_model, "All human beings", config))) > 1  # token by token
    sampled = GenerationConfig(max_new_tokens=15, do_sample=True, seed=7, temperature=1.5)
    assert generate(tiny_model, "All", sampled) == generate(tiny_model, "All", sampled)
    other_seed = GenerationConfig(max_new_tokens=15, do_sample=True, seed=8, temperature=1.5)
    assert generate(tiny_model, "All", other_seed) != generate(tiny_model, "All", sampled)
    off = deactivate({layer: torch.arange(48) for layer in range(2)})
    assert generate(tiny_model, "All human beings", config, off) != first
    with pytest.raises(LangNeuronsError, match="prompt is empty"):
        generate(tiny_model, "   ", config)
    for absurd in (0, -3, 10**9):
        with pytest.raises(LangNeuronsError, match="max_new_tokens"):
            GenerationConfig(max_new_tokens=absurd)
    with pytest.raises(LangNeuronsError, match="temperature"):
        GenerationConfig(temperature=0)


def test_side_by_side_equals_the_two_continuations_alone(tiny_model):
    from langneurons.generation import stream_side_by_side

    config = GenerationConfig(max_new_tokens=12)
    off = deactivate({layer: torch.arange(48) for layer in range(2)}, "all")
    states = list(stream_side_by_side(tiny_model, "All human beings", off, config, ["en", "fr"]))
    assert len(states) > 2 and not any(s.done for s in states[:-1]) and states[-1].done
    final = states[-1]
    assert final.baseline == generate(tiny_model, "All human beings", config)
    assert final.modified == generate(tiny_model, "All human beings", config, off)
    assert final.baseline != final.modified
    assert final.baseline_language[0] in {"en", "fr"} and 0 < final.baseline_language[1] <= 1
    # Texts only grow, one piece at a time.
    for before, after in itertools.pairwise(states):
        assert after.baseline.startswith(before.baseline)
        assert after.modified.startswith(before.modified)


def test_side_by_side_refuses_bad_input_before_generating(tiny_model):
    from langneurons.generation import stream_side_by_side
    from langneurons.interventions import InterventionError

    with pytest.raises(LangNeuronsError, match="prompt is empty"):
        next(stream_side_by_side(tiny_model, " ", None))
    with pytest.raises(InterventionError, match="Layer 7 does not exist"):
        next(stream_side_by_side(tiny_model, "Hi", deactivate({7: torch.tensor([1])})))


def test_compare_reports_both_texts_and_what_changed(tiny_model):
    from langneurons.generation import compare

    off = deactivate({0: torch.arange(48)}, "everything")
    result = compare(tiny_model, "All human beings", off, GenerationConfig(max_new_tokens=8))
    assert set(result) == {"baseline", "modified", "intervention", "generation"}
    assert result["intervention"] == {"deactivate": "everything", "neurons": 48}
    assert result["generation"]["max_new_tokens"] == 8
    assert result["modified"]["text"] == generate(
        tiny_model, "All human beings", GenerationConfig(max_new_tokens=8), off
    )


def test_compare_reports_each_new_token_to_progress(tiny_model):
    from langneurons.generation import compare

    events = []
    off = deactivate({0: torch.tensor([0, 1])}, "fr")
    config = GenerationConfig(max_new_tokens=6, repetition_penalty=1.0)
    compare(tiny_model, "All human beings", off, config, progress=events.append)
    done = [e.done for e in events]
    assert {e.stage for e in events} == {"generate"} and {e.total for e in events} == {6}
    assert done[0] == 0 and done[-1] == 6 and done == sorted(set(done))  # each count once
    with pytest.raises(LangNeuronsError):  # refused before any progress is shown
        compare(tiny_model, " ", off, config, progress=events.append)
    assert len(events) == len(done)
