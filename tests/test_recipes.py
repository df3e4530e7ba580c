"""Steering recipes: the search chooses on tuning prompts only, the stored recipes
round-trip through the run folder and are checked when read, and ``generate --steer``
without a strength uses them."""

from __future__ import annotations

import json
import re

import pytest
import torch

from langneurons.errors import LangNeuronsError, ResultsError
from langneurons.pipeline import compute
from langneurons.prompts import prompt_split
from langneurons.recipe_search import evaluate_recipes, search_recipes
from langneurons.recipes import (
    RECIPES_FILE,
    ChosenRecipe,
    Recipe,
    RecipeBook,
    RecipeGrid,
    RecipeScores,
    neurons_digest,
    read_recipes,
    recipes_of,
)
from langneurons.results import read_run
from langneurons.selection import LapeConfig
from langneurons.steering import SteeringConfig

GRID = RecipeGrid(modes=("set", "scale"), strengths=(1.0, 4.0), band_starts=(0.0, 0.5))
CONFIG = SteeringConfig(max_new_tokens=6, batch_size=16)


@pytest.fixture
def run(tiny_model, tmp_path):
    out = tmp_path / "run"
    compute(tiny_model, ["en", "fr", "de"], max_tokens=300, out_dir=out, selection=LapeConfig(0.1))
    return read_run(out)


def test_the_embedded_openings_split_into_tuning_and_held_out_halves():
    for code in ("en", "ja", "zh", "ko", "ar", "hi", "ru", "fr", "de", "es"):
        tuning, held = prompt_split(code)
        assert len(tuning) == len(held) == 11, code
        assert not set(tuning) & set(held), code


def test_the_search_never_reads_held_out_prompts_when_choosing(tiny_model, run, monkeypatch):
    import langneurons.recipe_search as recipe_search

    calls: list[tuple[list[str], dict]] = []
    real = recipe_search.steering_sweep

    def spy(*args, **kwargs):
        calls.append((list(kwargs["prompts"]), dict(kwargs.get("native_prompts") or {})))
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe_search, "steering_sweep", spy)
    tuning, held = prompt_split("en")
    mine = ["My own prompt about the sea", "Another one of mine"]
    book = search_recipes(tiny_model, run, ["fr", "de"], grid=GRID, config=CONFIG)
    first = [prompts for prompts, _ in calls]
    assert first[-2:] == [held, held] and all(p == tuning for p in first[:-2])
    for _, native in calls[:-2]:  # the targets' own openings: their tuning halves
        assert all(native[t] == prompt_split(t)[0] for t in native)
    calls.clear()
    again = search_recipes(tiny_model, run, ["fr", "de"], held_out=mine, grid=GRID, config=CONFIG)
    assert [p for p, _ in calls][-2:] == [mine, mine]
    # Another held-out set changes the report, never the choice.
    assert again.grid == book.grid
    for target in ("fr", "de"):
        assert again.recipe(target) == book.recipe(target)
        assert again.recipes[target].tuning == book.recipes[target].tuning
        assert again.recipes[target].unmodified_held_out.n == 2
    assert again.settings["held_out"] == {"source": "your prompts", "prompts": 2}


def test_each_strength_ladder_stops_early(tiny_model, run):
    book = search_recipes(tiny_model, run, ["fr"], grid=GRID, config=CONFIG)
    rows = book.grid_frame()
    for (_, _), ladder in rows.groupby(["mode", "layers"]):
        tried = ladder["strength"].tolist()
        assert tried == sorted(tried)
        unmodified = book.recipes["fr"].unmodified_tuning.success
        idle = broken = 0
        for i, row in enumerate(ladder.itertuples()):
            idle = idle + 1 if row.success < unmodified + 0.05 else 0
            broken = broken + 1 if not row.fluent else 0
            if broken >= 2 or row.success >= 1.0 or idle >= 2:
                assert i == len(ladder) - 1  # nothing stronger tried after it


def _book(run, recipe: Recipe | None = None) -> RecipeBook:
    recipe = recipe or Recipe("scale", 2.0, "1-1")
    scores = RecipeScores(0.9, 0.8, 3.5, 0.9, 11, 4.1, 0.5)
    chosen = ChosenRecipe("fr", recipe, scores, scores, scores, scores)
    settings = {
        "model": "tiny",
        "neurons": neurons_digest(run.masks, run.languages),
        "generation": {"max_new_tokens": 6},
        "tuning": {"source": "test", "prompts": 11},
        "held_out": {"source": "test", "prompts": 11},
    }
    return RecipeBook({"fr": chosen, "de": ChosenRecipe("de", None)}, settings, [])


def test_stored_recipes_round_trip_through_the_run_folder(run):
    book = _book(run)
    path = book.save(run.path)
    assert path.name == RECIPES_FILE
    found = recipes_of(read_run(run.path))
    assert found is not None and found.to_json() == read_recipes(path).to_json()
    assert found.recipe("fr") == Recipe("scale", 2.0, "1-1") and found.recipe("de") is None
    assert json.loads(path.read_text())["written_by"] == "langneurons"
    # Recipes found for other neurons are refused, not used.
    document = json.loads(path.read_text())
    document["neurons"] = "0" * 16
    path.write_text(json.dumps(document))
    with pytest.raises(ResultsError, match="other neurons"):
        recipes_of(read_run(run.path))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda d: d.update(format=9), "'format' is 9"),
        (lambda d: d.update(recipes=[]), "'recipes' is not an object"),
        (lambda d: d["recipes"].update({"<b>": None}), "not a language code"),
        (lambda d: d["recipes"]["fr"].update(mode="boost"), "'boost' is not one of"),
        (lambda d: d["recipes"]["fr"].update(strength=-1), "0 or more"),
        (lambda d: d["recipes"]["fr"].update(strength="2"), "must be a number"),
        (lambda d: d["recipes"]["fr"].update(layers="9-x"), "'all' or a range"),
        (lambda d: d["recipes"]["fr"]["held_out"].update(success=1.5), "'success' is 1.5"),
        (lambda d: d["recipes"]["fr"]["tuning"].update(n="11"), "'n' is '11'"),
        (lambda d: d.update(grid={}), "'grid' is not a list"),
    ],
)
def test_a_malformed_recipes_file_gets_a_clear_error(run, damage, says):
    path = _book(run).save(run.path)
    document = json.loads(path.read_text())
    damage(document)
    path.write_text(json.dumps(document))
    with pytest.raises(ResultsError, match=re.escape(says)) as raised:
        read_recipes(run.path)
    assert RECIPES_FILE in str(raised.value)


def test_a_recipes_file_that_is_not_json_names_the_file(run):
    (run.path / RECIPES_FILE).write_text("{")
    with pytest.raises(ResultsError, match=r"recipes\.json' is unreadable"):
        read_recipes(run.path)


def test_a_run_written_again_drops_the_recipes_of_its_old_neurons(tiny_model, run):
    _book(run).save(run.path)
    compute(
        tiny_model, ["en", "fr", "de"], max_tokens=300, out_dir=run.path, selection=LapeConfig()
    )
    assert not (run.path / RECIPES_FILE).exists()


def test_stored_recipes_are_evaluated_on_new_prompts(tiny_model, run):
    book = _book(run, Recipe("set", 1.0, "all"))
    rows = evaluate_recipes(tiny_model, run, book, ["fr"], ["The sea is", "My house"])
    assert [(r["strength"], r["mode"]) for r in rows] == [(0.0, "none"), (1.0, "set")]
    assert {r["n"] for r in rows} == {2}
    assert set(rows[0]) >= {"target", "strength", "layers", "mode", "success", "nll", "n"}
    with pytest.raises(LangNeuronsError, match="No stored recipe for de"):
        evaluate_recipes(tiny_model, run, book, ["de"], ["x"])


def test_a_recipe_is_checked_when_made():
    assert Recipe("add", 0.5, "3-7").describe() == "add x0.5 in layers 3-7"
    assert Recipe().band is None and Recipe(layers="2-5").band == "2-5"
    for bad in (dict(mode="x"), dict(strength=float("nan")), dict(layers="all-1")):
        with pytest.raises(LangNeuronsError):
            Recipe(**bad)
    assert RecipeGrid().bands(18) == ["all", "6-17", "9-17", "12-17"]


def test_scale_mode_multiplies_what_the_neurons_compute():
    from langneurons.interventions import steer

    mean = torch.ones(2, 4)
    edits = steer(mean, {0: torch.tensor([1, 2])}, 2.0, mode="scale").edits
    assert [(e.mode, e.values.tolist()) for e in edits] == [("scale", [3.0, 3.0])]


def _cli_run(tiny_model_dir, tmp_path):
    from langneurons.cli import main

    out = tmp_path / "cli-run"
    argv = ["compute", "--model", str(tiny_model_dir), "--languages", "en,fr,de"]
    assert main([*argv, "--max-tokens", "300", "--top-rate", "0.1", "--out", str(out)]) == 0
    return read_run(out)


@pytest.fixture
def tiny_model_dir(save_tiny_model, tmp_path):
    return save_tiny_model("llama", tmp_path / "tiny-llama")


def test_generate_steers_with_the_stored_recipe_when_no_strength_is_given(
    tiny_model_dir, tmp_path, capsys
):
    from langneurons.cli import main

    run = _cli_run(tiny_model_dir, tmp_path)
    capsys.readouterr()
    base = ["generate", "--run", str(run.path), "--prompt", "The weather", "--steer", "fr"]
    base += ["--max-new-tokens", "4", "--json"]
    assert main(base) == 0
    printed = capsys.readouterr()
    document = json.loads(printed.out)
    assert document["recipe"] == {
        "mode": "set",
        "strength": 1.0,
        "layers": "all",
        "source": "default",
    }
    assert "No stored recipe for fr" in printed.err
    _book(run, Recipe("add", 2.0, "1-1")).save(run.path)
    assert main(base) == 0
    printed = capsys.readouterr()
    document = json.loads(printed.out)
    assert document["recipe"]["source"] == "stored recipe"
    assert document["intervention"]["mode"] == "add"
    assert document["intervention"]["strength"] == 2.0
    assert document["intervention"]["layers"] == "1-1"
    assert "with the run's recipe: add x2 in layers 1-1 (held-out success 0.90" in printed.err
    assert main([*base, "--strength", "0.5"]) == 0  # a strength given wins
    document = json.loads(capsys.readouterr().out)
    assert document["recipe"]["source"] == "options"
    assert document["intervention"]["strength"] == 0.5 and "layers" not in document["intervention"]


def test_steer_eval_searches_stores_and_evaluates_recipes(tiny_model_dir, tmp_path, capsys):
    from langneurons.cli import main

    run = _cli_run(tiny_model_dir, tmp_path)
    prompts = tmp_path / "mine.txt"
    prompts.write_text("The sea is\nMy house has\n")
    capsys.readouterr()
    base = ["steer-eval", "--run", str(run.path), "--targets", "fr", "--max-new-tokens", "4"]
    assert main([*base, "--search", "--json", "--quiet"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["written"] == str(run.path / RECIPES_FILE)
    assert set(document["table"][0]) >= {"target", "tuning_success", "held_out_success"}
    stored = read_recipes(run.path)
    assert list(stored.recipes) == ["fr"] and stored.grid
    if stored.recipe("fr") is None:  # a random tiny model may find nothing that helps
        assert main([*base, "--recipe", "run", "--prompts", str(prompts)]) == 2
        assert "No stored recipe for fr" in capsys.readouterr().err
        _book(run, Recipe("set", 1.0, "all")).save(run.path)
    assert main([*base, "--recipe", "run", "--prompts", str(prompts), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["strength"] == 0.0 and {r["n"] for r in rows} == {2}
    assert set(rows[1]) >= {"target", "strength", "layers", "mode", "success", "line_pass_rate"}
    assert main([*base, "--search", "--recipe", "run"]) == 2


def test_a_damaged_recipes_file_is_one_line_for_generate_and_steer_eval(
    tiny_model_dir, tmp_path, capsys
):
    from langneurons.cli import main

    run = _cli_run(tiny_model_dir, tmp_path)
    (run.path / RECIPES_FILE).write_text('{"format": 1, "recipes": {"fr": {"mode": "boost"}}}')
    capsys.readouterr()
    generate = ["generate", "--run", str(run.path), "--prompt", "Hi", "--steer", "fr"]
    evaluate = ["steer-eval", "--run", str(run.path), "--targets", "fr", "--recipe", "run"]
    for argv in (generate, evaluate):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "recipes.json" in err[0] and "'boost'" in err[0], err
        assert "--search" in err[0] and "unexpectedly" not in err[0]
    assert main([*generate, "--strength", "1"]) == 0  # a strength given needs no recipe


def test_the_choice_prefers_a_margin_inside_the_bar_to_the_lowest_nll():
    from langneurons.recipe_search import choose, margin

    def scores(success, nll, distinct2):
        return RecipeScores(success, 1.0, nll, distinct2, 11, 3.5, 0.53)

    unmodified = scores(0.0, 2.2, 0.78)
    edge = (Recipe("set", 2.0), scores(1.0, 2.9, 0.63))  # distinct bigrams near the floor
    inside = (Recipe("set", 2.0, "6-17"), scores(1.0, 2.9, 0.75))
    weaker = (Recipe("add", 1.0), scores(0.82, 2.5, 0.80))  # two prompts fewer
    broken = (Recipe("set", 4.0), scores(1.0, 4.4, 0.70))  # above the NLL bar
    assert margin(edge[1]) < margin(inside[1]) and margin(broken[1]) < 0
    assert choose([edge, inside, weaker, broken], unmodified) == inside
    assert choose([weaker], unmodified) == weaker
    assert choose([broken], unmodified) is None
    assert choose([(Recipe(), scores(0.03, 2.3, 0.7))], unmodified) is None  # no gain
