"""``langneurons dashboard``: start the dashboard from an installed package, like
``tensorboard`` or ``mlflow ui``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import LangNeuronsError

OPEN_RUN = "LANGNEURONS_OPEN_RUN"
"""Environment variable naming a run folder the dashboard opens on first visit."""

# The server's settings, also in the repository's .streamlit/config.toml for those who run
# `streamlit run dashboard/app.py` themselves (a test checks that both agree).
STREAMLIT_OPTIONS: dict[str, str] = {
    "server.headless": "true",
    "server.fileWatcherType": "none",
    "server.runOnSave": "false",
    "server.maxUploadSize": "20",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "minimal",
    "theme.base": "light",
    "theme.primaryColor": "#3b5bdb",
    "theme.backgroundColor": "#ffffff",
    "theme.secondaryBackgroundColor": "#f3f5f9",
    "theme.textColor": "#1f2430",
    "theme.font": "sans serif",
}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "dashboard",
        help="start the dashboard in the browser",
        description="Start the LangNeurons dashboard (Streamlit) and print its address. "
        "Alone on your machine it is open to everything you type; with --classroom it "
        "follows a classroom file (allowed models, folders, caps, a job queue) for a shared "
        "server.",
    )
    parser.add_argument("--run", default=None, metavar="DIR", help="open this run folder")
    parser.add_argument(
        "--port", type=port_number, default=None, help="port, 1-65535 (default: 8501)"
    )
    parser.add_argument(
        "--address",
        default=None,
        help="address to listen on (default: 127.0.0.1, this machine only; a classroom "
        "file's address, 0.0.0.0 unless it says otherwise)",
    )
    parser.add_argument(
        "--classroom",
        default=None,
        metavar="FILE",
        help="classroom mode with the settings of this TOML file (see docs/dashboard.md)",
    )
    parser.set_defaults(handler=run)


def port_number(text: str) -> int:
    """A TCP port for ``--port``: a whole number from 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535")
    return port


def app_path() -> Path:
    """The dashboard's script inside the installed package."""
    spec = importlib.util.find_spec("langneurons.dashboard")
    if spec is None or not spec.submodule_search_locations:
        raise LangNeuronsError("The dashboard is not installed with this copy of LangNeurons.")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The Streamlit command line and environment for ``args``, checked: a classroom file
    or a run folder that cannot be used fails here, before the server starts."""
    if importlib.util.find_spec("streamlit") is None:
        raise LangNeuronsError(
            "The dashboard needs Streamlit and Plotly: pip install 'langneurons[dashboard]'."
        )
    env = dict(os.environ)
    options = dict(STREAMLIT_OPTIONS)
    address, port = args.address or "127.0.0.1", args.port or 8501
    if args.classroom:
        from ..classroom import ENVIRONMENT, load_classroom

        classroom = load_classroom(args.classroom)
        env[ENVIRONMENT] = str(Path(args.classroom).expanduser().resolve())
        address, port = args.address or classroom.address, args.port or classroom.port
        options["client.showErrorDetails"] = "none"  # no tracebacks for students
        options["server.maxUploadSize"] = str(max(1, round(classroom.max_upload_mb)))
    else:
        env.pop("LANGNEURONS_CLASSROOM", None)
    if args.run:
        from ..results import read_run

        env[OPEN_RUN] = str(read_run(args.run).path.resolve())
    argv = [sys.executable, "-m", "streamlit", "run", str(app_path())]
    argv += ["--server.address", address, "--server.port", str(port)]
    for key, value in options.items():
        argv += [f"--{key}", value]
    return argv, env


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""Signals the launcher passes on to the server it started (Ctrl-C, a service manager's
stop, a closed terminal)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """In the server's process (Linux): receive SIGTERM when the launcher dies, even if
    it is killed outright and cannot pass anything on."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(argv: list[str], env: dict[str, str]) -> int:
    """Run the Streamlit server ``argv`` as a child and wait for it, passing every stop
    signal on to it: stopping the launcher stops the server, never leaving it serving
    without a parent."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    # preexec_fn is safe here: the launcher has started no threads.
    child = subprocess.Popen(argv, env=env, preexec_fn=preexec)
    asked: list[int] = []

    def forward(signum: int, frame: object) -> None:
        asked.append(signum)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    names = [getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name)]
    previous = {sig: signal.signal(sig, forward) for sig in names}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:  # the launcher itself failed: never leave the server
            child.terminate()
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0 if asked and code in (0, *(-sig for sig in asked)) else code


def run(args: argparse.Namespace) -> int:
    argv, env = command(args)
    address = argv[argv.index("--server.address") + 1]
    port = argv[argv.index("--server.port") + 1]
    shown = "localhost" if address in ("127.0.0.1", "0.0.0.0") else address
    mode = " in classroom mode" if args.classroom else ""
    print(f"LangNeurons dashboard{mode}: http://{shown}:{port} (Ctrl-C stops it)", flush=True)
    return serve(argv, env)
