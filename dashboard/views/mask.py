"""Published mask: a neuron mask file in the reference format (for example one the LAPE
authors released for LLaMA-2 7B) shown without its model: neurons per layer and
language, where they sit, and how much languages share.  Nothing here loads a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from langneurons import plots
from langneurons.corpus import parse_languages
from langneurons.errors import LangNeuronsError
from langneurons.maskfile import MaskFile, parse_config, read_mask_file

from .. import widgets
from ..state import classroom

# The order of the languages in the authors' released masks (LLaMA-2 7B and 13B; the
# other models' files have six, without Japanese).
PAPER_LANGUAGES = "en,zh,fr,es,vi,id,ja"
UPLOAD, PATH = "Upload a .pth file", "A file on this server"


def _source() -> tuple[bytes | str | None, str]:
    """The mask file: uploaded, or a path (alone on one's machine) or a file chosen under
    a classroom server's run roots."""
    limits = classroom()
    choice = st.radio("Mask", [UPLOAD, PATH], key="mk_source", horizontal=True)
    if choice == UPLOAD:
        file = st.file_uploader("Mask file (.pth)", type=["pth", "pt"], key="mk_file")
        return (file.getvalue(), file.name) if file is not None else (None, "")
    if limits is None:
        path = st.text_input("Path of the mask file", key="mk_path", placeholder="llama-2-7b.pth")
        return (path.strip() or None), path.strip()
    files = [
        str(found)
        for folder in limits.folders_under(limits.run_roots)
        for found in sorted(Path(folder).glob("*.pth"))
    ]
    if not files:
        st.info("No .pth file under this server's run roots: upload one instead.")
        return None, ""
    picked = str(st.selectbox("Mask file", files, key="mk_pick"))
    return picked, picked


def _config() -> dict[str, Any] | None:
    file = st.file_uploader(
        "The model's config.json (optional: gives the neurons per layer and checks the mask)",
        type=["json"],
        key="mk_config",
    )
    if file is None:
        return None
    return parse_config(file.getvalue(), str(file.name))


def _show(mask: MaskFile) -> None:
    summary = mask.summary()
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Languages", len(mask.languages))
    c2.metric("Layers", mask.num_layers)
    c3.metric(
        "Neurons per layer",
        f"{mask.num_neurons:,}" if mask.width_known else f"≥ {mask.num_neurons:,}",
        help="From the config.json" if mask.width_known else "The largest index in the mask",
    )
    c4.metric("Distinct neurons", f"{mask.distinct_neurons:,}")
    if summary["selected_share"] is not None:
        st.caption(f"{summary['selected_share']:.2%} of all the model's MLP neurons.")
    left, right = st.columns(2)
    with left:
        widgets.plot(plots.layer_distribution(mask), "mask_layers")
    with right:
        title = "Overlap between languages (Jaccard)"
        widgets.plot(plots.overlap_heatmap(mask.overlap(), title=title), "mask_overlap")
    widgets.plot(plots.counts_heatmap(mask), "mask_counts")
    st.dataframe(
        [
            {"language": widgets.language_label(c), "neurons": n}
            for c, n in summary["neurons"].items()
        ],
        hide_index=True,
    )
    st.info(
        "What needs the model is not shown here: the playground, the trace, the ablation "
        "matrix and steering. To use them, import the mask for a model of this shape: "
        "`langneurons import-mask FILE --languages ... --model MODEL --out DIR`, then open "
        "the run folder."
    )


def render() -> None:
    st.markdown(
        "Open a neuron mask in the reference format (a list over languages of lists over "
        "layers of neuron indices, read without running any code in it) and see where its "
        "neurons sit, **without the model**."
    )
    try:
        source, name = _source()
        st.session_state.setdefault("mk_langs", PAPER_LANGUAGES)
        codes = st.text_input(
            "Its languages, in the file's order",
            key="mk_langs",
            help="The authors' released masks: en,zh,fr,es,vi,id,ja for LLaMA-2 7B and 13B; "
            "six languages (without ja) for the other models.",
        )
        config = _config()
        if source is None:
            st.info("Choose a mask file to open.")
            return
        mask = read_mask_file(source, parse_languages(codes), config, name=name)
    except LangNeuronsError as exc:
        widgets.error(exc)
        return
    _show(mask)


def page() -> None:
    """Draw the page (it needs no model and no statistics)."""
    render()
