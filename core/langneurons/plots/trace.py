"""Figures and token colourings of a language trace (:mod:`langneurons.trace`)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ..trace import Trace
from .base import graph_objects, language_color, layout, rgba


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
    go = graph_objects()
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
    go = graph_objects()
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
        shade = rgba(color, alpha)
        title = ""
        if tooltips:
            lines = [f"{token!r} · {language or 'none'}"]
            for j, code in enumerate(trace.languages):
                lines.append(f"{code} {trace.sparkline(t, j, after)} {overall[t, j]:.2f}")
            title = f' title="{html.escape(chr(10).join(lines), quote=True)}"'
        text = html.escape(token).replace("\n", "⏎<br>")
        spans.append(
            f'<span class="ln-token" data-lang="{language or ""}"{title} '
            f'style="background:{shade};border-radius:3px;padding:0 1px">{text}</span>'
        )
    return "".join(spans) + html.escape(tail)


def legend_html(languages: list[str]) -> str:
    """The colour of each language, as small labelled chips."""
    return " ".join(
        f'<span style="background:{rgba(language_color(k), 0.6)};border-radius:3px;'
        f'padding:0 6px;margin-right:4px">{html.escape(code)}</span>'
        for k, code in enumerate(languages)
    )
