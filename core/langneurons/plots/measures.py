"""Figures of measurements: steering sweeps and detector comparisons."""

from __future__ import annotations

from typing import Any

from .base import PALETTE, graph_objects, language_color, layer_tick, layout


def steering_curves(sweep: Any, colors: dict[str, str] | None = None) -> Any:
    """A steering sweep (:class:`~langneurons.steering.SteeringSweep`) as curves against
    strength, one line per target (and layer range): success on the left, fluency (NLL
    of the outputs under the unmodified model) in the middle, distinct bigrams on the
    right; each target's recommended strength ringed, and its native reference (the model's
    own text in the target, where there are openings in it) an open diamond.  Points carry
    ``customdata = [target, strength, layers]`` so a click can show their outputs."""
    go = graph_objects()
    from plotly.subplots import make_subplots

    frame = sweep.to_frame()
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "Success (output in the target language)",
            "NLL per token (lower: more fluent)",
            "Distinct bigrams (lower: repetition)",
        ),
        horizontal_spacing=0.08,
    )
    targets = list(dict.fromkeys(frame["target"]))
    recommended = sweep.recommended()
    for t, target in enumerate(targets):
        for layers in dict.fromkeys(frame.loc[frame["target"] == target, "layers"]):
            part = frame[(frame["target"] == target) & (frame["layers"] == layers)]
            part = part.sort_values("strength")
            name = target if layers == "all" else f"{target} (layers {layers})"
            color = (colors or {}).get(target, language_color(t))
            dash = "solid" if layers == "all" else "dot"
            custom = [[target, float(s), layers] for s in part["strength"]]
            for col, metric in enumerate(("success", "nll", "distinct2"), start=1):
                fig.add_trace(
                    go.Scatter(
                        x=part["strength"],
                        y=part[metric],
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1,
                        line={"color": color, "dash": dash},
                        marker={"size": 9},
                        customdata=custom,
                        hovertemplate=f"{name} x%{{x}}: {metric} %{{y:.2f}}<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
            choice = recommended.get(target)
            if choice is not None and choice["layers"] == layers:
                row = part[part["strength"] == choice["strength"]].iloc[0]
                fig.add_trace(
                    go.Scatter(
                        x=[row["strength"]],
                        y=[row["success"]],
                        mode="markers",
                        marker={
                            "size": 18,
                            "color": "rgba(0,0,0,0)",
                            "line": {"color": color, "width": 2},
                        },
                        name=f"{target}: recommended",
                        showlegend=False,
                        hovertemplate=f"recommended for {target}: x%{{x}}<extra></extra>",
                    ),
                    row=1,
                    col=1,
                )
        _native_markers(fig, sweep, target, color)
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=3)
    fig.update_xaxes(title_text="strength (x mean activation)")
    layout(fig, "Steering towards each language: success and fluency by strength", height=420)
    return fig


def _native_markers(fig: Any, sweep: Any, target: str, color: str) -> None:
    """The native reference of ``target`` (the unmodified model continuing openings written
    in it) as open diamonds at strength 0 on the fluency panels: what the model's own text
    in that language scores."""
    native = getattr(sweep, "native", {}).get(target)
    if native is None:
        return
    go = graph_objects()
    for col, metric in ((2, "nll"), (3, "distinct2")):
        value = getattr(native, metric)
        fig.add_trace(
            go.Scatter(
                x=[0.0],
                y=[value],
                mode="markers",
                marker={"size": 13, "symbol": "diamond-open", "color": color, "line": {"width": 2}},
                name=f"{target}: the model's own {target} text",
                legendgroup=f"native-{target}",
                showlegend=col == 2,
                hovertemplate=f"the unmodified model writing {target} itself: {metric} "
                f"{value:.2f}<extra></extra>",
            ),
            row=1,
            col=col,
        )


def detector_layers(comparison: Any, language: str | None = None) -> Any:
    """Selected neurons per layer, one line per detector of a
    :class:`~langneurons.comparison.DetectorComparison`: for ``language``, or summed over
    all languages (``None``), like the layer distributions of the LAPE paper."""
    go = graph_objects()
    frame = comparison.per_layer()
    if language is not None:
        frame = frame[frame["language"] == language]
    fig = go.Figure()
    for m, method in enumerate(comparison.methods):
        part = frame[frame["method"] == method].groupby("layer")["neurons"].sum()
        fig.add_trace(
            go.Scatter(
                x=part.index,
                y=part.values,
                mode="lines+markers",
                name=method,
                line={"color": PALETTE[(m + 4) % len(PALETTE)]},
                hovertemplate=f"{method}, layer %{{x}}: %{{y}} neurons<extra></extra>",
            )
        )
    last = int(frame["layer"].max()) if len(frame) else 0
    fig.update_xaxes(title_text="layer", dtick=layer_tick(last + 1), range=[-0.5, last + 0.5])
    fig.update_yaxes(title_text="selected neurons", rangemode="tozero")
    which = language if language is not None else "all languages"
    return layout(fig, f"Neurons per layer ({which})")


def detector_overlap(comparison: Any, language: str) -> Any:
    """How much the detectors agree on ``language``'s neurons: Jaccard overlap of every
    pair, as an annotated heatmap."""
    go = graph_objects()
    matrix = comparison.overlap_matrix(language)
    values = matrix.to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(matrix.columns),
            y=list(matrix.index),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[f"{v:.2f}" for v in row] for row in values],
            texttemplate="%{text}",
            colorbar={"title": {"text": "Jaccard"}},
            hovertemplate="%{y} and %{x}: %{z:.2f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    height = 160 + 50 * len(matrix)
    return layout(fig, f"Overlap of the detectors' neurons ({language})", height=height)


def recipe_grid(book: Any, target: str) -> Any:
    """The recipes a search tried for ``target``: one panel per mode, layer bands down,
    strengths across, each cell coloured by its success on the tuning prompts and
    labelled with it; a cell that broke fluency is crossed out (×), one never tried
    (the ladder stopped earlier) is blank, and the chosen recipe is framed.
    ``book`` is a :class:`~langneurons.recipes.RecipeBook`."""
    from plotly.subplots import make_subplots

    rows = [row for row in book.grid if row.get("target") == target]
    settings = book.settings.get("grid") or {}
    modes = list(settings.get("modes") or dict.fromkeys(r["mode"] for r in rows))
    strengths = sorted(settings.get("strengths") or {r["strength"] for r in rows})
    bands = list(settings.get("bands") or dict.fromkeys(r["layers"] for r in rows))
    go = graph_objects()
    fig = make_subplots(
        rows=1, cols=len(modes), subplot_titles=modes, shared_yaxes=True, horizontal_spacing=0.04
    )
    columns = [f"x{s:g}" for s in strengths]
    for col, mode in enumerate(modes, start=1):
        found = {(r["layers"], r["strength"]): r for r in rows if r["mode"] == mode}
        z, text = [], []
        for band in bands:
            cells = [found.get((band, s)) for s in strengths]
            z.append([None if c is None else c["success"] for c in cells])
            text.append(
                [
                    ""
                    if c is None
                    else f"{c['success']:.2f}" + ("" if c.get("fluent", True) else " ×")
                    for c in cells
                ]
            )
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=columns,
                y=bands,
                text=text,
                texttemplate="%{text}",
                zmin=0,
                zmax=1,
                colorscale="Blues",
                showscale=col == len(modes),
                colorbar={"title": "success"},
                hovertemplate=f"{mode} %{{x}}, layers %{{y}}: success %{{z:.2f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        for r in rows:
            if r["mode"] == mode and r.get("chosen"):
                fig.add_shape(
                    type="rect",
                    x0=columns.index(f"x{r['strength']:g}") - 0.5,
                    x1=columns.index(f"x{r['strength']:g}") + 0.5,
                    y0=bands.index(r["layers"]) - 0.5,
                    y1=bands.index(r["layers"]) + 0.5,
                    line={"color": PALETTE[1], "width": 3},
                    row=1,
                    col=col,
                )
    fig.update_yaxes(title_text="layers", row=1, col=1, autorange="reversed")
    for col in range(2, len(modes) + 1):
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    return layout(
        fig,
        f"Recipes tried towards {target} (success on the tuning prompts; × broke fluency; "
        "framed: chosen)",
        height=90 + 48 * max(1, len(bands)),
    )
