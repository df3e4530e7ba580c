"""Share & export: the link that reproduces the view, and the neurons as files."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from langneurons.export import mask_bytes, neurons_csv, neurons_json

from ..state import PageContext, page_context, write_url


def _share_link(page: str) -> str:
    """The address of ``page`` with the current state (what a shared link reproduces)."""
    write_url()
    here = (getattr(st.context, "url", None) or "").split("?")[0].rstrip("/")
    root = here.rsplit("/", 1)[0] if here.endswith("/share") else here
    query = urlencode(st.query_params.to_dict())
    address = f"{root}/{page}" if page != "overview" else f"{root}/"
    return f"{address}?{query}" if query else address


def render(ctx: PageContext) -> None:
    selection = ctx.selection
    st.markdown(
        "**Share this view**: the link carries the model, languages, selection settings, the "
        "heatmap's zoom, the inspected neuron and the playground's prompt and intervention."
    )
    pages = st.session_state.get("_pages", {"overview": "Overview"})
    last = st.session_state.get("_last_page", "overview")
    names = list(pages)
    page = st.selectbox(
        "The link opens",
        names,
        index=names.index(last) if last in names else 0,
        format_func=lambda name: pages[name],
        key="share_page",
    )
    st.code(_share_link(page), language=None)
    st.write("Download the selected neurons with the current settings:")
    # on_click="ignore": a download does not rerun the page, which would give the other
    # buttons new files and leave the browser asking for ones that are gone.
    c1, c2, c3 = st.columns(3)
    c1.download_button(
        "neurons.json",
        neurons_json(selection, ctx.result.meta),
        "neurons.json",
        "application/json",
        key="dl_json",
        on_click="ignore",
    )
    c2.download_button(
        "neurons.csv",
        neurons_csv(selection, ctx.result.statistics),
        "neurons.csv",
        "text/csv",
        key="dl_csv",
        on_click="ignore",
    )
    c3.download_button(
        "activation_mask.pth (reference format)",
        lambda: mask_bytes(selection),
        "activation_mask.pth",
        "application/octet-stream",
        key="dl_pth",
        on_click="ignore",
    )
    st.caption(
        "Load the .pth with torch.load(path, weights_only=True). Figures have their own "
        "download buttons under each chart."
    )
    st.json(
        {
            "languages": selection.languages,
            "method": selection.method,
            "settings": selection.settings,
            "per_language": {c: selection.language_total(c) for c in selection.languages},
        }
    )


def page() -> None:
    """Draw the page from the context the app prepared for this run."""
    render(page_context())
