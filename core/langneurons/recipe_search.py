"""The search for steering recipes (see :mod:`langneurons.recipes` for what a recipe is
and how it is stored): a small grid per target tried on tuning prompts only, the best
kept within the fluency bar, then reported on held-out prompts; and the stored recipes
run on a user's own prompts."""

from __future__ import annotations

__all__ = ["choose", "evaluate_recipes", "margin", "search_recipes"]

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import LangNeuronsError
from .models import LoadedModel
from .progress import ProgressCallback, ProgressEvent, emit
from .prompts import prompt_split
from .recipes import (
    ChosenRecipe,
    Recipe,
    RecipeBook,
    RecipeGrid,
    RecipeScores,
    neurons_digest,
    rounded,
)
from .results import Run
from .steering import SteeringConfig, steering_sweep
from .steering_cells import FLUENCY_NLL_RISE, MIN_GAIN, SteeringSweep


@dataclass
class _Judge:
    """Runs one recipe (or the unmodified model) on one set of prompts and scores it
    against that set's fluency bar, through :func:`~langneurons.steering.steering_sweep`
    (so every cell is cached and shared with the steering lab)."""

    lm: LoadedModel
    run: Run
    prompts: list[str]
    native: dict[str, list[str]]
    config: SteeringConfig
    use_cache: bool
    progress: ProgressCallback | None
    calls: list[list[str]] = field(default_factory=list)

    tried: int = 0
    most: int = 0

    def _inner(self, event: ProgressEvent) -> None:
        """The sweeps' own events stay quiet (cells found or generated), but for a cache
        that cannot be written, which the user must hear of."""
        if event.stage == "cache" and event.message.startswith("Cannot"):
            emit(self.progress, "cache", event.message)

    def step(self, message: str) -> None:
        """One more cell of the search, said with how many there can be at most."""
        self.tried += 1
        emit(self.progress, "steer", message, done=self.tried, total=max(self.most, self.tried))

    def sweep(self, target: str, recipe: Recipe | None) -> SteeringSweep:
        self.calls.append(list(self.prompts))
        config = replace(self.config, mode=recipe.mode) if recipe else self.config
        return steering_sweep(
            self.lm,
            self.run.masks,
            self.run.languages,
            self.run.statistics,
            [target],
            prompts=self.prompts,
            strengths=[0.0, recipe.strength] if recipe else [0.0],
            layers=[recipe.band] if recipe else [None],
            config=config,
            use_cache=self.use_cache,
            progress=self._inner,
            native_prompts=self.native,
        )

    def score(self, target: str, recipe: Recipe | None) -> tuple[RecipeScores, RecipeScores]:
        """``(recipe's scores, unmodified scores)`` on this set; for ``None``, the
        unmodified scores twice."""
        sweep = self.sweep(target, recipe)
        bar = sweep.fluency_bar(target)
        assert bar is not None
        base = RecipeScores.of(sweep.cell(target, 0.0, recipe.layers if recipe else "all"), bar)
        if recipe is None:
            return base, base
        return RecipeScores.of(sweep.cell(target, recipe.strength, recipe.layers), bar), base


def margin(scores: RecipeScores) -> float:
    """How far a recipe's figures stay inside the fluency bar: the smaller of its NLL
    headroom (nats, over the bar's allowed rise) and its distinct-bigram headroom (as a
    share of the bar's floor).  Negative outside the bar."""
    nll = (scores.max_nll - scores.nll) / FLUENCY_NLL_RISE
    distinct = (scores.distinct2 - scores.min_distinct2) / max(scores.min_distinct2, 1e-9)
    return min(nll, distinct)


def choose(
    tried: Sequence[tuple[Recipe, RecipeScores]], unmodified: RecipeScores
) -> tuple[Recipe, RecipeScores] | None:
    """The recipe to keep among those tried on the tuning prompts: of the fluent ones
    that beat the unmodified model by :data:`MIN_GAIN`, those within one prompt of the
    best success, and of these the one with the widest fluency :func:`margin` (margins
    in the same tenth tie: then the higher success, the wider band, the lower strength).
    A recipe on the edge of the bar on the tuning prompts tends to fall off it on new
    ones; lower NLL alone would favour text that repeats itself."""
    helping = [
        (recipe, scores)
        for recipe, scores in tried
        if scores.fluent and scores.success >= unmodified.success + MIN_GAIN
    ]
    if not helping:
        return None
    best = max(scores.success for _, scores in helping)
    near = [(r, s) for r, s in helping if s.success >= best - 1 / max(s.n, 1) - 1e-9]

    def rank(pair: tuple[Recipe, RecipeScores]) -> tuple[float, float, int, float]:
        recipe, scores = pair
        # Margins a tenth apart are not told apart on a dozen prompts: then the higher
        # success, the wider band (more of the language's neurons), the lower strength.
        return (
            math.floor(margin(scores) * 10 + 1e-9) / 10,
            scores.success,
            -_band_start(recipe),
            -recipe.strength,
        )

    return max(near, key=rank)


def _band_start(recipe: Recipe) -> int:
    return 0 if recipe.band is None else int(recipe.band.split("-")[0])


def _ladder(
    judge: _Judge,
    target: str,
    mode: str,
    band: str,
    grid: RecipeGrid,
    unmodified: RecipeScores,
) -> Iterator[tuple[Recipe, RecipeScores]]:
    """One (mode, band)'s strengths in increasing order, each with its tuning scores,
    stopping early: after two in a row that break fluency (stronger only costs more; one
    alone may be text caught half-way between two languages, less predictable than
    either), the first that succeeds on every prompt (stronger cannot succeed more), or
    two in a row that gain nothing over the unmodified model (this way of steering does
    not take)."""
    idle = broken = 0
    for strength in sorted(grid.strengths):
        recipe = Recipe(mode, strength, band)
        judge.step(f"{target}: trying {recipe.describe()}")
        try:
            scores, _ = judge.score(target, recipe)
        except LangNeuronsError:  # no neurons of the target in this band
            return
        yield recipe, scores
        idle = idle + 1 if scores.success < unmodified.success + MIN_GAIN else 0
        broken = broken + 1 if not scores.fluent else 0
        if broken >= 2 or scores.success >= 1.0 or idle >= 2:
            return


def search_recipes(
    lm: LoadedModel,
    run: Run,
    targets: Sequence[str],
    *,
    held_out: Sequence[str] | None = None,
    prompt_language: str = "en",
    grid: RecipeGrid | None = None,
    config: SteeringConfig | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
) -> RecipeBook:
    """Find a steering recipe per target on tuning prompts, then report it on held-out
    prompts (see the module's docstring).

    Tuning prompts are the tuning half of ``prompt_language``'s embedded openings; the
    held-out prompts are the other half, or ``held_out`` (a user's own).  The choice
    never reads the held-out prompts: they are continued only once every target's recipe
    is chosen.  Per target and (mode, band), strengths are tried in increasing order
    and the ladder stops early (:func:`_ladder`); a mode that gains nothing with every
    layer steered is not tried on the narrower bands.
    """
    from .steering import check_sweep

    grid = grid or RecipeGrid()
    config = config or SteeringConfig(max_new_tokens=30, batch_size=16)
    tuning, own_held_out = prompt_split(prompt_language)
    held = list(held_out) if held_out is not None else own_held_out
    check_sweep(run.languages, run.statistics, targets, [0.0, *grid.strengths], tuning)
    if not held:
        raise LangNeuronsError("Give at least one held-out prompt.")
    native_tuning = {t: prompt_split(t)[0] for t in targets if _has_prompts(t)}
    native_held = {t: prompt_split(t)[1] for t in targets if _has_prompts(t)}
    judge = _Judge(lm, run, tuning, native_tuning, config, use_cache, progress)
    judge.most = len(targets) * (grid.size(lm.num_layers) + 1)
    bands = grid.bands(lm.num_layers)
    rows: list[dict[str, Any]] = []
    chosen: dict[str, ChosenRecipe] = {}
    for target in targets:
        judge.step(f"{target}: the unmodified model")
        _, unmodified = judge.score(target, None)
        tried: list[tuple[Recipe, RecipeScores]] = []
        for mode in grid.modes:
            for band in bands:
                gained, steps = False, 0
                for recipe, scores in _ladder(judge, target, mode, band, grid, unmodified):
                    rows.append({"target": target, **recipe.to_json(), **rounded(scores.to_json())})
                    tried.append((recipe, scores))
                    gained = gained or scores.success >= unmodified.success + MIN_GAIN
                    steps += 1
                if band == bands[0] and not gained and steps >= 2:
                    break  # a mode that does nothing in every layer does nothing in fewer
        best = choose(tried, unmodified)
        for row in rows:
            if row["target"] == target:
                row["chosen"] = (
                    best is not None
                    and Recipe(row["mode"], row["strength"], row["layers"]) == best[0]
                )
        chosen[target] = ChosenRecipe(
            target,
            best[0] if best else None,
            tuning=best[1] if best else None,
            unmodified_tuning=unmodified,
        )
    # Only now: the held-out prompts, for the chosen recipes and the unmodified model.
    reporter = _Judge(lm, run, held, native_held, config, use_cache, progress)
    reporter.tried, reporter.most = judge.tried, judge.tried + len(chosen)
    for target, outcome in chosen.items():
        reporter.step(f"{target}: the chosen recipe on the held-out prompts")
        scores, unmodified = reporter.score(target, outcome.recipe)
        outcome.unmodified_held_out = unmodified
        if outcome.recipe is not None:
            outcome.held_out = scores
    settings = {
        "model": lm.name,
        "neurons": neurons_digest(run.masks, run.languages),
        "generation": {k: v for k, v in asdict(config).items() if k not in ("mode", "batch_size")},
        "tuning": {
            "source": f"embedded openings ({prompt_language}), tuning half",
            "prompts": len(tuning),
        },
        "held_out": {
            "source": "your prompts"
            if held_out is not None
            else f"embedded openings ({prompt_language}), held-out half",
            "prompts": len(held),
        },
        "grid": {"modes": list(grid.modes), "strengths": list(grid.strengths), "bands": bands},
    }
    return RecipeBook(chosen, settings, rows)


def _has_prompts(code: str) -> bool:
    from .prompts import prompt_languages

    return code in prompt_languages()


def evaluate_recipes(
    lm: LoadedModel,
    run: Run,
    book: RecipeBook,
    targets: Sequence[str],
    prompts: Sequence[str],
    *,
    config: SteeringConfig | None = None,
    use_cache: bool = True,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """The stored recipes of ``targets`` run on ``prompts``: per target a row for the
    unmodified model (strength 0) and one for its recipe, each with ``target``,
    ``strength``, ``layers``, ``mode``, ``success``, ``line_pass_rate``, ``nll``,
    ``distinct2``, ``n`` and ``fluent``."""
    missing = [t for t in targets if book.recipe(t) is None]
    if missing:
        raise LangNeuronsError(
            f"No stored recipe for {', '.join(missing)}: search first with `langneurons "
            f"steer-eval --run DIR --targets {','.join(missing)} --search`."
        )
    config = config or SteeringConfig(**_generation_of(book))
    judge = _Judge(lm, run, list(prompts), {}, config, use_cache, progress)
    rows = []
    for target in targets:
        recipe = book.recipe(target)
        assert recipe is not None
        scores, unmodified = judge.score(target, recipe)
        for strength, mode, layers, figures in (
            (0.0, "none", "all", unmodified),
            (recipe.strength, recipe.mode, recipe.layers, scores),
        ):
            rows.append(
                {
                    "target": target,
                    "strength": strength,
                    "layers": layers,
                    "mode": mode,
                    **{
                        k: getattr(figures, k)
                        for k in ("success", "line_pass_rate", "nll", "distinct2", "n")
                    },
                    "fluent": figures.fluent,
                }
            )
    return rows


def _generation_of(book: RecipeBook) -> dict[str, Any]:
    """The generation settings the recipes were chosen with (those a config takes)."""
    known = {f for f in SteeringConfig.__dataclass_fields__ if f not in ("mode",)}
    stored = book.settings.get("generation") or {}
    return {k: v for k, v in stored.items() if k in known}
