"""Many browser sessions on one dashboard at once: what a class feels when everyone
presses Generate together.

Starts ``langneurons dashboard`` on a free local port with an empty statistics cache
(or uses ``--url``), opens N Chromium pages on the playground, each with its own
intervention (four kinds in turn: French off, English off, Japanese off, steer towards
Japanese), plus one page that counts statistics for other languages meanwhile, presses
Generate in all of them within a few milliseconds, and reports per session the time to
the first generated token on screen and to the finished pair (measured in each page,
from its click to what it shows; the page redraws about twice a second while tokens
stream, less often when many sessions stream, so the first token is seen a little after
it is generated), with the median and the 95th percentile, and the server's share of
the machine's CPU time (the browsers run on the same machine here)::

    python scripts/load_test.py --sessions 8 16 --out docs/load-test.json

``--overhead`` first measures ``live_view_overhead`` for one session alone: the time from
pressing Generate until the page is still (the finished pair on screen, no change in the
page for 1.5 s), over the library's time for the same pair (``stream_side_by_side`` with
the same intervention, trace and settings, timed in this script's own process while the
server is idle); the median of ``--rounds`` presses each (``--sessions`` with no count
measures only that)::

    python scripts/load_test.py --overhead --sessions

Needs the test extras (Playwright) and Debian's Chromium (``/usr/bin/chromium``, or
``LANGNEURONS_CHROMIUM``).  ``tests/test_browser.py`` drives the same functions with
four sessions and checks that each gets the text it would get alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("LANGNEURONS_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1366, "height": 768}
LANGUAGES = ["en", "fr", "ja"]
BUDGET = 400
# What a student does in the playground: four interventions, each with its own prompt.
VARIANTS: list[dict[str, Any]] = [
    {"off": ["fr"], "prompt": "La Déclaration universelle des droits de l'homme affirme que"},
    {"off": ["en"], "prompt": "The weather today is"},
    {"off": ["ja"], "prompt": "すべての人間は、生まれながらにして"},
    {"steer": "ja", "strength": 1.0, "prompt": "Every child has the right to"},
]
COMPUTING: dict[str, Any] = {"languages": ["en", "de", "es"], "budget": 1500}
MARKER_JS = """
() => {
    const t = {t0: performance.now(), shown: null, length: 0, first: null, done: null};
    window.__ln = t;
    const check = () => {
        const now = performance.now();
        const boxes = [...document.querySelectorAll('.ln-output')];
        if (boxes.length && t.first === null) {
            const length = boxes.reduce((sum, b) => sum + b.innerText.length, 0);
            if (t.shown === null) { t.shown = now; t.length = length; }
            else if (length > t.length) t.first = now;  // a generated token is on screen
        }
        if (t.done === null
            && document.querySelectorAll('.ln-output .ln-lang').length === 2) {
            t.done = now;
            if (t.first === null) t.first = now;
        }
    };
    new MutationObserver(check).observe(
        document.body, {subtree: true, childList: true, characterData: true});
    const button = [...document.querySelectorAll('button')]
        .find(b => b.innerText.trim() === 'Generate');
    button.click();
}
"""


# Marks the press of Generate and the page's last change; ``done`` once a new pair's two
# language badges are on screen (the old pair's badges go when its first frame is drawn).
STILL_JS = """
() => {
    const t = {t0: performance.now(), fresh: false, done: null, last: performance.now()};
    window.__still = t;
    const badges = () => document.querySelectorAll('.ln-output .ln-lang').length;
    new MutationObserver(() => {
        t.last = performance.now();
        if (badges() < 2) t.fresh = true;
        else if (t.fresh && t.done === null) t.done = t.last;
    }).observe(document.body,
        {subtree: true, childList: true, characterData: true, attributes: true});
    [...document.querySelectorAll('button')]
        .find(b => b.innerText.trim() === 'Generate').click();
}
"""
QUIET_MS = 1500


@dataclass
class SessionTiming:
    """One session's press of Generate: seconds to the first token and to the end."""

    variant: int
    first_token_s: float
    done_s: float
    outputs: list[str] = field(default_factory=list)
    intervention: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running dashboard: its address and process id."""

    url: str
    pid: int


@contextlib.contextmanager
def dashboard(
    cache: Path, log: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``langneurons dashboard`` on a free local port."""
    from langneurons.paths import models_dir

    port = free_port()
    environment = {**os.environ, **(env or {})}
    environment.setdefault("LANGNEURONS_MODELS", str(models_dir()))
    environment["LANGNEURONS_CACHE"] = str(cache)
    command = [sys.executable, "-m", "langneurons.cli", "dashboard", "--port", str(port)]
    with open(log, "w") as output:
        # A session of its own: the command runs Streamlit as a child, which must stop with
        # it (stopping the command alone left the server running on, holding a model).
        proc = subprocess.Popen(
            [*command, *extra],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url, proc)
            yield Server(url, proc.pid)
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop ``proc`` and every process of its session: politely, then for good."""
    import signal

    def alive() -> bool:
        proc.poll()  # reaps the command once it has exited
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not alive():
                return
            time.sleep(0.2)


def wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {proc.returncode}")
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the dashboard did not answer at {url} within {timeout:.0f} s")


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"],
    )


def settle(page: Any, timeout_ms: int = 600_000) -> None:
    """Wait until the app has finished its run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=timeout_ms
    )
    page.wait_for_timeout(500)


def playground_url(url: str, variant: dict[str, Any]) -> str:
    query: dict[str, Any] = {
        "langs": ",".join(LANGUAGES),
        "budget": BUDGET,
        "prompt": variant["prompt"],
    }
    if "steer" in variant:
        query.update(mode="Steer", target=variant["steer"], strength=variant["strength"])
    else:
        query["off"] = ",".join(variant["off"])
    return f"{url}/playground?{urllib.parse.urlencode(query)}"


def open_page(browser: Any, address: str, ready: str) -> Any:
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(600_000)
    page.goto(address)
    page.get_by_text(ready).first.wait_for()
    settle(page)
    return page


def open_sessions(browser: Any, url: str, count: int) -> list[Any]:
    """``count`` playground pages, the variants in turn (the first one counts the
    statistics they share, the others find them in the cache)."""
    pages = []
    for i in range(count):
        variant = VARIANTS[i % len(VARIANTS)]
        ready = "Steer towards" if "steer" in variant else "Deactivate the neurons of"
        pages.append(open_page(browser, playground_url(url, variant), ready))
    return pages


def start_computing(browser: Any, url: str, budget: int) -> Any:
    """A page counting new statistics: returns once its progress bar shows."""
    query = {"langs": ",".join(COMPUTING["languages"]), "budget": budget}
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(600_000)
    page.goto(f"{url}/?{urllib.parse.urlencode(query)}")
    page.locator("[data-testid=stProgress]").first.wait_for()
    return page


def computing_finished(page: Any) -> None:
    page.get_by_text("Language neurons per layer").first.wait_for()
    settle(page)


def generate_together(pages: Sequence[Any]) -> list[SessionTiming]:
    """Press Generate in every page (a few ms apart) and time each in the page itself."""
    for page in pages:
        page.evaluate(MARKER_JS)
    timings = []
    for i, page in enumerate(pages):
        page.wait_for_function("() => window.__ln.done !== null", timeout=600_000)
        marks = page.evaluate("() => window.__ln")
        boxes = page.locator(".ln-output")
        outputs = [" ".join(boxes.nth(j).inner_text().replace("⏎", " ").split()) for j in range(2)]
        header = page.get_by_text("Modified —").first.inner_text()
        timings.append(
            SessionTiming(
                variant=i % len(VARIANTS),
                first_token_s=(marks["first"] - marks["t0"]) / 1000,
                done_s=(marks["done"] - marks["t0"]) / 1000,
                outputs=outputs,
                intervention=header.split("—", 1)[1].strip(),
            )
        )
    return timings


def _children(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time used so far by process ``pid`` and its descendants (Linux ``/proc``; the
    dashboard command runs Streamlit as a child), or, without ``pid``, by the whole
    machine (all cores, idle excluded)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        if pid is None:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
            return (user + nice + system + irq + softirq) / tick
        total = 0
        for member in _children(pid):
            try:
                stat = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(stat[11]) + int(stat[12])  # utime, stime
        return total / tick
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(timings: Sequence[SessionTiming]) -> dict[str, float]:
    first = [t.first_token_s for t in timings]
    done = [t.done_s for t in timings]
    return {
        "sessions": len(timings),
        "first_token_p50_s": round(percentile(first, 50), 2),
        "first_token_p95_s": round(percentile(first, 95), 2),
        "done_p50_s": round(percentile(done, 50), 2),
        "done_p95_s": round(percentile(done, 95), 2),
    }


def measure(
    browser: Any,
    url: str,
    sessions: int,
    computing_budget: int | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Open ``sessions`` playground pages (and, with ``computing_budget``, one page
    counting that many tokens per language of other languages), press Generate in all
    at once; the timings' median and 95th percentile, each session's result, and (with
    ``server_pid``, on Linux) the server's share of the machine's CPU time meanwhile: on
    one machine the browsers compete with the server, as they would not in a class."""
    pages = open_sessions(browser, url, sessions)
    counter = start_computing(browser, url, computing_budget) if computing_budget else None
    machine, served = cpu_seconds(), cpu_seconds(server_pid) if server_pid else float("nan")
    try:
        timings = generate_together(pages)
        machine = cpu_seconds() - machine
        served = (cpu_seconds(server_pid) - served) if server_pid else float("nan")
        still_counting = (
            counter is not None and counter.locator("[data-testid=stProgress]").count() > 0
        )
        if counter is not None:
            computing_finished(counter)
    finally:
        for page in [*pages, *([counter] if counter is not None else [])]:
            page.close()
    return {
        **summary(timings),
        "computing_alongside": computing_budget is not None,
        "still_counting_when_all_finished": still_counting,
        "server_cpu_share": round(served / machine, 2) if machine > 0 else None,
        "per_session": [asdict(t) for t in timings],
    }


def time_until_still(page: Any, timeout_ms: int = 600_000) -> tuple[float, float]:
    """Press Generate; seconds until the finished pair is on screen and until the page's
    last change before it stays still (no run in progress, no change for 1.5 s)."""
    page.evaluate(STILL_JS)
    page.wait_for_function("() => window.__still.done !== null", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')"
        f" && performance.now() - window.__still.last > {QUIET_MS}",
        timeout=timeout_ms,
    )
    marks = page.evaluate("() => window.__still")
    return (marks["done"] - marks["t0"]) / 1000, (marks["last"] - marks["t0"]) / 1000


def library_pair_seconds(variant: dict[str, Any], rounds: int) -> list[float]:
    """The same pair as the playground generates for ``variant`` (its intervention, the
    trace of every language, the page's default settings and detection candidates),
    timed with the library alone in this process: every state consumed, nothing drawn."""
    from langneurons.generation import GenerationConfig, stream_side_by_side
    from langneurons.models import load_model
    from langneurons.pipeline import compute
    from langneurons.trace import TraceSpec
    from langneurons.workflows import intervention_for

    lm = load_model()
    result = compute(lm, LANGUAGES, max_tokens=BUDGET)
    masks, prompt = result.selection.masks, variant["prompt"]
    intervention = intervention_for(
        lm,
        masks,
        LANGUAGES,
        result.statistics,
        deactivate_languages=variant.get("off", []),
        steer_language=variant.get("steer"),
        strength=variant.get("strength", 1.0),
        prompt=prompt,
    )
    spec = TraceSpec.from_masks(masks, LANGUAGES)
    candidates = sorted({*LANGUAGES, "en"})
    times = []
    for _ in range(rounds + 1):  # the first one warms up
        start = time.perf_counter()
        for _state in stream_side_by_side(
            lm, prompt, intervention, GenerationConfig(), candidates, trace=spec
        ):
            pass
        times.append(time.perf_counter() - start)
    return times[1:]


def live_view_overhead(
    browser: Any, url: str, rounds: int = 3, variant: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One session alone: the playground's time from Generate until the page is still,
    over the library's time for the same pair (medians of ``rounds`` each; target <= 1.3).
    The server is idle while the library is timed, and the other way round."""
    variant = variant or VARIANTS[0]
    page = open_page(browser, playground_url(url, variant), "Deactivate the neurons of")
    try:
        time_until_still(page)  # warm-up: the first press also warms the server's caches
        pressed = [time_until_still(page) for _ in range(rounds)]
    finally:
        page.close()
    library = library_pair_seconds(variant, rounds)
    still = percentile([s for _, s in pressed], 50)
    alone = percentile(library, 50)
    return {
        "live_view_overhead": round(still / alone, 2),
        "page_still_p50_s": round(still, 2),
        "pair_on_screen_p50_s": round(percentile([d for d, _ in pressed], 50), 2),
        "library_p50_s": round(alone, 2),
        "page_still_s": [round(s, 2) for _, s in pressed],
        "library_s": [round(t, 2) for t in library],
        "variant": variant,
        "languages": LANGUAGES,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="*", default=[8, 16])
    parser.add_argument(
        "--overhead", action="store_true", help="first measure live_view_overhead alone"
    )
    parser.add_argument("--rounds", type=int, default=3, help="presses for --overhead")
    parser.add_argument("--url", default=None, help="a running dashboard (default: start one)")
    parser.add_argument("--no-computing", action="store_true", help="no session counts")
    parser.add_argument("--out", default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    if args.sessions and min(args.sessions) < 1:
        parser.error("--sessions: each count must be at least 1")
    if not args.sessions and not args.overhead:
        parser.error("nothing to measure: give --sessions counts or --overhead")
    if not Path(CHROMIUM).exists():
        parser.error(f"no browser at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    results = []
    overhead = None
    with (
        tempfile.TemporaryDirectory() as scratch,
        sync_playwright() as playwright,
        contextlib.ExitStack() as stack,
    ):
        server = None
        if args.url is None:
            server = stack.enter_context(
                dashboard(Path(scratch) / "cache", Path(scratch) / "dashboard.log")
            )
        url = server.url if server is not None else args.url
        browser = launch(playwright)
        try:
            if args.overhead:
                overhead = live_view_overhead(browser, url, args.rounds)
                print(json.dumps(overhead, ensure_ascii=False))
            for round_, count in enumerate(args.sessions):
                # Each round's counting job is new: another budget is another count.
                budget = int(COMPUTING["budget"]) + round_
                result = measure(
                    browser,
                    url,
                    count,
                    None if args.no_computing else budget,
                    server.pid if server is not None else None,
                )
                results.append(result)
                print(json.dumps({k: v for k, v in result.items() if k != "per_session"}))
        finally:
            browser.close()
    document = {
        "cpu_count": os.cpu_count(),
        "variants": VARIANTS,
        "computing": COMPUTING,
        "live_view_overhead": overhead,
        "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print("| sessions | first token p50 | p95 | finished p50 | p95 |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['sessions']} | {r['first_token_p50_s']} s | {r['first_token_p95_s']} s "
            f"| {r['done_p50_s']} s | {r['done_p95_s']} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
