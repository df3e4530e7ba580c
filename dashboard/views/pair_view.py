"""The playground's two outputs: each continuation's header, text box and compact heatmap
(and each language's line, when asked for), drawn live while the pair streams and in
full once it is finished."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from .. import traces, widgets
from ..state import PageContext

# Seconds between live heatmaps: the texts follow every picture, but drawing a Plotly
# chart costs the browser far more than a text, and on a small server the browser shares
# the cores with generation.
MAP_INTERVAL = 1.5
HEATMAP_HEIGHT = 250  # a compact heatmap under each text: both fit a laptop screen
LINES_HEIGHT = 220


def header(title: str, detail: str = "") -> str:
    """A side's header on one line (a long intervention is cut with an ellipsis and shown
    whole on hover), so both output boxes start at the same height."""
    full = f"{title} — {detail}" if detail else title
    shown = f"<b>{title}</b>" + (f" — {widgets.plain_html(detail)}" if detail else "")
    return f'<div class="ln-side-head" title="{widgets.plain_html(full)}">{shown}</div>'


class Outputs:
    """The two columns: a header, the output box and a compact heatmap under each
    continuation (and each language's line, when asked for).  A side is drawn again only
    when it has changed; live pictures leave out the hover details."""

    def __init__(self, intervention: str, with_lines: bool) -> None:
        left, right = st.columns(2)
        left.markdown(header("Unmodified"), unsafe_allow_html=True)
        right.markdown(header("Modified", intervention), unsafe_allow_html=True)
        self.boxes = (left.empty(), right.empty())
        self.maps = (left.empty(), right.empty())
        self.lines = (left.empty(), right.empty()) if with_lines else None
        self.shown: dict[tuple[str, int], Any] = {}  # what each box and map shows
        self.draws = 0
        self.mapped = [0.0, 0.0]  # when each side's heatmap was last drawn (monotonic)

    def _changed(self, part: str, side: int, mark: Any) -> bool:
        if self.shown.get((part, side)) == mark:
            return False
        self.shown[part, side] = mark
        return True

    def draw(
        self, ctx: PageContext, pair: dict[str, Any], view: traces.TraceView, final: bool
    ) -> None:
        base, modified = pair["baseline_trace"], pair["modified_trace"]
        prompt_tokens = pair["prompt_tokens"]
        self.draws += 1
        width = len(base.tokens) if base is not None else 0
        for i, (key, trace) in enumerate((("baseline", base), ("modified", modified))):
            columns = len(trace.tokens) if trace is not None else 0
            after = view.after and i == 1
            if self._changed("box", i, (pair[key], columns, final)):
                self._box(ctx, pair, key, trace, after, final)
            if not final and time.monotonic() - self.mapped[i] < MAP_INTERVAL:
                continue  # too soon: the heatmaps follow the texts at a slower pace
            if not self._changed("map", i, (columns, width if view.difference else 0, final)):
                continue  # the trace has no new column on this side
            self.mapped[i] = time.monotonic()
            difference = view.difference and i == 1
            traces.heatmap(
                self.maps[i],
                f"pg_map_{i}_{self.draws}",
                trace,
                view,
                prompt_tokens,
                base if difference else None,
                f"{view.language} neurons: modified − unmodified" if difference else None,
                hover=final,
                height=HEATMAP_HEIGHT,
            )
            if self.lines is not None:
                traces.lines(
                    self.lines[i],
                    f"pg_lines_{i}_{self.draws}",
                    trace,
                    after,
                    prompt_tokens,
                    LINES_HEIGHT,
                )

    def _box(
        self, ctx: PageContext, pair: dict[str, Any], key: str, trace: Any, after: bool, final: bool
    ) -> None:
        """One side's text: coloured tokens, the detected language once finished; the
        tokens' hover profiles only in the finished picture."""
        i = 0 if key == "baseline" else 1
        html = traces.box(
            ctx.lm.tokenizer,
            trace,
            pair["prompt"],
            pair[key],
            pair.get(f"{key}_language") if final else None,
            not final,
            pair["prompt_tokens"],
            after=after,
            tooltips=final,
            compact=True,
        )
        self.boxes[i].markdown(html, unsafe_allow_html=True)
