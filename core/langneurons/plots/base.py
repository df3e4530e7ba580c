"""The house style of the figures: one colour per language, the same layout."""

from __future__ import annotations

from typing import Any

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


def layer_tick(layers: int) -> int | None:
    """Tick step for a horizontal layer axis in a half-width chart: every layer up to 24
    (Gemma 3 270M's 18 read well), every other one up to 48 (a 32-layer 7B model's would
    overlap), Plotly's own choice beyond."""
    if layers <= 24:
        return 1
    return 2 if layers <= 48 else None


def graph_objects() -> Any:
    """``plotly.graph_objects``, or a clear error naming the extra that brings it.

    pandas is imported first, with an import statement: Plotly looks for pandas in
    ``sys.modules`` without waiting for it, so a figure built while another thread is
    still importing pandas (the first sessions of a dashboard, a notebook's worker
    threads) would meet a half-initialised module and fail.  The import statement waits
    until that import has finished."""
    import pandas  # noqa: F401  (see above)

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


def rgba(color: str, alpha: float) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha:.2f})"
