"""One function per dashboard view; each draws widgets and calls ``langneurons``."""

from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

import numpy as np
import streamlit as st
import torch

from dashboard import charts
from dashboard.state import Settings, model_lock, write_url
from langneurons import analysis
from langneurons.corpus import language_name, load_corpus
from langneurons.errors import LangNeuronsError
from langneurons.evaluation import nll_matrix_cached
from langneurons.generation import GenerationConfig, stream
from langneurons.interventions import (
    Intervention,
    deactivate,
    language_neurons,
    validate,
)
from langneurons.langid import detect_language
from langneurons.models import LoadedModel
from langneurons.pipeline import ComputeResult
from langneurons.results import corpus_label
from langneurons.selection import Selection
from langneurons.workflows import NothingToChange, intervention_for

EXAMPLE_PROMPTS = {
    "en": "The weather today is",
    "fr": "La Déclaration universelle des droits de l'homme affirme que",
    "de": "Das Wetter heute ist",
    "es": "El tiempo hoy está",
    "it": "Il tempo oggi è",
    "pt": "O tempo hoje está",
    "ru": "Сегодня погода",
    "zh": "今天的天气",
    "ja": "今日の天気は",
    "ko": "오늘 날씨는",
    "ar": "الطقس اليوم",
    "hi": "आज का मौसम",
}


def _plot(fig: Any, key: str) -> None:
    st.plotly_chart(fig, use_container_width=True, key=key)
    st.download_button(
        "Download figure (HTML)",
        # Made only when clicked (not on every rerun), with plotly.js inside: opens offline.
        lambda: fig.to_html(include_plotlyjs=True),
        file_name=f"{key}.html",
        mime="text/html",
        key=f"dl_{key}",
    )


def overview(lm: LoadedModel, result: ComputeResult, selection: Selection) -> None:
    stats = result.statistics
    counts = selection.counts().numpy()
    languages = selection.languages
    st.markdown(
        f"**{lm.name}** · {lm.adapter.name} · {lm.num_layers} layers x {lm.num_neurons} neurons "
        f"· {lm.dtype} on {lm.device} · corpus {corpus_label(result.meta)}"
    )
    cols = st.columns(5)
    cols[0].metric("Languages", len(languages))
    cols[1].metric("Layers x neurons", f"{lm.num_layers} x {lm.num_neurons}")
    cols[2].metric(
        "Language neurons",
        selection.union_size(),
        f"{100 * selection.union_size() / (lm.num_layers * lm.num_neurons):.2f}% of all",
        delta_color="off",
    )
    cols[3].metric("Single-language", f"{100 * analysis.single_language_share(selection):.0f}%")
    cols[4].metric("Tokens counted", f"{int(stats.tokens.sum()):,}")
    left, right = st.columns(2)
    with left:
        _plot(charts.counts_heatmap(counts, languages), "overview_counts")
    with right:
        _plot(charts.stacked_bars(counts, languages), "overview_bars")
    shared, jaccard = analysis.overlap(selection)
    left, right = st.columns(2)
    with left:
        _plot(
            charts.overlap_heatmap(jaccard, languages, "Overlap (Jaccard index)"),
            "overview_jaccard",
        )
    with right:
        _plot(
            charts.overlap_heatmap(shared, languages, "Shared neurons (counts)", fmt="d"),
            "overview_shared",
        )
    st.caption(
        "LAPE thresholds are in the sidebar: moving them reselects from the cached statistics "
        f"(filter value {selection.thresholds.get('filter_value', 0):.3f}, activation bar "
        f"{selection.thresholds.get('activation_bar', 0):.3f})."
    )


def heatmaps(lm: LoadedModel, result: ComputeResult, selection: Selection) -> None:
    stats = result.statistics
    languages = stats.languages
    c1, c2, c3 = st.columns([2, 2, 3])
    metric = c1.radio(
        "Show", ["Activation probability", "LAPE entropy"], horizontal=True, key="hm_metric"
    )
    default_lang = st.session_state.get("url_lang_view") or languages[0]
    lang = c2.selectbox(
        "Language",
        languages,
        index=languages.index(default_lang) if default_lang in languages else 0,
        format_func=lambda c: f"{c} ({language_name(c)})",
        key="hm_lang",
        disabled=metric == "LAPE entropy",
    )
    n = lm.num_neurons
    lo, hi = c3.slider("Neurons (zoom)", 0, n, (0, n), key="hm_range")
    if hi - lo < 1:
        st.warning("Choose a range of at least one neuron.")
        return
    k = languages.index(lang)
    if metric == "Activation probability":
        full = stats.probabilities()[..., k].numpy()
        title, bar, scale, marks_lang = f"Activation probability on {lang}", "p", "Viridis", k
    else:
        entropy = selection.scores["entropy"].numpy().copy()
        entropy[~np.isfinite(entropy)] = np.nan
        full, title, bar, scale, marks_lang = (
            entropy,
            "LAPE entropy (blank: filtered out)",
            "entropy",
            "Viridis_r",
            None,
        )
    window = full[:, lo:hi]
    pooled, pool = analysis.pool_columns(window, max_columns=2048)
    mask = analysis.membership_mask(selection, marks_lang, (lm.num_layers, n))[:, lo:hi]
    rows, cols_idx = np.nonzero(mask)
    marks = (rows, lo + cols_idx)
    _plot(charts.neuron_heatmap(pooled, title, bar, lo, pool, marks, scale), "heatmap")
    write_url(lang_view=lang)

    st.subheader("Selected neurons")
    records = analysis.neuron_records(selection, stats)
    if records:
        st.session_state["hm_records"] = records
        event = st.dataframe(
            records,
            use_container_width=True,
            height=300,
            hide_index=True,
            key="hm_table",
            on_select=_inspect_row,
            selection_mode="single-row",
        )
        if not event.selection.rows:
            st.session_state.pop("hm_handled", None)  # a fresh table: any row may be picked
    else:
        st.info("No neurons are selected with these thresholds.")
    st.caption(
        "Sort the table by clicking a column header; select a row, or give a layer and "
        "neuron below, to inspect it."
    )
    c1, c2, c3 = st.columns([1, 1, 2])
    default_layer, default_neuron = _current_neuron(lm, selection)
    layer = c1.number_input("Layer", 0, lm.num_layers - 1, default_layer, key="pick_layer")
    neuron = c2.number_input("Neuron", 0, n - 1, default_neuron, key="pick_neuron")
    c3.button("Inspect this neuron", key="pick_go", on_click=_inspect, args=(layer, neuron))


def _inspect_row() -> None:
    """Table selection callback: open the selected row's neuron in the inspector."""
    rows = st.session_state["hm_table"].selection.rows
    if rows:
        record = st.session_state["hm_records"][rows[0]]
        picked = (record["layer"], record["neuron"])
        # The selection outlives the table (the browser sends it again on later reruns):
        # act once per new selection, or the next view would bounce back here.
        if st.session_state.get("hm_handled") != picked:
            st.session_state["hm_handled"] = picked
            _inspect(*picked)


def _inspect(layer: int, neuron: int) -> None:
    """Button callback (runs before the rerun, so it may set widget state)."""
    st.session_state["insp_layer"], st.session_state["insp_neuron"] = int(layer), int(neuron)
    st.session_state["nav"] = "Neuron inspector"


def _current_neuron(lm: LoadedModel, selection: Selection) -> tuple[int, int]:
    """The neuron the URL or an earlier pick names, else the most language-specific
    selected neuron (lowest LAPE entropy), clamped to the model."""
    layer = int(st.session_state.get("url_layer", -1))
    neuron = int(st.session_state.get("url_neuron", -1))
    if layer < 0 or neuron < 0:
        mask = analysis.membership_mask(selection, None, (lm.num_layers, lm.num_neurons))
        scores = selection.scores.get("entropy")
        if mask.any():
            if scores is not None:
                ranked = np.where(mask, scores.numpy(), np.inf)
                layer, neuron = np.unravel_index(int(np.argmin(ranked)), mask.shape)
            else:
                layer, neuron = np.argwhere(mask)[0]
        else:
            layer, neuron = lm.num_layers - 1, 0
    return min(max(int(layer), 0), lm.num_layers - 1), min(max(int(neuron), 0), lm.num_neurons - 1)


@st.cache_resource(show_spinner=False, max_entries=8)
def _layer_activations(
    _lm: LoadedModel, fingerprint: str, corpus_name: str, languages: tuple[str, ...], layer: int
) -> list:
    corpus = load_corpus(corpus_name, list(languages))
    return analysis.layer_activations(_lm, corpus, languages, layer, paragraphs_per_language=6)


def _shade(tokens: list[str], values: list[float], scale: float) -> str:
    spans = []
    for token, value in zip(tokens, values, strict=True):
        alpha = max(0.0, min(1.0, value / scale)) if scale > 0 else 0.0
        spans.append(
            f'<span title="{value:.3f}" style="background: rgba(232,89,12,{alpha:.2f});'
            f'border-radius:3px">{html.escape(token)}</span>'
        )
    return "".join(spans)


def inspector(
    lm: LoadedModel, result: ComputeResult, selection: Selection, settings: Settings
) -> None:
    stats = result.statistics
    c1, c2 = st.columns(2)
    default_layer, default_neuron = _current_neuron(lm, selection)
    st.session_state.setdefault("insp_layer", default_layer)
    st.session_state.setdefault("insp_neuron", default_neuron)
    layer = int(c1.number_input("Layer", 0, lm.num_layers - 1, key="insp_layer"))
    neuron = int(c2.number_input("Neuron", 0, lm.num_neurons - 1, key="insp_neuron"))
    st.session_state["url_layer"], st.session_state["url_neuron"] = layer, neuron
    write_url(layer=layer, neuron=neuron)
    owners = [
        selection.languages[k]
        for k, m in enumerate(selection.masks)
        if neuron in set(m[layer].tolist())
    ]
    st.markdown(
        f"**Neuron {layer}:{neuron}** — "
        + (f"selected for **{', '.join(owners)}**" if owners else "not selected")
    )
    profile = analysis.neuron_profile(stats, layer, neuron)
    left, right = st.columns(2)
    with left:
        _plot(
            charts.language_bars(
                {c: v["probability"] for c, v in profile.items()},
                "Activation probability",
                "p(value > 0)",
            ),
            "insp_prob",
        )
    with right:
        _plot(
            charts.language_bars(
                {c: v["mean"] for c, v in profile.items()}, "Mean activation", "mean value"
            ),
            "insp_mean",
        )
    left, right = st.columns([3, 2])
    with left:
        st.subheader("Where it fires most")
        with st.spinner("Running the model over the first paragraphs of each language..."):
            activations = _layer_activations(
                lm, lm.fingerprint, settings.corpus, tuple(stats.languages), layer
            )
        passages = analysis.top_passages(activations, neuron, k=5)
        scale = max((p.peak for p in passages), default=1.0)
        for passage in passages:
            st.markdown(
                f"<div style='margin-bottom:.6em;line-height:1.7'><b>{passage.language}</b> "
                f"(peak {passage.peak:.2f}): {_shade(passage.tokens, passage.values, scale)}</div>",
                unsafe_allow_html=True,
            )
        st.caption("Tokens shaded by the neuron's value (first 6 paragraphs per language).")
    with right:
        st.subheader("Output tokens it promotes")
        tokens = analysis.promoted_tokens(lm, layer, neuron)
        st.dataframe(
            {
                "promotes": [t for t, _ in tokens["up"]],
                "score": np.round([s for _, s in tokens["up"]], 3),
                "suppresses": [t for t, _ in tokens["down"]],
            },
            hide_index=True,
            use_container_width=True,
        )
        st.caption("Down-projection column through the unembedding (direct effect).")


@st.cache_data(show_spinner=False, max_entries=8)
def _umap(run_key: str, vectors: np.ndarray) -> np.ndarray:
    return analysis.umap_2d(vectors)


def neuron_map(
    lm: LoadedModel, result: ComputeResult, selection: Selection, settings: Settings
) -> None:
    stats = result.statistics
    probs = stats.probabilities().reshape(-1, len(stats.languages)).numpy()
    selected = analysis.membership_mask(selection, None, (lm.num_layers, lm.num_neurons)).reshape(
        -1
    )
    index = np.arange(probs.shape[0])
    rng = np.random.default_rng(0)
    method = st.radio(
        "Projection",
        ["PCA", "UMAP"],
        horizontal=True,
        key="map_method",
        help="PCA is instant; UMAP (on up to 6000 neurons) takes 30-60 s the first time, "
        "then is cached.",
    )
    # Every selected neuron and a sample of the rest: UMAP's cost grows with the points.
    limit = 40_000 if method == "PCA" else 6_000
    if len(index) > limit:
        rest = rng.choice(np.flatnonzero(~selected), limit, replace=False)
        index = np.sort(np.concatenate([np.flatnonzero(selected), rest]))
    vectors = probs[index]
    if method == "PCA":
        coords = analysis.pca_2d(vectors)
    else:
        try:
            with st.spinner("Fitting UMAP (cached afterwards)..."):
                coords = _umap(settings.run_key(), vectors)
        except ImportError as exc:
            st.warning(str(exc))
            return
    dominant = vectors.argmax(axis=1)
    labels = np.array([f"layer {i // lm.num_neurons}, neuron {i % lm.num_neurons}" for i in index])
    _plot(
        charts.neuron_map(
            coords,
            dominant,
            stats.languages,
            selected[index],
            labels,
            f"Neurons by their per-language activation probabilities ({method})",
        ),
        "neuron_map",
    )
    st.caption(
        "Each point is a neuron, placed by its vector of activation probabilities over "
        "the languages and coloured by the language it fires most for; large points are "
        "selected language neurons."
    )


def build_intervention(
    lm: LoadedModel,
    result: ComputeResult,
    selection: Selection,
    mode: str,
    off_languages: list[str],
    layers: tuple[int, int],
    pairs: str,
    target: str | None,
    strength: float,
    prompt: str,
) -> Intervention:
    """The playground's choices as an intervention (the library's rule, shared with the CLI)."""
    steering = mode == "Steer" and target is not None
    return intervention_for(
        lm,
        selection.masks,
        selection.languages,
        result.statistics,
        deactivate_languages=off_languages,
        steer_language=target if steering else None,
        strength=strength,
        layers=None if layers == (0, lm.num_layers - 1) else f"{layers[0]}-{layers[1]}",
        neurons=pairs.strip() or None,
        prompt=prompt,
    )


def playground(lm: LoadedModel, result: ComputeResult, selection: Selection) -> None:
    languages = selection.languages
    examples = {c: EXAMPLE_PROMPTS[c] for c in languages if c in EXAMPLE_PROMPTS}
    c1, c2 = st.columns([1, 3])
    example = c1.selectbox(
        "Example prompt",
        ["(custom)", *examples],
        format_func=lambda c: c if c == "(custom)" else f"{c}: {examples[c]}",
        key="pg_example",
    )
    if example != "(custom)" and st.session_state.get("pg_last_example") != example:
        st.session_state["pg_prompt"] = examples[example]
        st.session_state["pg_last_example"] = example
    first = examples.get("fr", next(iter(examples.values()), "Hello"))
    st.session_state.setdefault("pg_prompt", first)
    prompt = c2.text_area("Prompt", key="pg_prompt", height=80)
    mode = st.radio("Intervention", ["Switch off", "Steer"], horizontal=True, key="pg_mode")
    c1, c2, c3 = st.columns(3)
    st.session_state.setdefault("pg_off", ["fr"] if "fr" in languages else languages[:1])
    off = c1.multiselect(
        "Switch off the neurons of",
        languages,
        key="pg_off",
        format_func=lambda c: f"{c} ({language_name(c)})",
    )
    layers = c2.slider("Layers", 0, lm.num_layers - 1, (0, lm.num_layers - 1), key="pg_layers")
    pairs = c3.text_input("Single neurons (layer:neuron, ...)", key="pg_pairs")
    target, strength = None, 1.0
    if mode == "Steer":
        c1, c2 = st.columns(2)
        target = c1.selectbox(
            "Steer towards",
            languages,
            key="pg_target",
            format_func=lambda c: f"{c} ({language_name(c)})",
        )
        strength = c2.slider(
            "Strength (x mean activation)",
            0.0,
            8.0,
            1.0,
            0.25,
            key="pg_strength",
            help="1-2 usually keeps fluent text; from 3 it degrades; at 5 and "
            "above it collapses into repeated tokens.",
        )
        st.caption(
            "Steering sets the target's neurons to strength x their mean activation and "
            "switches off the prompt language's neurons (or those chosen above)."
        )
    with st.expander("Sampling"):
        s1, s2, s3, s4, s5 = st.columns(5)
        max_new = s1.number_input("New tokens", 1, 200, 30, key="pg_max")
        sample = s2.checkbox("Sample", key="pg_sample")
        temperature = s3.number_input("Temperature", 0.05, 3.0, 0.8, key="pg_temp")
        top_p = s4.number_input("Top-p", 0.05, 1.0, 0.95, key="pg_top_p")
        seed = s5.number_input("Seed", 0, 2**31 - 1, 0, key="pg_seed")
    b1, b2 = st.columns([1, 6])
    go = b1.button("Generate", type="primary", key="pg_go")
    b2.button("Reset", key="pg_reset", on_click=_reset_playground)
    if not go:
        if "pg_last" in st.session_state:
            _show_pair(st.session_state["pg_last"])
        return
    try:
        intervention = build_intervention(
            lm, result, selection, mode, off, layers, pairs, target, strength, prompt
        )
    except NothingToChange:
        st.warning(
            "Nothing to change: choose languages to switch off, a language to steer "
            "towards, or single neurons."
        )
        return
    except LangNeuronsError as exc:
        st.error(str(exc))
        return
    try:
        config = GenerationConfig(
            max_new_tokens=int(max_new),
            do_sample=sample,
            temperature=float(temperature),
            top_p=float(top_p),
            seed=int(seed),
        )
        validate(lm, intervention)  # streams start lazily: check before drawing anything
        baseline_gen = stream(lm, prompt, config)
        modified_gen = stream(lm, prompt, config, intervention)
    except LangNeuronsError as exc:
        st.error(str(exc))
        return
    left, right = st.columns(2)
    left.markdown("**Unmodified**")
    right.markdown(f"**Modified** — {_describe(intervention)}")
    slots = (left.empty(), right.empty())
    texts = ["", ""]
    gens = [baseline_gen, modified_gen]
    while any(g is not None for g in gens):  # interleave: both stream side by side
        for i, gen in enumerate(gens):
            if gen is None:
                continue
            try:
                texts[i] += next(gen)
            except StopIteration:
                gens[i] = None
            slots[i].markdown(_box(prompt, texts[i], None), unsafe_allow_html=True)
    candidates = sorted({*languages, "en"})
    pair = {
        "prompt": prompt,
        "baseline": (texts[0], detect_language(texts[0], candidates)[0]),
        "modified": (texts[1], detect_language(texts[1], candidates)[0]),
        "intervention": _describe(intervention),
    }
    st.session_state["pg_last"] = pair
    slots[0].markdown(_box(prompt, *pair["baseline"]), unsafe_allow_html=True)
    slots[1].markdown(_box(prompt, *pair["modified"]), unsafe_allow_html=True)


def _reset_playground() -> None:
    for key in [k for k in st.session_state if k.startswith("pg_")]:
        del st.session_state[key]


def _describe(intervention: Intervention) -> str:
    return ", ".join(f"{k} {v}" for k, v in intervention.describe().items())


def _box(prompt: str, text: str, language: str | None) -> str:
    badge = ""
    if language:
        label = f"{html.escape(language)} · {html.escape(language_name(language))}"
        badge = (
            "<span class='ln-lang' style='background:#3b5bdb;color:white;border-radius:4px;"
            f"padding:1px 6px;font-size:.8em'>{label}</span><br>"
        )
    return (
        f"<div class='ln-output' style='border:1px solid #dde2ea;border-radius:6px;"
        f"padding:.6em;min-height:6em'>{badge}<span style='color:#868e96'>"
        f"{html.escape(prompt)}</span>{html.escape(text)}</div>"
    )


def _show_pair(pair: dict[str, Any]) -> None:
    left, right = st.columns(2)
    left.markdown("**Unmodified**")
    right.markdown(f"**Modified** — {pair['intervention']}")
    left.markdown(_box(pair["prompt"], *pair["baseline"]), unsafe_allow_html=True)
    right.markdown(_box(pair["prompt"], *pair["modified"]), unsafe_allow_html=True)


def ablation(
    lm: LoadedModel, result: ComputeResult, selection: Selection, settings: Settings
) -> None:
    languages = selection.languages
    chosen = st.multiselect("Languages", languages, default=languages[:6], key="ab_langs")
    c1, c2 = st.columns(2)
    max_tokens = c1.number_input("Held-out tokens per language", 50, 5000, 300, 50, key="ab_tokens")
    scale = c2.radio(
        "Show",
        ["NLL per token", "Perplexity", "Increase over unmodified"],
        horizontal=True,
        key="ab_scale",
    )
    st.caption(
        f"{len(chosen) * (len(chosen) + 1)} evaluations; about "
        f"{len(chosen) * (len(chosen) + 1) * int(max_tokens) / 200:.0f} s on two cores "
        "the first time, then cached."
    )
    key = (
        f"ab_{settings.run_key()}_{settings.top_rate}_{settings.filter_rate}_"
        f"{settings.bar_ratio}_{','.join(chosen)}_{max_tokens}"
    )
    if st.button("Compute the matrix", type="primary", key="ab_go") and len(chosen) >= 2:
        lock = model_lock(settings.model, settings.dtype, settings.device)
        if not lock.acquire(blocking=False):
            with st.status("Another session is using the model; waiting for it..."):
                lock.acquire()
        try:
            bar = st.progress(0.0, text="Evaluating...")

            def on_progress(event: Any) -> None:
                if event.total:
                    bar.progress(event.done / event.total, text=event.message)

            corpus = load_corpus(settings.corpus, chosen)
            st.session_state[key] = nll_matrix_cached(
                lm,
                selection.masks,
                languages,
                corpus,
                languages=chosen,
                max_tokens=int(max_tokens),
                progress=on_progress,
            )
            bar.empty()
        finally:
            lock.release()
    matrix = st.session_state.get(key)
    if matrix is None:
        st.info(
            "Choose two or more languages and compute: rows switch one language's neurons "
            "off, columns are the held-out text evaluated."
        )
        return
    codes = matrix["languages"]
    base = np.array([matrix["base"][c] for c in codes])
    grid = np.array([[matrix["deactivated"][a][b] for b in codes] for a in codes])
    if scale == "Perplexity":
        grid, fmt, title = np.exp(grid), ".1f", "Perplexity with a language's neurons off"
    elif scale == "Increase over unmodified":
        grid, fmt, title = grid - base[None, :], "+.2f", "NLL increase over the unmodified model"
    else:
        fmt, title = ".2f", "NLL per token with a language's neurons off"
    _plot(charts.nll_heatmap(grid, codes, title, fmt), "ablation")
    st.caption(
        "Unmodified NLL: " + ", ".join(f"{c} {b:.2f}" for c, b in zip(codes, base, strict=True))
    )


TOUR = [
    (
        "Every language has its own neurons",
        "LAPE counts how often each MLP neuron fires (value > 0) on text of each language and "
        "keeps the 1% with the most uneven firing. The chart shows how many each language gets.",
    ),
    (
        "They sit in the first and last layers",
        "Most language neurons are in the last layers (producing the language) and, for "
        "Latin-script languages, the first ones (reading it). The middle is shared.",
    ),
    (
        "Switch French off",
        "Deactivate the French neurons (set them to 0) and continue a French sentence: the model "
        "loses French and drifts into another language, while switching off Japanese neurons "
        "leaves French intact.",
    ),
    (
        "Steer the model into another language",
        "Set the Japanese neurons to their mean activation on Japanese and switch the English ones "
        "off: an English prompt continues in Japanese.",
    ),
    (
        "The diagonal",
        "Switching a language's neurons off hurts that language's text most: the Ablation matrix "
        "view measures this for all pairs. Try it next.",
    ),
]


def tour(lm: LoadedModel, result: ComputeResult, selection: Selection) -> None:
    step = st.session_state.setdefault("tour_step", 0)
    title, text = TOUR[step]
    st.progress((step + 1) / len(TOUR), text=f"Step {step + 1} of {len(TOUR)}")
    st.subheader(title)
    st.write(text)
    counts = selection.counts().numpy()
    languages = selection.languages
    if step == 0:
        st.plotly_chart(
            charts.language_bars(
                dict(zip(languages, counts.sum(0).tolist(), strict=True)),
                "Language neurons per language",
                "neurons",
            ),
            use_container_width=True,
            key="tour0",
        )
    elif step == 1:
        st.plotly_chart(
            charts.stacked_bars(counts, languages), use_container_width=True, key="tour1"
        )
    elif step in (2, 3):
        if step == 2:
            prompt, source = EXAMPLE_PROMPTS["fr"], "fr"
            pairs = [("fr", "French neurons off"), ("ja", "Japanese neurons off")]
        else:
            prompt, source = EXAMPLE_PROMPTS["en"], "en"
            pairs = [("ja", "steered to Japanese")]
        needed = {source, *(c for c, _ in pairs)}
        if not needed <= set(languages):
            st.warning(f"This step needs {', '.join(sorted(needed))} among the languages.")
        elif st.button("Run it", key=f"tour_run_{step}", type="primary"):
            config = GenerationConfig(max_new_tokens=25)
            outputs = [("Unmodified", "".join(stream(lm, prompt, config)))]
            for code, label in pairs:
                if step == 2:
                    intervention = deactivate(
                        language_neurons(selection.masks, languages, [code]), code
                    )
                else:
                    intervention = build_intervention(
                        lm,
                        result,
                        selection,
                        "Steer",
                        [],
                        (0, lm.num_layers - 1),
                        "",
                        code,
                        1.0,
                        prompt,
                    )
                outputs.append((label, "".join(stream(lm, prompt, config, intervention))))
            for column, (label, text) in zip(st.columns(len(outputs)), outputs, strict=True):
                column.markdown(f"**{label}**")
                column.markdown(
                    _box(prompt, text, detect_language(text, [*languages, "en"])[0]),
                    unsafe_allow_html=True,
                )
    c1, c2, _ = st.columns([1, 1, 6])
    if c1.button("Back", disabled=step == 0, key="tour_back"):
        st.session_state["tour_step"] = step - 1
        st.rerun()
    if c2.button("Next", disabled=step == len(TOUR) - 1, key="tour_next", type="primary"):
        st.session_state["tour_step"] = step + 1
        st.rerun()


def _share_link() -> str:
    """This page's address with the current view state (what a shared link reproduces)."""
    from urllib.parse import urlencode

    base = (getattr(st.context, "url", None) or "").split("?")[0]
    query = urlencode({k: v for k, v in st.query_params.to_dict().items()})
    return f"{base}?{query}" if query else base


def export(lm: LoadedModel, result: ComputeResult, selection: Selection) -> None:
    st.markdown("**Share this view** (model, languages, thresholds, view and neuron):")
    st.code(_share_link(), language=None)
    st.write(
        "Download the selected neurons with the current thresholds, or share the link: "
        "the address bar holds this view's settings."
    )
    document = selection.to_json()
    document["model"] = result.meta["model"]
    document["corpus"] = corpus_label(result.meta)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["language", "layer", "neuron"])
    for code, per_layer in zip(selection.languages, selection.masks, strict=True):
        for layer, idx in enumerate(per_layer):
            for i in idx.tolist():
                writer.writerow([code, layer, i])

    def mask_bytes() -> bytes:
        buffer = io.BytesIO()
        torch.save(selection.masks, buffer)
        return buffer.getvalue()

    c1, c2, c3 = st.columns(3)
    c1.download_button(
        "neurons.json",
        json.dumps(document, indent=2),
        "neurons.json",
        "application/json",
        key="dl_json",
    )
    c2.download_button("neurons.csv", rows.getvalue(), "neurons.csv", "text/csv", key="dl_csv")
    c3.download_button(
        "activation_mask.pth (reference format)",
        mask_bytes,
        "activation_mask.pth",
        "application/octet-stream",
        key="dl_pth",
    )
    st.caption(
        "Load the .pth with torch.load(path, weights_only=True). Figures have their own "
        "download buttons under each chart."
    )
    st.json(
        {
            "languages": selection.languages,
            "settings": selection.settings,
            "per_language": {c: d["total"] for c, d in document["neurons"].items()},
        }
    )
