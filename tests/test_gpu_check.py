"""scripts/gpu_check.py, the prepared one-shot GPU check, runs end to end (here with the
CPU standing in for the device, so the two sides must agree exactly)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_check_script_reports_agreement_throughput_launch_and_bench(tmp_path):
    command = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path)]
    command += ["--device", "cpu", "--shape", "tiny", "--vocab", "600", "--max-tokens", "300"]
    command += ["--repeat-text", "1", "--batch-sizes", "8", "--dtypes", "float32"]
    command += ["--launch", "--bench", "--bench-dtype", "float32", "--quick-bench"]
    command += ["--sessions", "3", "--session-tokens", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "core"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    same = report["agreement"]["float32"]
    assert same["tokens_equal"] and same["counts_differing"] == 0
    assert set(same["mask_jaccard"].values()) == {1.0}
    (speed,) = report["throughput"]
    assert speed["tokens"] > 10 * 300 and speed["stats_tokens_per_s"] > 0
    # One torchrun rank (gloo here, nccl on a GPU) and an automatic device map count the
    # same as the in-process run on the device.
    launched = report["torchrun_one_rank"]
    assert launched["ok"] and launched["backend"] == "gloo", launched
    assert launched["tokens_equal"] and launched["counts_differing"] == 0
    assert report["device_auto"]["counts_differing"] == 0
    bench = report["bench"]
    assert bench["model"]["layers"] == 2 and bench["stats_tokens_per_s"] > 0
    (sessions,) = report["sessions"]
    assert sessions["dtype"] == "float32" and sessions["concurrent_sessions"] == 3
    assert sessions["concurrent_equal_alone"] is True
