"""Settings of the library's jobs, each defined once with its default, range and help.

Every settings class is a frozen dataclass whose fields are declared with
:func:`setting`: the default, a one-line help text and the allowed range live in the
field, so the command line (:func:`add_arguments`), the dashboard (sliders built from
:func:`describe`) and the library all read the same values.  Constructing a settings
object validates it and raises :class:`ConfigError` naming the field and what to do.

>>> CountingConfig(max_tokens=1000).seq_len
512
>>> CountingConfig(batch_size=0)
Traceback (most recent call last):
...
langneurons.config.ConfigError: batch_size must be at least 1, got 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from .corpus import DEFAULT_EVAL_FRACTION
from .errors import LangNeuronsError


class ConfigError(LangNeuronsError):
    """A setting is out of range, of the wrong type, or unknown."""


T = TypeVar("T")


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    step: float | None = None,
    label: str | None = None,
    slider: tuple[float, float] | None = None,
) -> Any:
    """A dataclass field with its help text and range (``minimum``/``maximum`` inclusive,
    ``above``/``below`` exclusive); ``step``, ``label`` and ``slider`` (the useful part of
    the range, for a dashboard slider) shape a widget."""
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "below": below,
        "step": step,
        "label": label,
        "slider": slider,
    }
    return field(default=default, metadata=metadata)


def _kind(value_type: Any) -> type:
    """``int``, ``float``, ``bool`` or ``str`` from a field's (string) annotation."""
    text = str(value_type)
    for kind in (bool, int, float, str):
        if kind.__name__ in text:
            return kind
    raise TypeError(f"unsupported setting type {value_type!r}")


def _optional(value_type: Any) -> bool:
    return "None" in str(value_type)


def validate(instance: Any) -> None:
    """Check every :func:`setting` field of a dataclass instance against its type and range."""
    for f in dataclasses.fields(instance):
        if "help" not in f.metadata:  # not declared with setting(): the class checks it
            continue
        value: Any = getattr(instance, f.name)
        if value is None and _optional(f.type):
            continue
        kind = _kind(f.type)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(instance, f.name, value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{f.name} must be {kind.__name__}, got {value!r}.")
        if kind is float and not math.isfinite(cast(float, value)):
            raise ConfigError(f"{f.name} must be a finite number, got {value}.")
        problem = range_problem(f.name, value, f.metadata)
        if problem:
            raise ConfigError(problem)


def range_problem(name: str, value: Any, meta: Mapping[str, Any]) -> str:
    """What is wrong with ``value`` under a setting's range metadata ("" when nothing)."""
    if meta.get("minimum") is not None and value < meta["minimum"]:
        return f"{name} must be at least {meta['minimum']}, got {value}."
    if meta.get("maximum") is not None and value > meta["maximum"]:
        return f"{name} must be at most {meta['maximum']}, got {value}."
    if meta.get("above") is not None and value <= meta["above"]:
        return f"{name} must be above {meta['above']}, got {value}."
    if meta.get("below") is not None and value >= meta["below"]:
        return f"{name} must be below {meta['below']}, got {value}."
    return ""


def from_mapping(config_type: type[T], values: Mapping[str, Any], owner: str = "") -> T:
    """A settings object from a mapping (a run's recorded settings, URL values), with a
    clear error for names the settings class does not have."""
    names = [f.name for f in dataclasses.fields(config_type)]  # type: ignore[arg-type]
    unknown = [k for k in values if k not in names]
    if unknown:
        where = f"{owner} " if owner else ""
        raise ConfigError(
            f"{where}takes the settings {', '.join(names)}; {', '.join(unknown)} is not one."
        )
    return config_type(**values)


def to_dict(instance: Any) -> dict[str, Any]:
    """The settings as a JSON-ready dict."""
    return dataclasses.asdict(instance)


@dataclass(frozen=True)
class SettingInfo:
    """What a UI needs to draw one setting."""

    name: str
    label: str
    help: str
    kind: type
    default: Any
    optional: bool
    minimum: float | None
    maximum: float | None
    step: float | None
    slider: tuple[float, float] | None


def ranges(config_type: type) -> dict[str, Mapping[str, Any]]:
    """Each setting's range metadata, by name (for checks outside the dataclass)."""
    return {f.name: f.metadata for f in dataclasses.fields(config_type)}


def describe(config_type: type) -> list[SettingInfo]:
    """The fields of a settings class with their ranges, for building widgets."""
    infos = []
    for f in dataclasses.fields(config_type):
        meta = f.metadata
        low = meta.get("minimum") if meta.get("minimum") is not None else meta.get("above")
        high = meta.get("maximum") if meta.get("maximum") is not None else meta.get("below")
        infos.append(
            SettingInfo(
                name=f.name,
                label=meta.get("label") or f.name.replace("_", " ").capitalize(),
                help=meta.get("help", ""),
                kind=_kind(f.type),
                default=f.default,
                optional=_optional(f.type),
                minimum=low,
                maximum=high,
                step=meta.get("step"),
                slider=meta.get("slider"),
            )
        )
    return infos


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``top_rate`` -> ``--top-rate``."""
    return "--" + name.replace("_", "-")


def parse_setting(info: SettingInfo, ranges: Any = None) -> Any:
    """An argparse ``type`` that converts and checks the range, so a bad value is refused
    with the option's name before any work starts."""

    def parse(text: str) -> Any:
        try:
            value = info.kind(text)
        except ValueError:
            kind = "a whole number" if info.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        problem = range_problem(info.name, value, ranges or {})
        if problem:
            raise argparse.ArgumentTypeError(problem.removeprefix(f"{info.name} "))
        return value

    return parse


def add_arguments(
    group: Any, config_type: type, *, skip: tuple[str, ...] = (), suppress: bool = False
) -> None:
    """Add one ``--flag`` per setting of ``config_type`` to an argparse group.

    With ``suppress`` an option that is not given is left out of the namespace (so that
    options shared by several settings classes can tell given from default).
    """
    limits = ranges(config_type)
    for info in describe(config_type):
        if info.name in skip:
            continue
        default = argparse.SUPPRESS if suppress else info.default
        help_text = info.help
        if info.default is not None:
            help_text += f" (default: {info.default})"
        if info.kind is bool:  # --name and --no-name, so a default of True can be turned off
            group.add_argument(
                flag(info.name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
            continue
        parse = parse_setting(info, limits[info.name])
        group.add_argument(flag(info.name), type=parse, default=default, help=help_text)


def from_args(config_type: type[T], args: argparse.Namespace, owner: str = "") -> T:
    """Build ``config_type`` from the options :func:`add_arguments` added (those given)."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_type)  # type: ignore[arg-type]
        if hasattr(args, f.name)
    }
    return from_mapping(config_type, values, owner)


@dataclass(frozen=True)
class CountingConfig:
    """How a language's text becomes counted token windows.

    The defaults are the project's: windows of 512 tokens (each starting with the
    tokenizer's BOS, whose position is not counted), eight windows per forward pass,
    every fifth paragraph held out for evaluation, and partial counts saved every
    million tokens so that a long language resumes mid-way.
    """

    max_tokens: int | None = setting(
        None,
        "token budget per language for counting (omitted: the whole identification part)",
        minimum=1,
    )
    seq_len: int = setting(512, "tokens per window, the BOS included", minimum=2)
    batch_size: int = setting(8, "windows per forward pass", minimum=1)
    eval_fraction: float = setting(
        DEFAULT_EVAL_FRACTION,
        "share of paragraphs held out for evaluation (every 1/f-th paragraph)",
        minimum=0.0,
        below=1.0,
    )
    checkpoint_tokens: int = setting(
        1_000_000,
        "save a language's partial counts every N tokens, so an interrupted language "
        "resumes mid-way (0: never)",
        minimum=0,
    )

    def __post_init__(self) -> None:
        validate(self)


MAX_NEW_TOKENS_LIMIT = 4096

MAX_PROMPT_TOKENS = 4096
"""The longest prompt generation reads, in tokens.  A forward pass holds every token's
activations and attention: a 20,000-token prompt took over 20 minutes and 8 GB on two
CPU cores, so a longer one is refused at once with this limit (the model's own context
is a second, often larger, limit)."""


@dataclass(frozen=True)
class GenerationConfig:
    """How to continue a prompt.  Greedy unless ``do_sample``."""

    max_new_tokens: int = setting(
        40, "tokens to generate at most", minimum=1, maximum=MAX_NEW_TOKENS_LIMIT, slider=(1, 200)
    )
    do_sample: bool = setting(False, "sample instead of greedy decoding")
    temperature: float = setting(
        1.0, "sampling temperature", above=0.0, step=0.05, slider=(0.05, 3.0)
    )
    top_p: float = setting(
        1.0,
        "nucleus sampling: keep the most likely tokens up to this mass",
        above=0.0,
        maximum=1.0,
        step=0.05,
        slider=(0.05, 1.0),
        label="Top-p",
    )
    repetition_penalty: float = setting(
        1.1,
        "divide the logits of tokens already seen by this (1: off)",
        minimum=1.0,
        step=0.05,
        slider=(1.0, 2.0),
    )
    seed: int = setting(0, "seed of the sampling generator", minimum=0, maximum=2**31 - 1)
    no_repeat_ngram: int = setting(
        0,
        "never repeat an n-gram of this many tokens (0: off)",
        minimum=0,
        maximum=16,
        slider=(0, 6),
        label="No repeated n-grams of",
    )
    byte_guard: bool = setting(
        True, "never emit byte tokens that break a UTF-8 character (shown as \ufffd)"
    )

    def __post_init__(self) -> None:
        validate(self)
