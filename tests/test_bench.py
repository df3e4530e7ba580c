"""The benchmark runs end to end and reports every figure (on a tiny model; the numbers
themselves belong in docs/benchmarks.md, not in assertions on speed)."""

from __future__ import annotations

import json

from langneurons.bench import naive_pass, nnsight_pass, run_bench
from langneurons.cli import main

FIGURES = [
    "forward_tokens_per_s",
    "stats_tokens_per_s",
    "naive_tokens_per_s",
    "nnsight_tokens_per_s",
    "stats_vs_forward",
    "naive_vs_forward",
    "nnsight_vs_forward",
    "generate_seconds",
    "generate_overhead",
    "trace_overhead",
    "pair_vs_single",
    "concurrent_vs_one",
    "concurrent_equal_alone",
    "selection_seconds",
    "ablation_matrix",
    "compute",
    "load_seconds",
    "peak_memory_mb",
    "machine",
    "targets",
]


def test_run_bench_reports_every_figure(tiny_model):
    report = run_bench(lm=tiny_model, quick=True)
    assert set(FIGURES) <= set(report), set(FIGURES) - set(report)
    for key in ("forward_tokens_per_s", "stats_tokens_per_s", "naive_tokens_per_s"):
        assert report[key] > 0
    assert report["stats_vs_forward"] > 0 and report["generate_overhead"] > 0
    assert report["ablation_matrix"]["languages"] == 3
    # Eight sessions at once got the texts each gets alone.
    assert report["concurrent_sessions"] == 8 and report["concurrent_equal_alone"] is True
    assert report["machine"]["cpu_count"] >= 1
    json.dumps(report)  # JSON-ready


def test_naive_and_nnsight_count_what_the_statistics_pass_counts(tiny_model):
    """The methods bench compares do the same work: their counts of values above zero
    equal the statistics pass's on the same windows, and they leave no hook behind."""
    import torch

    from langneurons.stats import collect_language_stats

    bos = tiny_model.tokenizer.bos_token_id
    windows = [torch.cat([torch.tensor([bos]), torch.randint(4, 300, (11,))]) for _ in range(2)]
    batches = [torch.stack(windows)]
    expected = collect_language_stats(tiny_model, windows, batch_size=2).over_zero
    assert int(expected.sum()) > 0
    assert torch.equal(naive_pass(tiny_model, batches), expected)
    assert torch.equal(nnsight_pass(tiny_model, batches), expected)
    assert all(not m._forward_hooks for m in tiny_model.modules)


def test_bench_command_json(tmp_path, save_tiny_model, capsys):
    folder = save_tiny_model("gpt2", tmp_path / "tiny")
    assert main(["bench", "--model", str(folder), "--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["name"] == str(folder)
    assert report["load_seconds"]["cold"] is not None


def test_a_class_of_any_size_is_measured_and_a_bad_size_refused(tiny_model, capsys):
    """``bench --sessions N`` (and ``concurrent_sessions``) measure the class a server
    expects, for example 64 on a GPU; a count below one is refused before any work."""
    import pytest

    from langneurons.bench import concurrent_sessions

    figures = concurrent_sessions(tiny_model, 3, 4)
    assert figures["concurrent_sessions"] == 3 and figures["concurrent_new_tokens"] == 4
    assert figures["concurrent_equal_alone"] is True and figures["concurrent_vs_one"] > 0
    with pytest.raises(ValueError, match="at least 1"):
        concurrent_sessions(tiny_model, 0)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--sessions", "0"])
    assert exit_info.value.code == 2 and "--sessions" in capsys.readouterr().err
