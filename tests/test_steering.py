"""Steering measured: batched generation, the sweep's rows, its cache and resumption,
the scores on hand-made texts, and bad input refused before any model work."""

from __future__ import annotations

import json
import math

import pytest
import torch

from langneurons.config import ConfigError
from langneurons.errors import LangNeuronsError
from langneurons.generation import GenerationConfig, generate, generate_batch
from langneurons.interventions import scale
from langneurons.langid import line_pass_rate, line_verdict
from langneurons.pipeline import compute
from langneurons.prompts import embedded_prompts, prompt_languages, read_prompts
from langneurons.steering import (
    SteeringCell,
    SteeringConfig,
    SteeringSweep,
    distinct_bigrams,
    steering_sweep,
)

from .conftest import FAMILY_TYPES

PROMPTS = ["The weather today is", "Hi", "Every child has the right to learn and to play"]


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_batched_generation_equals_one_prompt_at_a_time(make_tiny_model, family):
    lm = make_tiny_model(family)
    config = GenerationConfig(max_new_tokens=12)
    for continuation in generate_batch(lm, PROMPTS, config):
        assert continuation.text == generate(lm, continuation.prompt, config), family
        assert len(continuation.token_ids) <= 12


def test_batched_generation_applies_the_intervention_to_every_row(tiny_model):
    neurons = {0: torch.arange(0, 48), 1: torch.arange(0, 48)}
    change = scale(neurons, 40.0, "all")
    config = GenerationConfig(max_new_tokens=10)
    batch = generate_batch(tiny_model, PROMPTS, config, change)
    alone = [generate(tiny_model, p, config, change) for p in PROMPTS]
    assert [c.text for c in batch] == alone
    assert [c.text for c in batch] != [generate(tiny_model, p, config) for p in PROMPTS]


def test_the_scores_on_texts_whose_answer_is_known():
    assert distinct_bigrams([[1, 2, 3, 4]]) == 1.0
    assert distinct_bigrams([[5, 5, 5, 5, 5]]) == 0.25  # one bigram, four times
    assert distinct_bigrams([[], [7]]) == 0.0
    french = "Il fait beau aujourd'hui et nous allons nous promener dans le parc."
    english = "It is a lovely day and we are going for a walk in the park today."
    assert line_verdict(french, "fr") and line_verdict(french, "en") is False
    assert line_verdict(f"{french}\n{english}", "fr") is False  # one English line fails it
    assert line_verdict(f"{french}\nOui.", "fr")  # too short to judge: skipped
    assert line_verdict("", "fr") is None and line_verdict("Oui, oui.", "fr") is None
    # Responses with no line to judge are left out of the rate, as the benchmark does.
    assert line_pass_rate([french, f"{french}\n{english}", "Oui."], "fr") == 0.5


def test_embedded_prompts_are_everyday_openings_in_several_languages(tmp_path):
    assert {"en", "fr", "de", "es", "ru", "zh", "ja"} <= set(prompt_languages())
    for code in prompt_languages():
        prompts = embedded_prompts(code)
        assert len(prompts) >= 20 and len(set(prompts)) == len(prompts), code
    with pytest.raises(LangNeuronsError, match="No embedded prompts for 'xx'"):
        embedded_prompts("xx")
    path = tmp_path / "p.txt"
    path.write_text("# mine\nOne\n\n  Two  \n", encoding="utf-8")
    assert read_prompts(path) == ["One", "Two"]
    path.write_text("\n# nothing\n", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="holds no prompt"):
        read_prompts(path)


@pytest.fixture
def tiny_run(tiny_model):
    return compute(tiny_model, ["en", "fr", "de"], max_tokens=300)


# A random model's LAPE finds almost no neurons: a third of each layer per language here.
MASKS = [[torch.arange(k * 16, (k + 1) * 16)] * 2 for k in range(3)]


def _sweep(lm, run, masks=MASKS, **kwargs):
    config = SteeringConfig(max_new_tokens=6, batch_size=2)
    return steering_sweep(
        lm,
        masks,
        run.selection.languages,
        run.statistics,
        kwargs.pop("targets", ["fr", "de"]),
        prompts=PROMPTS,
        config=config,
        **kwargs,
    )


def test_a_sweep_has_a_row_per_target_strength_and_layers(tiny_model, tiny_run):
    sweep = _sweep(tiny_model, tiny_run, strengths=[0, 1, 500], layers=[None, "1-1"])
    frame = sweep.to_frame()
    assert list(frame.columns) == [
        "target", "strength", "layers", "success", "line_pass_rate", "nll", "distinct2", "n",
    ]  # fmt: skip
    assert len(frame) == 2 * 3 * 2
    assert set(frame["n"]) == {len(PROMPTS)}
    assert (
        frame[["success", "line_pass_rate", "distinct2"]]
        .apply(lambda c: c.between(0, 1))
        .all()
        .all()
    )
    assert all(math.isfinite(v) and v > 0 for v in frame["nll"])
    # Strength 0 is the same unmodified outputs for every target and layer range.
    base = [sweep.cell(t, 0.0, layers).outputs for t in ("fr", "de") for layers in ("all", "1-1")]
    assert all([o["text"] for o in b] == [o["text"] for o in base[0]] for b in base)
    # A random model's activations are about 0.01: a large strength makes them count.
    steered = sweep.cell("fr", 500.0, "all").outputs
    assert [o["text"] for o in steered] != [o["text"] for o in base[0]]
    document = json.loads(json.dumps(sweep.to_json()))
    assert set(document) == {"rows", "settings", "recommended", "references"}
    # Both targets have embedded openings: the model's own text in each is the reference.
    assert sorted(sweep.native) == ["de", "fr"] == sorted(document["settings"]["native_references"])
    own_fr = sweep.cell("fr", 0.0, "native")
    # As many of the target's openings as the sweep has prompts.
    assert [o["prompt"] for o in own_fr.outputs] == embedded_prompts("fr")[: len(PROMPTS)]
    assert document["references"]["fr"]["native_nll"] == own_fr.nll
    # Without them (a caller reading success only), no reference is generated.
    events = []
    bare = _sweep(
        tiny_model, tiny_run, strengths=[0, 1], native_references=False, progress=events.append
    )
    assert bare.native == {} and not any("reference" in e.message for e in events)
    assert bare.fluency_bar("fr").reference == "unmodified"
    assert set(document["rows"][0]) == {
        "target", "strength", "layers", "success", "line_pass_rate", "nll", "distinct2", "n",
    }  # fmt: skip


class Stop(Exception):
    pass


def test_a_cache_that_cannot_be_written_is_said_once_and_the_sweep_keeps_its_results(
    tiny_model, tiny_run, monkeypatch
):
    import langneurons.steering as steering

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(steering, "write_json_file", full)
    events = []
    sweep = _sweep(tiny_model, tiny_run, strengths=[0, 1], progress=events.append)
    said = [e.message for e in events if e.stage == "cache"]
    assert len(said) == 1 and "No space left on device" in said[0] and "keeps them" in said[0]
    assert len(sweep.to_frame()) == 2 * 2  # every cell computed all the same


def test_a_sweep_is_cached_cell_by_cell_and_resumes(tiny_model, tiny_run):
    seen = []

    def stop_after_two(event):
        seen.append(event)
        if event.stage == "steer" and event.message.endswith("done") and event.done == 2:
            raise Stop

    with pytest.raises(Stop):
        _sweep(tiny_model, tiny_run, strengths=[0, 1, 2], progress=stop_after_two)
    events = []
    whole = _sweep(tiny_model, tiny_run, strengths=[0, 1, 2], progress=events.append)
    found = [e for e in events if e.stage == "cache"]
    generated = [e for e in events if e.stage == "steer" and e.message.endswith("done")]
    # 1 baseline, 2 native references (fr, de), 2 targets x 2 strengths: 2 found, 5 made.
    assert len(found) == 2 and len(generated) == 5
    events.clear()
    again = _sweep(tiny_model, tiny_run, strengths=[0, 1, 2], progress=events.append)
    assert {e.stage for e in events} == {"cache"}
    assert again.to_json() == whole.to_json()
    fresh = _sweep(tiny_model, tiny_run, strengths=[0, 1, 2], use_cache=False)
    assert fresh.to_json()["rows"] == whole.to_json()["rows"]
    # Another steering rule (or detector) of the same model reuses the unmodified outputs,
    # the prompts' and the target's own.
    events.clear()
    steering_sweep(
        tiny_model,
        MASKS,
        tiny_run.selection.languages,
        tiny_run.statistics,
        ["fr"],
        prompts=PROMPTS,
        strengths=[0, 1],
        config=SteeringConfig(max_new_tokens=6, batch_size=2, mode="add"),
        progress=events.append,
    )
    assert [e.message for e in events if e.stage == "cache"] == [
        "unmodified: found in the cache",
        "fr written by the unmodified model (reference): found in the cache",
    ]


def test_a_bad_sweep_is_refused_before_any_generation(tiny_model, tiny_run):
    with pytest.raises(LangNeuronsError, match="Cannot steer towards ja"):
        _sweep(tiny_model, tiny_run, targets=["ja"])
    with pytest.raises(ConfigError, match="Strengths must be finite"):
        _sweep(tiny_model, tiny_run, strengths=[1, float("nan")])
    with pytest.raises(ConfigError, match="at least one target"):
        _sweep(tiny_model, tiny_run, targets=[])
    with pytest.raises(LangNeuronsError, match="statistics"):
        steering_sweep(tiny_model, tiny_run.selection.masks, ["en", "fr", "de"], None, ["fr"])
    with pytest.raises(LangNeuronsError, match="fr has no selected neurons in any layer"):
        _sweep(tiny_model, tiny_run, masks=tiny_run.selection.masks)
    with pytest.raises(ConfigError, match="mode must be one of set, add"):
        SteeringConfig(mode="replace")


def _cell(strength, success, nll, distinct2):
    return SteeringCell("ja", strength, "all", success, success, nll, distinct2, 20)


def test_the_recommended_strength_is_the_most_successful_that_stays_fluent():
    sweep = SteeringSweep(
        [
            _cell(0, 0.0, 2.0, 0.9),
            _cell(1, 0.5, 2.4, 0.9),
            _cell(2, 0.8, 2.9, 0.8),
            _cell(4, 0.95, 4.5, 0.9),  # more successful, but NLL rose by 2.5
            _cell(8, 1.0, 2.5, 0.3),  # collapsed into repetition
        ],
        {},
    )
    assert sweep.recommended() == {"ja": {"strength": 2, "layers": "all", "success": 0.8}}
    flat = SteeringSweep([_cell(0, 0.5, 2.0, 0.9), _cell(1, 0.52, 2.0, 0.9)], {})
    assert flat.recommended() == {"ja": None}  # no real gain over the unmodified model


def _hindi(target, strength, nll, distinct2, success):
    return SteeringCell(target, strength, "all", success, success, nll, distinct2, 10)


def test_fluency_is_judged_against_the_looser_of_the_unmodified_and_the_native_text():
    base = _hindi("hi", 0.0, 2.2, 0.78, 0.0)
    steered = _hindi("hi", 1.0, 3.45, 0.81, 1.0)  # 1.25 nats above the English outputs
    alone = SteeringSweep([base, steered], {})
    assert alone.recommended() == {"hi": None}
    assert alone.fluency_bar("hi").reference == "unmodified"
    own_hindi = _hindi("hi", 0.0, 2.9, 0.70, 1.0)
    judged = SteeringSweep([base, steered], {}, {"hi": own_hindi})
    bar = judged.fluency_bar("hi")
    assert bar.reference == "native" and bar.max_nll == pytest.approx(3.9)
    assert bar.min_distinct2 == pytest.approx(0.75 * 0.70)
    assert judged.recommended() == {"hi": {"strength": 1.0, "layers": "all", "success": 1.0}}
    # A native text more fluent than the English outputs does not tighten the bar.
    fluent_own = SteeringSweep([base, steered], {}, {"hi": _hindi("hi", 0.0, 1.5, 0.9, 1.0)})
    assert fluent_own.fluency_bar("hi").max_nll == pytest.approx(3.2)
    frame = judged.references_frame()
    assert frame.loc[0, "native_nll"] == 2.9 and frame.loc[0, "max_nll"] == pytest.approx(3.9)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(nll="low"),
        lambda d: d.update(nll=float("nan")),
        lambda d: d.update(outputs={"a": 1}),
        lambda d: d["outputs"][0].update(text=None),
        lambda d: d["outputs"][0].update(tokens=["x"]),
        lambda d: d["outputs"].__setitem__(0, "text"),
    ],
)
def test_a_damaged_cache_cell_is_computed_again_not_a_failure(tiny_model, tiny_run, damage):
    from pathlib import Path

    whole = _sweep(tiny_model, tiny_run, strengths=[0, 1], targets=["fr"])
    folder = Path(whole.settings["cache"])
    cells = sorted(folder.glob("fr_1_*.json"))
    assert cells, list(folder.iterdir())
    document = json.loads(cells[0].read_text())
    damage(document)
    cells[0].write_text(json.dumps(document))
    events = []
    again = _sweep(tiny_model, tiny_run, strengths=[0, 1], targets=["fr"], progress=events.append)
    made = [e.message for e in events if e.stage == "steer" and e.message.endswith("done")]
    assert made == ["fr x1 (all): done"]  # that cell alone, made again
    assert again.to_json()["rows"] == whole.to_json()["rows"]
