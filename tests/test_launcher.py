"""``langneurons dashboard`` stops the server it started: on Ctrl-C, on a service
manager's SIGTERM, on a closed terminal's SIGHUP, and even when it is killed outright."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _load_test():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "scripts" / "load_test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("load_test", module)
    spec.loader.exec_module(module)
    return module


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_stopping_the_launcher_stops_its_server(tmp_path, stop):
    lt = _load_test()
    port = lt.free_port()
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "langneurons.cli", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a service manager's stop reaches the launcher alone
    )
    try:
        lt.wait_until_serving(f"http://127.0.0.1:{port}", launcher)
        family = lt._children(launcher.pid)
        assert len(family) >= 2  # the launcher and the Streamlit server
        os.kill(launcher.pid, stop)  # the launcher only, not its children
        launcher.wait(timeout=30)
        assert _gone(family, 30), "the server outlived its launcher"
        if stop != signal.SIGKILL:
            assert launcher.returncode == 0
    finally:
        lt._stop_group(launcher)


@pytest.mark.parametrize("port", ["-1", "70000", "http"])
def test_a_port_that_is_not_one_gets_one_line(port, capsys):
    from langneurons.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["dashboard", "--port", port])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"{port!r} is not a port: give a number from 1 to 65535" in err
    assert "Traceback" not in err
