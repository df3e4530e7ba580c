"""Figures and token colourings of a language trace (:mod:`langneurons.trace`).

Each figure is built in one call from arrays (no per-cell Python loop, no figure edited
after it is made) and carries a template trimmed to the trace types it uses, so a live
picture redrawn a few times a second stays cheap; the hover details are built with
array operations too."""

from __future__ import annotations

import functools
import html
from typing import Any

import numpy as np

from ..trace import BLOCKS, Trace
from .base import FONT, graph_objects, language_color, rgba

COMPACT = 320  # figures lower than this: no token labels, smaller margins
PROMPT_LINE = {"color": "#adb5bd", "dash": "dot", "width": 2}


def _labels(trace: Trace) -> list[str]:
    """Unique tick labels: the token, made visible, with its position; escaped, since
    Plotly reads tags in labels (a token such as ``<b>`` or ``<a href=...>`` from a
    user's text is shown as written, not as bold or a link)."""
    return [
        html.escape(f"{i}: {t.replace(chr(10), '⏎').strip() or '␣'}", quote=False)
        for i, t in enumerate(trace.tokens)
    ]


@functools.lru_cache(maxsize=1)
def _template() -> str:
    """The house template (``plotly_white``) with only the trace types drawn here: the
    same look, a fifth of the cost of copying the whole template into every figure."""
    import plotly.io as pio

    go = graph_objects()
    white = pio.templates["plotly_white"]
    name = "langneurons_trace"
    pio.templates[name] = go.layout.Template(
        layout=white.layout, data={"heatmap": white.data.heatmap, "scatter": white.data.scatter}
    )
    return name


def _layout(title: str, height: int, prompt_line: float | None, **axes: Any) -> dict[str, Any]:
    """The house style (:func:`langneurons.plots.base.layout`) as one layout dictionary,
    with the dotted line where the prompt ends."""
    compact = height < COMPACT
    return {
        "template": _template(),
        "title": {"text": title, "x": 0, "font": {"size": 14 if compact else 16}},
        "height": height,
        "margin": {"l": 50, "r": 10, "t": 32, "b": 28}
        if compact
        else {"l": 60, "r": 20, "t": 50, "b": 40},
        "legend": {"orientation": "h", "y": -0.2},
        "font": FONT,
        "shapes": []
        if prompt_line is None
        else [
            {
                "type": "line",
                "x0": prompt_line,
                "x1": prompt_line,
                "xref": "x",
                "y0": 0,
                "y1": 1,
                "yref": "y domain",
                "line": PROMPT_LINE,
            }
        ],
        **axes,
    }


def _hover_text(languages: list[str], activity: np.ndarray) -> np.ndarray:
    """``[L, T]`` strings: every language's activity at each layer and token
    (``en 0.12 · fr 0.80``, ``–`` where a layer has none of a language's neurons)."""
    values = np.asarray(activity, dtype=np.float64)  # [T, L, K]
    shown = np.char.mod("%.2f", np.nan_to_num(values))
    shown = np.where(np.isnan(values), "–", shown)
    text = np.full(values.shape[:2], "", dtype=object)
    for k, code in enumerate(languages):
        part = np.char.add(f"{code} ", shown[..., k]).astype(object)
        text = part if k == 0 else text + " · " + part
    return np.asarray(text.T, dtype=object)


def trace_heatmap(
    trace: Trace,
    language: str,
    *,
    after: bool = False,
    baseline: Trace | None = None,
    prompt_tokens: int = 0,
    title: str | None = None,
    hover: bool = True,
    height: int | None = None,
) -> Any:
    """Layer x token activity of ``language``'s neurons (0 to 1 on every side, so two
    continuations compare by colour); with ``baseline``, the difference from it (-1 to 1).
    Hovering a cell gives every language's activity at that layer and token (``hover``;
    leave it out for a lighter live picture).  ``height`` below 320 pixels gives a
    compact figure (no token labels: the text beside it shows the tokens)."""
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
    height = height or max(360, 18 * trace.layers + 170)
    compact = height < COMPACT
    labels = _labels(trace)[:width]
    cells: dict[str, Any] = {
        "hovertemplate": "%{x} · layer %{y}<br>" + language + ": %{z:.2f}<extra></extra>"
    }
    if hover:
        cells = {
            "customdata": _hover_text(trace.languages, activity[:width]),
            "hovertemplate": "%{x} · layer %{y}<br>"
            + language
            + ": %{z:.2f}<br>%{customdata}<extra></extra>",
        }
    heatmap = go.Heatmap(
        z=z.astype(np.float32),
        x=labels,
        y=np.arange(trace.layers),
        zmin=zmin,
        zmax=zmax,
        colorscale=scale,
        colorbar={"title": {"text": bar, "side": "right"}, "thickness": 10 if compact else 12},
        **cells,
    )
    default = f"{language} neurons{' after the intervention' if after else ''}"
    ticks = trace.layers <= 40 and not compact
    return go.Figure(
        heatmap,
        layout=_layout(
            title or default,
            height,
            prompt_tokens - 0.5 if 0 < prompt_tokens < width else None,
            yaxis={
                "title": {"text": "layer"},
                "autorange": "reversed",
                "dtick": 1 if ticks else None,
            },
            xaxis={
                "title": {"text": "tokens →" if compact else "token"},
                "tickangle": -60,
                "showticklabels": not compact and width <= 80,
            },
        ),
    )


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
    lines = [
        go.Scatter(
            x=labels,
            y=overall[:, k],
            mode="lines+markers",
            name=code,
            line={"color": language_color(k), "width": 3},
            hovertemplate=f"{code}: " + "%{y:.2f}<extra>%{x}</extra>",
        )
        for k, code in enumerate(trace.languages)
    ]
    compact = height < COMPACT  # beside a text that shows the tokens: no token labels
    return go.Figure(
        lines,
        layout=_layout(
            title or "Each language's neurons, token by token",
            height,
            prompt_tokens - 0.5 if 0 < prompt_tokens < len(labels) else None,
            yaxis={"title": {"text": "share firing"}, "range": [0, 1.02]},
            xaxis={
                "title": {"text": "tokens →" if compact else "token"},
                "tickangle": -60,
                "showticklabels": not compact and len(labels) <= 80,
            },
        ),
    )


def _sparklines(activity: np.ndarray) -> np.ndarray:
    """``[T, K]`` strings: each language's activity over the layers of each token as
    block characters (:meth:`langneurons.trace.Trace.sparkline`, for all at once)."""
    steps = len(BLOCKS) - 1
    index = np.clip((np.nan_to_num(activity) * steps + 0.5).astype(np.int64), 0, steps)
    chars = np.where(np.isnan(activity), "·", np.asarray(list(BLOCKS))[index])  # [T, L, K]
    return np.array(
        [["".join(chars[t, :, k]) for k in range(chars.shape[2])] for t in range(chars.shape[0])],
        dtype=object,
    ).reshape(chars.shape[0], chars.shape[2])


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
    bars = _sparklines(trace.activity(after)) if tooltips else None
    index = {code: k for k, code in enumerate(trace.languages)}
    spans = []
    for t, token in enumerate(trace.tokens):
        language = dominant[t]
        k = index[language] if language else None
        alpha = 0.15 + 0.6 * min(max(confidence[t] * 2, 0.0), 1.0)
        if t < prompt_tokens:
            alpha *= 0.5
        color = language_color(k) if k is not None else "#adb5bd"
        shade = rgba(color, alpha)
        title = ""
        if bars is not None:
            lines = [f"{token!r} · {language or 'none'}"]
            for j, code in enumerate(trace.languages):
                lines.append(f"{code} {bars[t, j]} {overall[t, j]:.2f}")
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
