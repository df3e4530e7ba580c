"""Figures and token colourings of the library's results, for the dashboard and notebooks.

Plotly figures need the optional extra (``pip install 'langneurons[dashboard]'``, which
brings plotly); :func:`tokens_html` is plain HTML.  The dashboard draws these same
figures, so a notebook gets what the page shows with one call:

>>> from langneurons.plots import language_color
>>> language_color(0)
'#3b5bdb'
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from .trace import Trace

PALETTE = [
    "#3b5bdb",
    "#e8590c",
    "#2f9e44",
    "#c2255c",
    "#7048e8",
    "#1098ad",
    "#f59f00",
    "#5c940d",
    "#d6336c",
    "#495057",
    "#0b7285",
    "#a61e4d",
]
FONT = {"size": 14}


def language_color(index: int) -> str:
    """The colour of the ``index``-th language, the same in every figure."""
    return PALETTE[index % len(PALETTE)]


def _go() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - the test environment has plotly
        raise ImportError("Figures need plotly: pip install 'langneurons[dashboard]'.") from exc
    return go


def layout(fig: Any, title: str, height: int = 380) -> Any:
    """The house style: a left-aligned title, white background, legend below."""
    fig.update_layout(
        title={"text": title, "x": 0, "font": {"size": 16}},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
        font=FONT,
    )
    return fig


def _labels(trace: Trace) -> list[str]:
    """Unique tick labels: the token, made visible, with its position."""
    return [f"{i}: {t.replace(chr(10), '⏎').strip() or '␣'}" for i, t in enumerate(trace.tokens)]


def trace_heatmap(
    trace: Trace,
    language: str,
    *,
    after: bool = False,
    baseline: Trace | None = None,
    prompt_tokens: int = 0,
    title: str | None = None,
    hover: bool = True,
) -> Any:
    """Layer x token activity of ``language``'s neurons (0 to 1 on every side, so two
    continuations compare by colour); with ``baseline``, the difference from it (-1 to 1).
    Hovering a cell gives every language's activity at that layer and token (``hover``;
    leave it out for a lighter live picture)."""
    go = _go()
    k = trace.languages.index(language)
    activity = trace.activity(after)  # [T, L, K]
    z = activity[:, :, k].T
    zmin, zmax, scale, bar = 0.0, 1.0, "Viridis", "share firing"
    if baseline is not None:
        other = baseline.activity(after)[: len(trace.tokens), :, k].T
        width = min(z.shape[1], other.shape[1])
        z = z[:, :width] - other[:, :width]
        zmin, zmax, scale, bar = -1.0, 1.0, "RdBu_r", "difference"
    width = z.shape[1]
    labels = _labels(trace)[:width]
    custom = np.full((trace.layers, width), "", dtype=object)
    for layer in range(trace.layers if hover else 0):
        for t in range(width):
            custom[layer, t] = " · ".join(
                f"{code} {'–' if np.isnan(v) else f'{v:.2f}'}"
                for code, v in zip(trace.languages, activity[t, layer], strict=True)
            )
    fig = go.Figure(
        go.Heatmap(
            z=z.astype(np.float32),
            x=labels,
            y=np.arange(trace.layers),
            zmin=zmin,
            zmax=zmax,
            colorscale=scale,
            colorbar={"title": {"text": bar, "side": "right"}, "thickness": 12},
            customdata=custom,
            hovertemplate="%{x} · layer %{y}<br>"
            + language
            + ": %{z:.2f}<br>%{customdata}<extra></extra>",
        )
    )
    if 0 < prompt_tokens < width:
        fig.add_vline(x=prompt_tokens - 0.5, line={"color": "#adb5bd", "dash": "dot", "width": 2})
    fig.update_yaxes(title="layer", autorange="reversed", dtick=1 if trace.layers <= 40 else None)
    fig.update_xaxes(title="token", tickangle=-60, showticklabels=width <= 80)
    default = f"{language} neurons{' after the intervention' if after else ''}"
    return layout(fig, title or default, height=max(360, 18 * trace.layers + 170))


def trace_lines(
    trace: Trace,
    *,
    after: bool = False,
    title: str | None = None,
    prompt_tokens: int = 0,
    height: int = 380,
) -> Any:
    """Each language's overall activity (all layers pooled) token by token: where the
    text switches language, the lines cross."""
    go = _go()
    overall = trace.overall(after)
    labels = _labels(trace)
    fig = go.Figure()
    for k, code in enumerate(trace.languages):
        fig.add_scatter(
            x=labels,
            y=overall[:, k],
            mode="lines+markers",
            name=code,
            line={"color": language_color(k), "width": 3},
            hovertemplate=f"{code}: " + "%{y:.2f}<extra>%{x}</extra>",
        )
    if 0 < prompt_tokens < len(labels):
        fig.add_vline(x=prompt_tokens - 0.5, line={"color": "#adb5bd", "dash": "dot", "width": 2})
    fig.update_yaxes(title="share firing", range=[0, 1.02])
    compact = height < 320  # beside a text that shows the tokens: no token labels
    fig.update_xaxes(
        title="tokens →" if compact else "token",
        tickangle=-60,
        showticklabels=not compact and len(labels) <= 80,
    )
    return layout(fig, title or "Each language's neurons, token by token", height=height)


def tokens_html(
    trace: Trace,
    *,
    after: bool = False,
    prompt_tokens: int = 0,
    tail: str = "",
    tooltips: bool = True,
) -> str:
    """The trace's tokens as HTML, each on the colour of its dominant language (paler for
    the prompt, stronger with more confidence); hovering a token shows every language's
    activity layer by layer as a small bar line (``tooltips``).  ``tail`` is text after
    the last traced token, shown plain."""
    dominant = trace.dominant(after)
    confidence = trace.confidence(after)
    overall = trace.overall(after)
    spans = []
    for t, token in enumerate(trace.tokens):
        language = dominant[t]
        k = trace.languages.index(language) if language else None
        alpha = 0.15 + 0.6 * min(max(confidence[t] * 2, 0.0), 1.0)
        if t < prompt_tokens:
            alpha *= 0.5
        color = language_color(k) if k is not None else "#adb5bd"
        rgba = _rgba(color, alpha)
        title = ""
        if tooltips:
            lines = [f"{token!r} · {language or 'none'}"]
            for j, code in enumerate(trace.languages):
                lines.append(f"{code} {trace.sparkline(t, j, after)} {overall[t, j]:.2f}")
            title = f' title="{html.escape(chr(10).join(lines), quote=True)}"'
        text = html.escape(token).replace("\n", "⏎<br>")
        spans.append(
            f'<span class="ln-token" data-lang="{language or ""}"{title} '
            f'style="background:{rgba};border-radius:3px;padding:0 1px">{text}</span>'
        )
    return "".join(spans) + html.escape(tail)


def legend_html(languages: list[str]) -> str:
    """The colour of each language, as small labelled chips."""
    return " ".join(
        f'<span style="background:{_rgba(language_color(k), 0.6)};border-radius:3px;'
        f'padding:0 6px;margin-right:4px">{html.escape(code)}</span>'
        for k, code in enumerate(languages)
    )


def _rgba(color: str, alpha: float) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha:.2f})"


def steering_curves(sweep: Any, colors: dict[str, str] | None = None) -> Any:
    """A steering sweep (:class:`~langneurons.steering.SteeringSweep`) as curves against
    strength, one line per target (and layer range): success on the left, fluency (NLL
    of the outputs under the unmodified model) in the middle, distinct bigrams on the
    right; each target's recommended strength ringed.  Points carry
    ``customdata = [target, strength, layers]`` so a click can show their outputs."""
    go = _go()
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
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.03], row=1, col=3)
    fig.update_xaxes(title_text="strength (x mean activation)")
    layout(fig, "Steering towards each language: success and fluency by strength", height=420)
    return fig


def detector_layers(comparison: Any, language: str | None = None) -> Any:
    """Selected neurons per layer, one line per detector of a
    :class:`~langneurons.comparison.DetectorComparison`: for ``language``, or summed over
    all languages (``None``), like the layer distributions of the LAPE paper."""
    go = _go()
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
    fig.update_xaxes(title_text="layer", dtick=1 if last < 40 else None, range=[-0.5, last + 0.5])
    fig.update_yaxes(title_text="selected neurons", rangemode="tozero")
    which = language if language is not None else "all languages"
    return layout(fig, f"Neurons per layer ({which})")


def detector_overlap(comparison: Any, language: str) -> Any:
    """How much the detectors agree on ``language``'s neurons: Jaccard overlap of every
    pair, as an annotated heatmap."""
    go = _go()
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
