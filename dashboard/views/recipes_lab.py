"""The steering lab's recipes: find a recipe per target (mode, strength, layer band) on
the tuning half of the openings, see it reported on the held-out half beside the tuning
figures, see the grid of recipes tried as a picture, and use one in the playground in one
click.  A search's recipes are kept in the cache for this model and these neurons (a
run folder's own ``recipes.json``, from ``steer-eval --search``, comes first)."""

from __future__ import annotations

import dataclasses
import json

import streamlit as st

from langneurons import plots
from langneurons.errors import LangNeuronsError
from langneurons.langid import supported_languages
from langneurons.prompts import prompt_languages
from langneurons.recipe_search import search_recipes
from langneurons.recipes import RecipeBook, RecipeGrid
from langneurons.steering import SteeringConfig

from .. import widgets
from ..state import PageContext, classroom, long_job
from . import recipe_use


def _targets(ctx: PageContext) -> list[str]:
    """Languages a recipe can be found for: those of the run the identifier knows, that
    have openings of their own (the fluency reference), English left out (the prompts)."""
    known, own = set(supported_languages()), set(prompt_languages())
    return [c for c in ctx.selection.languages if c in known and c in own and c != "en"]


def _search(ctx: PageContext, targets: list[str], tokens: int) -> RecipeBook:
    grid = RecipeGrid()
    cells = len(targets) * (grid.size(ctx.lm.num_layers) + 1)
    text = f"Searching recipes for {', '.join(targets)} (at most {cells} cells)..."
    config = SteeringConfig(max_new_tokens=tokens, batch_size=16)
    with long_job(ctx.settings), widgets.event_bar(text) as on_progress:
        found = search_recipes(
            ctx.lm,
            dataclasses.replace(ctx.result.as_run(), neurons=ctx.selection.to_json()),
            targets,
            grid=grid,
            config=config,
            progress=on_progress,
        )
    return found


def _table(book: RecipeBook) -> None:
    rows = []
    for target, chosen in book.recipes.items():
        recipe, tuning, held = chosen.recipe, chosen.tuning, chosen.held_out
        base = chosen.unmodified_held_out
        rows.append(
            {
                "target": widgets.language_label(target),
                "recipe": recipe.describe() if recipe else "none helps",
                "tuning success": f"{tuning.success:.0%}" if tuning else "",
                "held-out success": f"{held.success:.0%}" if held else "",
                "held-out lines in target": f"{held.line_pass_rate:.0%}" if held else "",
                "held-out NLL": f"{held.nll:.2f} (max {held.max_nll:.2f})" if held else "",
                "fluent on held-out": ("yes" if held.fluent else "no") if held else "",
                "unmodified held-out success": f"{base.success:.0%}" if base else "",
            }
        )
    st.dataframe(rows, hide_index=True)
    tuning, held = book.settings.get("tuning", {}), book.settings.get("held_out", {})
    st.caption(
        widgets.plain(
            f"Chosen on {tuning.get('prompts', '?')} tuning prompts ({tuning.get('source', '')})"
            f" only; reported on {held.get('prompts', '?')} held-out ones "
            f"({held.get('source', '')}), never seen while choosing."
        )
    )


def render(ctx: PageContext) -> None:
    """The Recipes section of the steering lab."""
    st.subheader("Recipes: a setting that holds on new prompts")
    found, problem = recipe_use.book(ctx)
    if problem is not None:
        widgets.warning(f"The stored recipes are not used: {problem}")
    choices = _targets(ctx)
    limits = classroom()
    most = limits.max_ablation_languages if limits else len(choices)
    cap = min(30, limits.max_new_tokens) if limits else 30
    st.session_state.setdefault("rc_targets", [c for c in ("ja", "fr") if c in choices][:most])
    st.session_state["rc_targets"] = [c for c in st.session_state["rc_targets"] if c in choices]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    targets = c1.multiselect(
        "Find recipes for",
        choices,
        key="rc_targets",
        format_func=widgets.language_label,
        max_selections=most or None,
        help="Each target tries up to "
        f"{RecipeGrid().size(ctx.lm.num_layers)} recipes (modes, strengths, layer bands) on "
        "the tuning openings, a few seconds each on a CPU; cached after.",
    )
    if c2.button("Find recipes", key="rc_go", disabled=not targets, width="stretch"):
        try:
            book = _search(ctx, list(targets), cap)
        except LangNeuronsError as exc:
            widgets.error(exc)
            return
        if found is not None:
            book, _ = found.merged(book)
        try:
            book.save_to_cache(ctx.lm.fingerprint)
        except OSError as exc:
            widgets.warning(f"The recipes could not be kept in the cache ({exc}).")
        found = book
    if found is None:
        st.info("No recipe found yet for these neurons: choose targets and find them.")
        return
    _table(found)
    with_recipe = [t for t in found.recipes if found.recipe(t) is not None]
    shown = st.selectbox(
        "Recipes tried for",
        list(found.recipes),
        key="rc_grid_of",
        format_func=widgets.language_label,
    )
    if any(row.get("target") == shown for row in found.grid):
        widgets.plot(plots.recipe_grid(found, str(shown)), "recipe_grid")
    c1, c2 = st.columns([1, 1])
    if shown in with_recipe:
        recipe = found.recipe(str(shown))
        assert recipe is not None
        if c1.button(f"Use {recipe.describe()} in the playground", key="rc_use"):
            key = (str(shown), found.settings.get("neurons"))
            recipe_use.use(recipe, str(shown), ctx.lm.num_layers, key, recipe_use.guard_of(found))
            st.switch_page("routes/playground.py")
    c2.download_button(
        "recipes.json",
        json.dumps(found.to_json(), ensure_ascii=False, indent=2),
        file_name="recipes.json",
        mime="application/json",
        key="rc_download",
        on_click="ignore",
    )
