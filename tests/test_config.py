"""Settings defined once: ranges checked, unknown names refused, the command line and
widgets built from the same fields."""

from __future__ import annotations

import argparse

import pytest

from langneurons.config import (
    ConfigError,
    CountingConfig,
    add_arguments,
    describe,
    from_args,
    from_mapping,
    to_dict,
)
from langneurons.generation import GenerationConfig
from langneurons.selection import LapeConfig


def test_defaults_are_the_documented_ones():
    assert to_dict(CountingConfig()) == {
        "max_tokens": None,
        "seq_len": 512,
        "batch_size": 8,
        "eval_fraction": 0.2,
        "checkpoint_tokens": 1_000_000,
    }
    assert to_dict(LapeConfig()) == {
        "top_rate": 0.01,
        "filter_rate": 0.95,
        "activation_bar_ratio": 0.95,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seq_len": 1}, "seq_len must be at least 2, got 1"),
        ({"eval_fraction": 1.0}, "eval_fraction must be below 1.0"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"batch_size": 2.5}, "batch_size must be int"),
        ({"batch_size": True}, "batch_size must be int"),
        ({"eval_fraction": float("nan")}, "eval_fraction must be a finite number"),
    ],
)
def test_out_of_range_or_mistyped_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CountingConfig(**kwargs)


def test_whole_numbers_are_accepted_where_a_float_is_expected():
    assert LapeConfig(top_rate=1).top_rate == 1.0
    assert isinstance(LapeConfig(top_rate=1).top_rate, float)


def test_unknown_settings_name_what_is_allowed():
    with pytest.raises(ConfigError, match="takes the settings top_rate, filter_rate"):
        from_mapping(LapeConfig, {"top_rate": 0.02, "min_effect": 1.0}, "Method 'lape'")
    assert from_mapping(LapeConfig, {"top_rate": 0.02}).top_rate == 0.02


def test_widgets_read_labels_ranges_and_steps():
    (top, *_rest) = describe(LapeConfig)
    assert top.name == "top_rate" and top.kind is float
    assert top.slider == (0.001, 0.05) and top.step == 0.001
    assert top.minimum == 0.0 and top.maximum == 1.0
    sample = next(i for i in describe(GenerationConfig) if i.name == "do_sample")
    assert sample.kind is bool and sample.default is False


def test_command_line_options_come_from_the_settings():
    parser = argparse.ArgumentParser()
    add_arguments(parser, CountingConfig)
    args = parser.parse_args(["--max-tokens", "300", "--seq-len", "64"])
    assert from_args(CountingConfig, args) == CountingConfig(max_tokens=300, seq_len=64)
    assert from_args(CountingConfig, parser.parse_args([])) == CountingConfig()
    with pytest.raises(SystemExit):
        parser.parse_args(["--eval-fraction", "1.5"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--batch-size", "two"])
