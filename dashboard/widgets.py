"""Small widgets several pages share: a chart with its download, the output box of a
continuation, language labels, settings sliders built from the library's settings
classes, and the progress bar of a computation."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import streamlit as st

from langneurons.config import describe
from langneurons.corpus import language_name
from langneurons.progress import ComputeProgress, ProgressEvent

from .state import remember, seed

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


# Markdown turns bare addresses into links after escapes are read (GFM "autolinks"): an
# invisible word joiner after the scheme, "www" or "@" keeps them plain text.
JOINER = "\u2060"
AUTOLINK = re.compile(r"(?i)(https?|ftp|mailto|xmpp)(?=:)|\b(www)(?=\.)|(@)")


def plain(text: str) -> str:
    """``text`` shown as written: every Markdown (and LaTeX) sign escaped and bare
    addresses broken up invisibly, so text from a link, a file name or a model's output
    can never become a link, an image or markup."""
    text = AUTOLINK.sub(lambda m: m.group(0) + JOINER, str(text))
    return MARKDOWN_SPECIAL.sub(r"\\\1", text).replace("\n", "  \n")


def plain_html(text: str) -> str:
    """``text`` shown as written inside HTML: escaped, with bare addresses broken up
    invisibly as in :func:`plain`."""
    return html.escape(AUTOLINK.sub(lambda m: m.group(0) + JOINER, str(text)), quote=True)


def error(message: object, where: Any = st) -> None:
    """An error box with ``message`` as plain text (messages quote user input)."""
    where.error(plain(str(message)))


def warning(message: object, where: Any = st) -> None:
    where.warning(plain(str(message)))


def plot(fig: Any, key: str) -> None:
    """A Plotly figure across the page, with an HTML download made only when clicked
    (plotly.js inside, so it opens offline)."""
    st.plotly_chart(fig, width="stretch", key=key)
    st.download_button(
        "Download figure (HTML)",
        lambda: fig.to_html(include_plotlyjs=True),
        file_name=f"{key}.html",
        mime="text/html",
        key=f"dl_{key}",
        on_click="ignore",  # no rerun: the other buttons' files stay valid
    )


def language_label(code: str) -> str:
    """``fr · French``: a code with its name, for choices."""
    name = language_name(code)
    return code if name == code else f"{code} · {name}"


def output_box(
    prompt: str,
    text: str,
    language: str | None = None,
    waiting: bool = False,
    body_html: str | None = None,
    compact: bool = False,
) -> str:
    """A continuation as HTML: its detected language as a badge, the prompt greyed, the
    generated text after it (all escaped), or ``body_html`` already rendered.  A
    ``compact`` box has smaller type and at most about ten lines; a longer text scrolls
    inside it and the box shows its end, where new tokens arrive."""
    badge = ""
    if language:
        label = html.escape(language_label(language))
        badge = (
            "<span class='ln-lang' style='background:#3b5bdb;color:white;border-radius:4px;"
            f"padding:1px 6px;font-size:.8em'>{label}</span><br>"
        )
    cursor = "<span style='color:#adb5bd'> ▍</span>" if waiting else ""
    if body_html is None:
        # Line breaks as <br>: a blank line would end the HTML and let Markdown in.
        body_html = (
            f"<span style='color:#868e96'>{html.escape(prompt)}</span>{html.escape(text)}"
        ).replace("\n", "<br>")
    if compact:  # a reversed column keeps the scroll at the end while text arrives
        return (
            "<div class='ln-output' style='border:1px solid #dde2ea;border-radius:6px;"
            "padding:.4em .6em;min-height:5em;max-height:15.5em;overflow-y:auto;"
            "display:flex;flex-direction:column-reverse;font-size:1em;line-height:1.5'>"
            f"<div>{badge}{body_html}{cursor}</div></div>"
        )
    return (
        "<div class='ln-output' style='border:1px solid #dde2ea;border-radius:6px;"
        f"padding:.6em;min-height:6em;font-size:1.1em;line-height:1.6'>{badge}"
        f"{body_html}{cursor}</div>"
    )


def setting_widgets(
    config_type: type,
    container: Any,
    prefix: str = "sel_",
    numbers: bool = False,
    caps: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One slider (or number box, with ``numbers``; a checkbox for a flag) per setting of
    a library settings class, its range, step, label and help from the class; ``caps``
    lowers a setting's maximum (a classroom server's limits).  Returns the chosen values
    by setting name."""
    values: dict[str, Any] = {}
    for info in describe(config_type):
        key = f"{prefix}{info.name}"
        cap = (caps or {}).get(info.name)
        if cap is not None:
            info = dataclasses.replace(
                info,
                maximum=cap if info.maximum is None else min(info.maximum, cap),
                help=f"{info.help} (this server allows up to {cap:g})",
            )
        seed(key, info.default)
        if cap is not None and isinstance(st.session_state[key], int | float):
            st.session_state[key] = min(st.session_state[key], info.kind(cap))
        if info.kind is bool:
            values[info.name] = container.checkbox(info.label, key=key, help=info.help)
        elif numbers:
            values[info.name] = container.number_input(
                info.label,
                min_value=None if info.minimum is None else info.kind(info.minimum),
                max_value=None if info.maximum is None else info.kind(info.maximum),
                step=info.kind(info.step or 1),
                key=key,
                help=info.help,
            )
        else:
            low, high = info.slider or (info.minimum, info.maximum)
            step = info.step or (1 if info.kind is int else 0.01)
            value = st.session_state[key]
            if low is not None and high is not None:  # a link may carry a value off the slider
                st.session_state[key] = info.kind(min(max(value, low), high))
            values[info.name] = container.slider(
                info.label,
                info.kind(low),
                info.kind(high),
                step=info.kind(step),
                key=key,
                help=info.help,
                format="%.3f" if info.kind is float and step < 0.01 else None,
            )
        remember(key, values[info.name])
    return values


@contextlib.contextmanager
def event_bar(text: str) -> Iterator[Callable[[ProgressEvent], None]]:
    """A progress bar fed by the library's progress events (done of total, with the
    event's message) while the block runs; removed after it."""
    bar = st.progress(0.0, text=text)

    def on_progress(event: ProgressEvent) -> None:
        if event.total:
            label = event.message or text
            if not event.message and event.language:
                label = f"{text} {event.language}: {event.done:,} of {event.total:,}"
            bar.progress(min(event.done / event.total, 1.0), text=plain(label))

    try:
        yield on_progress
    finally:
        bar.empty()


class ComputeBar:
    """A progress bar for ``compute``: the language, its tokens, languages done and the
    time left (the library's estimate)."""

    def __init__(self, languages: list[str]) -> None:
        self.tracker = ComputeProgress(languages)
        self.bar = st.progress(0.0, text="Preparing...")

    def __call__(self, event: ProgressEvent) -> None:
        if self.tracker.update(event):
            self.bar.progress(self.tracker.fraction, text=self.tracker.describe())
        elif event.message:
            self.bar.progress(self.tracker.fraction, text=plain(event.message))

    def close(self) -> None:
        self.bar.empty()
