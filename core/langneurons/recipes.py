"""Steering recipes: how to steer towards a language, chosen on some prompts and
reported on others.

A **recipe** is a mode, a strength and a layer band:

- ``set``: the target's neurons take ``strength x`` their mean activation on the target;
- ``add``: ``strength x`` that mean is added to what they compute;
- ``scale``: what they compute is multiplied by ``1 + strength``;
- the band (``"all"`` or ``"A-B"``) limits the neurons steered (and those of the prompt's
  own language switched off) to those layers.

:func:`~langneurons.recipe_search.search_recipes` explores a small grid of recipes per
target on **tuning** prompts only (the first half of the embedded openings,
``assets/prompts/<code>.txt``, above their ``# held-out`` line), stopping each strength
ladder early where it breaks fluency or already succeeds every time, keeps the recipes
within the fluency bar of :mod:`langneurons.steering_cells`, and of those within one
prompt of the best success keeps the one with the widest fluency margin
(:func:`~langneurons.recipe_search.choose`).  Only then is the chosen
recipe run on the **held-out** prompts (the other half, or a user's own file), and both
sets of figures are reported side by side: a recipe that only works on the prompts it
was chosen on shows it.

The chosen recipes are stored in the run folder as ``recipes.json``
(:data:`RECIPES_FILE`, format below), read back with :func:`read_recipes` (checked field
by field), and used by default wherever a user steers without naming a strength.

``recipes.json``::

    {"format": 1, "written_by": "langneurons", "model": "gemma-3-270m",
     "neurons": "<digest of the run's neuron sets>",
     "generation": {"max_new_tokens": 30, ...},
     "tuning": {"source": "embedded openings (en), tuning half", "prompts": 11},
     "held_out": {"source": "embedded openings (en), held-out half", "prompts": 11},
     "recipes": {"ja": {"mode": "set", "strength": 2.0, "layers": "9-17",
                        "tuning": {"success": 1.0, "line_pass_rate": 0.9, "nll": 3.5,
                                   "distinct2": 0.9, "n": 11, "max_nll": 4.1},
                        "held_out": {... the same ..., "fluent": true}}},
     "grid": [{"target": "ja", "mode": "set", "strength": 0.5, "layers": "all",
               "success": 0.3, ..., "fluent": true}, ...]}

A target for which no recipe beats the unmodified model by
:data:`~langneurons.steering_cells.MIN_GAIN` while keeping fluency has ``null``.
"""

from __future__ import annotations

__all__ = [
    "RECIPES_FILE",
    "ChosenRecipe",
    "Recipe",
    "RecipeBook",
    "RecipeGrid",
    "RecipeScores",
    "cache_path",
    "find_recipes",
    "neurons_digest",
    "read_recipes",
    "recipes_of",
    "rounded",
]

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import LangNeuronsError, ResultsError
from .results import RECIPES_FILE, Run
from .steering import STEER_MODES
from .steering_cells import FluencyBar, SteeringCell

RECIPES_FORMAT = 1
WRITTEN_BY = "langneurons"
_BAND = re.compile(r"^(all|\d{1,4}-\d{1,4})$")


@dataclass(frozen=True)
class Recipe:
    """How to steer towards a language: ``mode`` (``set``, ``add`` or ``scale``),
    ``strength`` (0 or more: x the mean activation, or the added share for ``scale``) and
    ``layers`` (``"all"`` or ``"A-B"``)."""

    mode: str = "set"
    strength: float = 1.0
    layers: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in STEER_MODES:
            raise LangNeuronsError(
                f"Steering mode {self.mode!r} is not one of {', '.join(STEER_MODES)}."
            )
        if isinstance(self.strength, bool) or not isinstance(self.strength, int | float):
            raise LangNeuronsError(f"A recipe's strength must be a number, not {self.strength!r}.")
        if not math.isfinite(self.strength) or self.strength < 0:
            raise LangNeuronsError(f"A recipe's strength is 0 or more, not {self.strength}.")
        if not isinstance(self.layers, str) or not _BAND.match(self.layers):
            raise LangNeuronsError(
                f"A recipe's layers are 'all' or a range 'A-B', not {self.layers!r}."
            )

    @property
    def band(self) -> str | None:
        """The layer range as the steering functions take it (``None``: all layers)."""
        return None if self.layers == "all" else self.layers

    def describe(self) -> str:
        """``set x2 in layers 9-17``: the recipe in a few words."""
        where = "all layers" if self.layers == "all" else f"layers {self.layers}"
        return f"{self.mode} x{self.strength:g} in {where}"

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "strength": float(self.strength), "layers": self.layers}


@dataclass(frozen=True)
class RecipeGrid:
    """The recipes :func:`search_recipes` may try: every mode, strength and layer band
    (each band runs from a share of the model's depth to its last layer)."""

    modes: tuple[str, ...] = STEER_MODES
    strengths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    band_starts: tuple[float, ...] = (0.0, 1 / 3, 1 / 2, 2 / 3)
    """Where each band starts, as a share of the layers (0: all layers)."""

    def bands(self, num_layers: int) -> list[str]:
        """The layer bands for a model of ``num_layers`` layers, deepest last."""
        found: list[str] = []
        for start in self.band_starts:
            first = min(num_layers - 1, round(start * num_layers))
            name = "all" if first == 0 else f"{first}-{num_layers - 1}"
            if name not in found:
                found.append(name)
        return found

    def size(self, num_layers: int) -> int:
        return len(self.modes) * len(self.strengths) * len(self.bands(num_layers))


@dataclass(frozen=True)
class RecipeScores:
    """A recipe's (or the unmodified model's) figures on one set of prompts, with the
    fluency bar of that set: ``fluent`` when ``nll <= max_nll`` and ``distinct2 >=
    min_distinct2``."""

    success: float
    line_pass_rate: float
    nll: float
    distinct2: float
    n: int
    max_nll: float
    min_distinct2: float

    @property
    def fluent(self) -> bool:
        return self.nll <= self.max_nll and self.distinct2 >= self.min_distinct2

    @classmethod
    def of(cls, cell: SteeringCell, bar: FluencyBar) -> RecipeScores:
        return cls(
            cell.success,
            cell.line_pass_rate,
            cell.nll,
            cell.distinct2,
            cell.n,
            bar.max_nll,
            bar.min_distinct2,
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fluent": self.fluent}


def rounded(document: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in document.items()}


@dataclass
class ChosenRecipe:
    """One target's outcome: its recipe (``None`` when none helps), the recipe's and the
    unmodified model's figures on the tuning prompts and on the held-out ones."""

    target: str
    recipe: Recipe | None
    tuning: RecipeScores | None = None
    held_out: RecipeScores | None = None
    unmodified_tuning: RecipeScores | None = None
    unmodified_held_out: RecipeScores | None = None

    def to_json(self) -> dict[str, Any] | None:
        if self.recipe is None:
            return None
        document: dict[str, Any] = self.recipe.to_json()
        for name in ("tuning", "held_out", "unmodified_tuning", "unmodified_held_out"):
            scores = getattr(self, name)
            if scores is not None:
                document[name] = rounded(scores.to_json())
        return document


@dataclass
class RecipeBook:
    """Recipes per target and how they were found (see the module's docstring for the
    JSON).  ``grid`` holds one row per recipe tried on the tuning prompts."""

    recipes: dict[str, ChosenRecipe]
    settings: dict[str, Any] = field(default_factory=dict)
    grid: list[dict[str, Any]] = field(default_factory=list)

    def recipe(self, target: str) -> Recipe | None:
        """The stored recipe for ``target``, or ``None``."""
        chosen = self.recipes.get(target)
        return chosen.recipe if chosen is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECIPES_FORMAT,
            "written_by": WRITTEN_BY,
            **self.settings,
            "recipes": {t: c.to_json() for t, c in self.recipes.items()},
            "grid": self.grid,
        }

    def to_frame(self) -> Any:
        """One row per target: the recipe, then its tuning and held-out figures side by
        side (``tuning_success``, ``held_out_success``, ...), and the unmodified model's
        held-out success (a pandas DataFrame)."""
        import pandas as pd

        rows = []
        for target, chosen in self.recipes.items():
            row: dict[str, Any] = {"target": target}
            recipe = chosen.recipe
            row.update(
                mode=recipe.mode if recipe else None,
                strength=recipe.strength if recipe else None,
                layers=recipe.layers if recipe else None,
            )
            for side in ("tuning", "held_out"):
                scores = getattr(chosen, side)
                for key in ("success", "line_pass_rate", "nll", "distinct2", "n"):
                    row[f"{side}_{key}"] = getattr(scores, key) if scores else None
                row[f"{side}_fluent"] = scores.fluent if scores else None
            unmodified = chosen.unmodified_held_out
            row["unmodified_held_out_success"] = unmodified.success if unmodified else None
            rows.append(row)
        return pd.DataFrame(rows)

    def grid_frame(self) -> Any:
        """The recipes tried, one row each (target, mode, strength, layers, the tuning
        figures, fluent, and ``chosen``; a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.grid)

    def merged(self, newer: RecipeBook) -> tuple[RecipeBook, list[str]]:
        """This book with ``newer``'s targets found again; ``(book, dropped)``.  Recipes
        found with other settings (neurons, generation, prompts) are not kept beside
        ``newer``'s, whose figures would not compare: their targets are ``dropped``."""
        if {k: v for k, v in self.settings.items() if k != "grid"} != {
            k: v for k, v in newer.settings.items() if k != "grid"
        }:
            dropped = [t for t in self.recipes if t not in newer.recipes]
            return newer, dropped
        recipes = {**self.recipes, **newer.recipes}
        grid = [row for row in self.grid if row.get("target") not in newer.recipes]
        return RecipeBook(recipes, newer.settings, grid + newer.grid), []

    def save_to_cache(self, fingerprint: str) -> Path:
        """Keep the book in the cache for the model ``fingerprint`` and its neurons (see
        :func:`find_recipes`)."""
        from .atomic import write_json_file

        path = cache_dir_path(fingerprint, self.settings.get("neurons", ""))
        write_json_file(path, {**self.to_json(), "written_by": WRITTEN_BY})
        return path

    def save(self, folder: str | Path) -> Path:
        """Write ``recipes.json`` into the run folder ``folder`` (replacing the one we
        wrote before, never a file of someone else's)."""
        from .workflows import write_json_atomic

        path = Path(folder) / RECIPES_FILE
        write_json_atomic(path, self.to_json())
        return path


def cache_path(
    fingerprint: str, masks: Sequence[Sequence[torch.Tensor]], languages: Sequence[str]
) -> Path:
    """Where recipes found without a run folder are kept (the dashboard's own statistics):
    the cache, keyed by the model's weights and the neuron sets."""
    return cache_dir_path(fingerprint, neurons_digest(masks, languages))


def cache_dir_path(fingerprint: str, digest: str) -> Path:
    """The cache file of the recipes of model ``fingerprint`` for neurons ``digest``."""
    from .paths import cache_dir

    return cache_dir() / "recipes" / f"{fingerprint[:16]}-{digest}.json"


def find_recipes(
    fingerprint: str,
    masks: Sequence[Sequence[torch.Tensor]],
    languages: Sequence[str],
    run: Run | None = None,
) -> RecipeBook | None:
    """The recipes for these neurons: the run folder's ``recipes.json`` when ``run`` has
    one, else those kept in the cache for this model and these neurons, else ``None``.
    A damaged cache entry counts as none (it is found again by the next search); the
    run's recipes count only while these are the run's own neurons (not a reselection)."""
    digest = neurons_digest(masks, languages)
    if run is not None:
        found = recipes_of(run)
        if found is not None and found.settings.get("neurons") == digest:
            return found
    path = cache_path(fingerprint, masks, languages)
    if not path.is_file():
        return None
    try:
        book = read_recipes(path)
    except ResultsError:
        return None
    return book if book.settings.get("neurons") == digest else None


def _scores(document: Any, where: str) -> RecipeScores | None:
    if document is None:
        return None
    if not isinstance(document, Mapping):
        raise ResultsError(f"{where} is not an object of figures.")
    values: dict[str, Any] = {}
    for key in ("success", "line_pass_rate", "nll", "distinct2", "max_nll", "min_distinct2"):
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ResultsError(f"{where}: {key!r} is {value!r}, not a number.")
        if key not in ("nll", "max_nll") and not 0 <= value <= 1:
            raise ResultsError(f"{where}: {key!r} is {value}, not a share between 0 and 1.")
        values[key] = float(value)
    n = document.get("n")
    if type(n) is not int or n < 0:
        raise ResultsError(f"{where}: 'n' is {n!r}, not a count of prompts.")
    return RecipeScores(n=n, **values)


def recipes_of(run: Run) -> RecipeBook | None:
    """The recipes stored in ``run``'s folder (checked, and refused when they were found
    for other neurons), or ``None`` when it holds none."""
    path = run.path / RECIPES_FILE
    if not path.is_file():
        return None
    book = read_recipes(path)
    if book.settings.get("neurons") != neurons_digest(run.masks, run.languages):
        raise ResultsError(
            f"{str(path)!r} holds recipes found for other neurons (another run's file, or an "
            "edited one). Search again with `langneurons steer-eval --run "
            f"{run.path} --targets ... --search`, or remove it."
        )
    return book


def read_recipes(path: str | Path) -> RecipeBook:
    """Read ``recipes.json`` (a path, or the run folder holding it), checked field by
    field; a ``ResultsError`` names the file, the field and what to do."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / RECIPES_FILE
    again = "Search again with `langneurons steer-eval --run DIR --targets ... --search`."
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{str(path)!r} does not exist. {again}") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise ResultsError(f"{str(path)!r} is unreadable ({reason}). {again}") from exc
    where = repr(str(path))
    if not isinstance(document, dict):
        raise ResultsError(f"{where} is not a JSON object. {again}")
    if document.get("format") != RECIPES_FORMAT:
        raise ResultsError(
            f"{where}: 'format' is {document.get('format')!r}; this version reads format "
            f"{RECIPES_FORMAT}. {again}"
        )
    recipes = document.get("recipes")
    if not isinstance(recipes, dict):
        raise ResultsError(f"{where}: 'recipes' is not an object by language. {again}")
    from .corpus import parse_languages

    try:
        parse_languages(list(recipes))
    except LangNeuronsError as exc:
        raise ResultsError(f"{where}: 'recipes' is keyed by something else: {exc}") from exc
    chosen: dict[str, ChosenRecipe] = {}
    for target, entry in recipes.items():
        field_name = f"{where}: recipes[{target!r}]"
        if entry is None:
            chosen[target] = ChosenRecipe(target, None)
            continue
        if not isinstance(entry, dict):
            raise ResultsError(f"{field_name} is not an object. {again}")
        try:
            recipe = Recipe(
                entry.get("mode"),  # type: ignore[arg-type]
                entry.get("strength"),  # type: ignore[arg-type]
                entry.get("layers"),  # type: ignore[arg-type]
            )
        except LangNeuronsError as exc:
            raise ResultsError(f"{field_name}: {exc} {again}") from exc
        chosen[target] = ChosenRecipe(
            target,
            recipe,
            _scores(entry.get("tuning"), f"{field_name}['tuning']"),
            _scores(entry.get("held_out"), f"{field_name}['held_out']"),
            _scores(entry.get("unmodified_tuning"), f"{field_name}['unmodified_tuning']"),
            _scores(entry.get("unmodified_held_out"), f"{field_name}['unmodified_held_out']"),
        )
    grid = document.get("grid", [])
    if not isinstance(grid, list) or not all(isinstance(row, dict) for row in grid):
        raise ResultsError(f"{where}: 'grid' is not a list of rows. {again}")
    settings = {
        k: v for k, v in document.items() if k not in ("format", "written_by", "recipes", "grid")
    }
    return RecipeBook(chosen, settings, grid)


def neurons_digest(masks: Sequence[Sequence[torch.Tensor]], languages: Sequence[str]) -> str:
    """A short digest of a run's neuron sets: recipes belong to the neurons they steer."""
    digest = hashlib.sha256("|".join(languages).encode())
    for per_layer in masks:
        for idx in per_layer:
            digest.update(len(idx).to_bytes(4, "little"))
            digest.update(torch.as_tensor(idx, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]
