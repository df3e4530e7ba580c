"""The stored steering recipe in the playground: the default way to steer towards a
language when a search found one for the neurons shown (the run folder's
``recipes.json``, or the steering lab's search kept in the cache), said in words beside
the controls, with a button that goes back to it after the sliders moved.  The steering
lab's "Use in the playground" puts a recipe here the same way."""

from __future__ import annotations

from typing import Any

import streamlit as st

from langneurons.errors import LangNeuronsError
from langneurons.recipes import Recipe, RecipeBook
from langneurons.steering import STEER_MODES

from .. import widgets
from ..state import PageContext, recipe_book, remember

HOW = {"set": "set to the mean", "add": "add the mean", "scale": "amplify (x 1 + strength)"}
"""The steering modes in words (the playground's and the steering lab's choice)."""
assert set(HOW) == set(STEER_MODES)
MAX_STRENGTH = 8.0


def book(ctx: PageContext) -> tuple[RecipeBook | None, str | None]:
    """The recipes for the neurons shown, and an error line when the run's file is
    damaged (the page goes on without them)."""
    try:
        return recipe_book(ctx), None
    except LangNeuronsError as exc:
        return None, str(exc)


def settings_of(recipe: Recipe, num_layers: int) -> dict[str, Any]:
    """The playground's controls that make ``recipe``."""
    low, high = 0, num_layers - 1
    if recipe.band is not None:
        first, last = (int(part) for part in recipe.band.split("-"))
        low, high = max(0, min(first, high)), max(0, min(last, high))
    return {
        "pg_mode": "Steer",
        "pg_how": recipe.mode,
        "pg_strength": min(max(float(recipe.strength), 0.0), MAX_STRENGTH),
        "pg_layers": (low, high),
    }


def use(recipe: Recipe, target: str, num_layers: int, key: Any, guard: int = 0) -> None:
    """Put ``recipe`` into the playground's controls (before they are drawn, or from a
    button's callback), and remember it was applied for ``key`` (target and neurons).
    ``guard`` is the no-repeated-n-gram setting the recipe was found with: switched on
    when the playground has it off (steered text repeats itself without it)."""
    state = st.session_state
    wanted = {**settings_of(recipe, num_layers), "pg_target": target}
    if guard and not state.get("pg_gen_no_repeat_ngram"):
        wanted["pg_gen_no_repeat_ngram"] = guard
    for name, value in wanted.items():
        state[name] = value
        remember(name, value)
    state["pg_recipe_for"] = key


def guard_of(found: RecipeBook) -> int:
    """The no-repeated-n-gram length the book's recipes were found with (0: none)."""
    return int((found.settings.get("generation") or {}).get("no_repeat_ngram") or 0)


def settle(ctx: PageContext, found: RecipeBook | None) -> None:
    """Steering towards a language with a stored recipe starts from that recipe: once per
    target (and neurons), so the user's own changes afterwards stay."""
    state = st.session_state
    if found is None or state.get("pg_mode") != "Steer":
        return
    target = str(state.get("pg_target"))
    recipe = found.recipe(target)
    key = (target, found.settings.get("neurons"))
    if recipe is not None and state.get("pg_recipe_for") != key:
        use(recipe, target, ctx.lm.num_layers, key, guard_of(found))


def note(ctx: PageContext, found: RecipeBook | None, error: str | None, where: Any) -> None:
    """One line under the steering controls: the recipe in use, or that the settings are
    the user's own (with a button back to the recipe), or that there is none yet."""
    state = st.session_state
    if error is not None:
        widgets.warning(f"The stored recipes are not used: {error}", where)
        return
    target = str(state.get("pg_target"))
    recipe = found.recipe(target) if found is not None else None
    if found is None or recipe is None:
        where.caption(
            widgets.plain(f"No stored recipe for {target}: strength and layers are yours.")
            + " Find one in the **Steering lab** (Recipes)."
        )
        return
    chosen = found.recipes[target]
    held = chosen.held_out
    figures = f"; held-out success {held.success:.2f} on {held.n} prompts" if held else ""
    current = {k: state.get(k) for k in ("pg_how", "pg_strength", "pg_layers")}
    wanted = settings_of(recipe, ctx.lm.num_layers)
    if all(current[k] == wanted[k] for k in current):
        where.caption(widgets.plain(f"Stored recipe for {target}: {recipe.describe()}{figures}."))
        return
    left, right = where.columns([4, 1], vertical_alignment="center")
    left.caption(
        widgets.plain(
            f"Your own settings. The stored recipe for {target} is {recipe.describe()}{figures}."
        )
    )
    key = (target, found.settings.get("neurons"))
    right.button(
        "Use the recipe",
        key="pg_use_recipe",
        on_click=use,
        args=(recipe, target, ctx.lm.num_layers, key, guard_of(found)),
    )
