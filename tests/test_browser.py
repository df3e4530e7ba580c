"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

Starts ``langneurons dashboard`` on a free local port with an empty
statistics cache, computes on the embedded default model, visits every view, and
saves a screenshot of each into ``test-artifacts/screenshots/``.  In CI a missing
browser fails the run; elsewhere the module is skipped with the install command.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LANGNEURONS_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
pytestmark = pytest.mark.slow

if not Path(CHROMIUM).exists():
    message = f"no browser at {CHROMIUM}: apt-get install -y chromium (or set LANGNEURONS_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from playwright import sync_api as playwright_api  # noqa: E402 - after the browser check


def _script(name: str):
    """A script of ``scripts/`` as a module (its functions drive the browser here too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


load_test = _script("load_test")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``langneurons dashboard`` on a free port with an empty statistics cache."""
    cache = tmp_path_factory.mktemp("browser-cache")
    log = tmp_path_factory.mktemp("log") / "dashboard.log"
    with load_test.dashboard(cache, log) as server:
        yield {"url": server.url, "pid": server.pid, "cache": cache}


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--headless",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield instance
        instance.close()


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    page.set_default_timeout(240_000)
    page.goto(url)
    return page


def _view(page, name: str, ready: str) -> None:
    """Open a page through the navigation bar (the session stays)."""
    page.get_by_role("link", name=re.compile(f"{re.escape(name)}$")).first.click()
    page.get_by_text(ready).first.wait_for()
    _settle(page)


def _settle(page) -> None:
    """Wait until the app has finished running and charts have drawn."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=240_000
    )
    page.wait_for_timeout(1200)


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _outputs(page) -> list[str]:
    boxes = page.locator(".ln-output")
    page.wait_for_function("() => document.querySelectorAll('.ln-output .ln-lang').length === 2")
    # Line breaks show as ⏎ in coloured tokens; compare the words.
    return [" ".join(boxes.nth(i).inner_text().replace("⏎", " ").split()) for i in range(2)]


def _trace_widths(page) -> list[int]:
    """How many tokens the playground's two heatmaps (one under each text) have (their x
    labels), once both are drawn."""
    handle = page.wait_for_function(
        """() => {
            const widths = [...document.querySelectorAll('.js-plotly-plot')]
                .map(e => (e.data && e.data[0] && e.data[0].x) ? e.data[0].x.length : 0);
            return widths.length === 2 && widths.every(w => w > 0) ? widths : null;
        }"""
    )
    return handle.json_value()


def _download(page, label: str, folder: Path) -> Path:
    button = page.get_by_role("button", name=label, exact=True)
    button.scroll_into_view_if_needed()
    with page.expect_download(timeout=60_000) as info:
        button.click()
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def test_every_page_in_a_real_browser(server, browser, tmp_path):
    page = _page(browser, f"{server['url']}/?langs=en,fr,ja&budget=400")
    page.get_by_text("Language neurons per layer").first.wait_for()
    _settle(page)
    assert page.locator(".js-plotly-plot").count() == 4
    _shot(page, "1-overview")

    _view(page, "Heatmaps", "Activation probability on")
    assert page.locator(".js-plotly-plot .heatmaplayer").count() >= 1
    _shot(page, "2-heatmaps")

    # Selecting a row of the neuron table opens that neuron in the inspector.
    page.get_by_text("Selected neurons").first.scroll_into_view_if_needed()
    grid = page.locator("[data-testid=stDataFrame]").first.bounding_box()
    page.mouse.click(grid["x"] + 12, grid["y"] + 35 + 17)  # the first row's selector
    page.get_by_text("Output tokens it promotes").first.wait_for()
    page.get_by_text("peak").first.wait_for()
    assert "selected for" in page.locator("body").inner_text()
    assert page.url.split("?")[0].endswith("/inspector")
    _settle(page)
    _shot(page, "3-inspector")

    _view(page, "Neuron map", "Neurons by their per-language activation probabilities")
    _shot(page, "4-neuron-map")

    _view(page, "Playground", "Deactivate the neurons of")
    page.get_by_role("button", name="Generate", exact=True).click()
    # The heatmaps beside both continuations grow while the tokens stream.
    early = _trace_widths(page)
    _shot(page, "5a-playground-streaming")
    baseline, modified = _outputs(page)
    assert baseline != modified  # French neurons off changed the continuation
    assert baseline.startswith("fr · French")
    _settle(page)
    late = _trace_widths(page)
    assert all(a < b for a, b in zip(early, late, strict=True)), (early, late)
    assert page.locator(".ln-output .ln-token").count() > 2 * late[0] - 10
    _shot(page, "5-playground")

    _view(page, "Trace", "Each language's neurons, token by token")
    assert page.locator(".ln-token[data-lang=fr]").count() > 3
    assert page.locator(".ln-token[data-lang=ja]").count() > 3
    _shot(page, "5d-trace")

    _view(page, "Steering lab", "Steer towards")
    _check_steering_lab(page)

    _view(page, "Ablation", "Held-out tokens per language")
    page.get_by_role("button", name="Compute the matrix").click()
    page.get_by_text("NLL per token with a language's neurons off").first.wait_for()
    _settle(page)
    _shot(page, "6-ablation")

    _view(page, "Tour", "Every language has its own neurons")
    _shot(page, "7-tour")

    _view(page, "Share", "neurons.csv")
    assert page.url.split("?")[0].endswith("/share")
    assert "langs=en%2Cfr%2Cja" in page.url or "langs=en,fr,ja" in page.url
    _shot(page, "8-share")
    _check_downloads(page, tmp_path)
    page.close()


def _check_steering_lab(page) -> None:
    """A small sweep; a click on a point of the curves shows the outputs behind it."""
    count = page.get_by_label(re.compile("How many")).first
    count.fill("2")
    count.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Run the sweep").click()
    page.get_by_text("Recommended: the strength").first.wait_for()
    _settle(page)
    _shot(page, "5e-steering-lab")
    assert "outputs towards fr at strength 0:" in page.locator("body").inner_text()
    # The success curve's last point (the strongest steering of the first target).
    point = page.locator(".js-plotly-plot .scatterlayer .trace").first.locator(".point").last
    point.scroll_into_view_if_needed()
    box = point.bounding_box()  # Plotly takes clicks on its drag layer, at the point
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_text("outputs towards fr at strength 4:").first.wait_for()
    _settle(page)
    _shot(page, "5f-steering-lab-point")


def _check_downloads(page, folder: Path) -> None:
    """The files a user downloads hold the neurons the page shows."""
    import csv
    import json

    import torch

    document = json.loads(_download(page, "neurons.json", folder).read_text(encoding="utf-8"))
    assert document["languages"] == ["en", "fr", "ja"] and document["method"] == "lape"
    rows = list(csv.DictReader(_download(page, "neurons.csv", folder).open(encoding="utf-8")))
    for code in document["languages"]:
        listed = sorted((int(r["layer"]), int(r["neuron"])) for r in rows if r["language"] == code)
        per_layer = document["neurons"][code]["per_layer"]
        assert listed == sorted((layer, i) for layer, idx in enumerate(per_layer) for i in idx)
    mask_file = _download(page, "activation_mask.pth (reference format)", folder)
    masks = torch.load(mask_file, weights_only=True)
    assert [[t.tolist() for t in m] for m in masks] == [
        document["neurons"][c]["per_layer"] for c in document["languages"]
    ]


LAPTOP = {"width": 1280, "height": 800}
BOXES_JS = """() => [...document.querySelectorAll('.ln-output, .js-plotly-plot')].map(e => {
    const b = e.getBoundingClientRect();
    return {kind: e.classList.contains('ln-output') ? 'text' : 'heatmap', top: b.top,
            bottom: b.bottom, title: e.layout && e.layout.title ? e.layout.title.text : null};
})"""


def _laptop_page(browser, url: str, ready: str):
    page = browser.new_page(viewport=LAPTOP)
    page.set_default_timeout(240_000)
    page.goto(url)
    page.get_by_text(ready).first.wait_for()
    _settle(page)
    return page


def _press_generate(page) -> None:
    """Click Generate from inside the page (two pages then start within milliseconds)."""
    page.evaluate(
        "() => [...document.querySelectorAll('button')]"
        ".find(b => b.innerText.trim() === 'Generate').click()"
    )


def test_two_sessions_at_once_on_a_laptop_screen(server, browser):
    """Two students press Generate together, one switching French off on the French
    example, one steering an English prompt towards Japanese: each sees its own pair, and
    at 1280x800 both texts and the heatmap under each are on screen without scrolling;
    the steered page's heatmaps show the Japanese neurons."""
    english = "The weather today is"
    base = f"{server['url']}/playground?langs=en,fr,ja&budget=400"
    french = _laptop_page(browser, base, "Deactivate the neurons of")
    steer = f"{base}&mode=Steer&target=ja&prompt={english.replace(' ', '%20')}"
    steering = _laptop_page(browser, steer, "Steer towards")
    _press_generate(french)
    _press_generate(steering)
    # Once the texts stream, nothing of the page's first layout is left fading below them:
    # the first run's loading notices sat above the page and shifted it (Streamlit keeps
    # a run's old elements until they are replaced); they have a container of their own.
    french.locator(".ln-output").first.wait_for()
    stale = french.evaluate(
        "() => [...document.querySelectorAll(\"[data-testid='stMain'] [data-stale='true']\")]"
        ".filter(e => e.getBoundingClientRect().height > 0).length"
    )
    assert stale == 0 and french.get_by_role("button", name="Generate").count() == 1
    # That container, most often empty, adds no gap above the page.
    margin = french.evaluate(
        "() => getComputedStyle(document.querySelector('.st-key-ln_notices')"
        ".parentElement).marginBottom"
    )
    assert margin == "-16px", margin
    # Mid-stream: the texts grow and the heatmaps are drawn beside them, on screen.
    _trace_widths(french)
    _shot(french, "5g-playground-laptop-streaming")
    for page in (french, steering):
        _outputs(page)  # both finished: each box has its detected language
        _settle(page)
    _shot(french, "5h-playground-laptop")
    _shot(steering, "5i-playground-laptop-steer")

    # Each side's header is one line (a long intervention ends in an ellipsis), so the
    # two boxes start at the same height.
    for page in (french, steering):
        heights = page.evaluate(
            "() => [...document.querySelectorAll('.ln-side-head')]"
            ".map(e => e.getBoundingClientRect().height)"
        )
        assert len(heights) == 2 and heights[0] == heights[1], heights
    headers = [p.get_by_text("Modified —").first.inner_text() for p in (french, steering)]
    assert "deactivate fr" in headers[0] and "steer" not in headers[0]
    assert "steer ja" in headers[1] and "deactivate fr" not in headers[1]
    (french_base, _), (steer_base, _) = _outputs(french), _outputs(steering)
    assert french_base.startswith("fr · French La Déclaration")
    assert english in steer_base and "Déclaration" not in steer_base
    for page, language in ((french, "fr"), (steering, "ja")):
        assert page.evaluate("() => window.scrollY") == 0
        boxes = page.evaluate(BOXES_JS)
        texts = [b for b in boxes if b["kind"] == "text"]
        maps = [b for b in boxes if b["kind"] == "heatmap"]
        assert len(texts) == 2 and len(maps) == 2, boxes
        assert all(b["top"] > 0 and b["bottom"] <= LAPTOP["height"] for b in boxes), boxes
        assert all(
            m["title"].replace("<b>", "").replace("</b>", "") == f"{language} neurons" for m in maps
        ), maps
        chosen = page.evaluate(
            """() => { const box = document.querySelector('.st-key-pg_trace_lang');
                const input = box.querySelector('input');
                return ((input && input.value) || box.innerText).trim(); }"""
        )
        assert chosen.startswith(f"{language} ·"), chosen
    french.close()
    steering.close()


def test_playground_modes_and_reset_in_a_real_browser(server, browser):
    page = _page(browser, f"{server['url']}/playground?langs=en,fr,ja&budget=400")
    page.get_by_text("Deactivate the neurons of").first.wait_for()
    _settle(page)
    page.get_by_text("Steer", exact=True).click()
    page.get_by_text("Steer towards").first.wait_for()
    _settle(page)
    body = page.locator("body").inner_text()
    assert "Also deactivate" in body
    page.get_by_role("button", name="Generate", exact=True).click()
    baseline, modified = _outputs(page)
    assert baseline.startswith("fr · French") and modified != baseline
    assert "steer ja" in page.locator("body").inner_text()
    _settle(page)
    _shot(page, "5b-playground-steer")
    page.get_by_role("button", name="Reset", exact=True).click()
    page.get_by_text("Deactivate the neurons of").first.wait_for()
    _settle(page)
    assert page.locator(".ln-output").count() == 0
    prompt = page.get_by_label("Prompt", exact=True).input_value()
    assert prompt.startswith("La Déclaration")
    _shot(page, "5c-playground-after-reset")
    page.close()


def test_a_class_at_once_gets_what_each_would_get_alone(server, browser, monkeypatch, tmp_path):
    """Four sessions generate with four interventions while a fifth counts statistics
    for other languages, all on one loaded model; each gets what it would get alone."""
    from langneurons.generation import GenerationConfig, generate
    from langneurons.models import load_model
    from langneurons.pipeline import compute
    from langneurons.stats import StatsCache
    from langneurons.workflows import intervention_for

    budget = 1200
    report = load_test.measure(browser, server["url"], 4, budget, server["pid"])
    assert report["computing_alongside"] and report["sessions"] == 4

    # The same jobs alone, one after the other, in this process.
    monkeypatch.setenv("LANGNEURONS_CACHE", str(server["cache"]))
    lm = load_model()
    languages = load_test.LANGUAGES
    shared = compute(lm, languages, max_tokens=load_test.BUDGET)
    config = GenerationConfig()
    for timing in report["per_session"]:
        variant = load_test.VARIANTS[timing["variant"]]
        prompt = variant["prompt"]
        intervention = intervention_for(
            lm,
            shared.selection.masks,
            languages,
            shared.statistics,
            deactivate_languages=variant.get("off", []),
            steer_language=variant.get("steer"),
            strength=variant.get("strength", 1.0),
            prompt=prompt,
        )
        described = ", ".join(f"{k} {v}" for k, v in intervention.describe().items())
        assert timing["intervention"] == described
        expected = [generate(lm, prompt, config), generate(lm, prompt, config, intervention)]
        for box, text in zip(timing["outputs"], expected, strict=True):
            assert " ".join((prompt + text).split()) in box, (box, text)
        assert 0 < timing["first_token_s"] <= timing["done_s"]

    # The statistics counted meanwhile (read back from the server's cache) equal those
    # counted alone.
    counted = load_test.COMPUTING["languages"]
    events = []
    served = compute(lm, counted, max_tokens=budget, progress=events.append)
    assert not [e for e in events if e.stage == "count"]  # all read from the server's cache
    alone = compute(lm, counted, max_tokens=budget, cache=StatsCache(tmp_path / "alone"))
    assert alone.meta["cache_keys"] == served.meta["cache_keys"]
    assert torch.equal(served.statistics.tokens, alone.statistics.tokens)
    assert torch.equal(served.statistics.over_zero, alone.statistics.over_zero)
    for name in ("activation_sum", "activation_sq_sum"):
        assert torch.allclose(
            getattr(served.statistics, name), getattr(alone.statistics, name), rtol=1e-4
        )


def test_a_run_folder_opens_from_a_link(server, browser, tmp_path):
    """A run computed elsewhere (here: by the library, four languages) opens with ?run=DIR:
    its languages and counts, and the playground runs its model."""
    from langneurons.pipeline import compute

    run = tmp_path / "four"
    compute(None, ["en", "fr", "de", "zh"], max_tokens=300, out_dir=run)
    page = _page(browser, f"{server['url']}/?run={run}")
    page.get_by_text("Language neurons per layer").first.wait_for()
    body = page.locator("body").inner_text()
    assert "4 languages: en, fr, de, zh" in body
    assert "Open a run" in body
    _settle(page)
    _shot(page, "10-open-run")
    _view(page, "Playground", "Deactivate the neurons of")
    page.get_by_role("button", name="Generate", exact=True).click()
    baseline, modified = _outputs(page)
    assert baseline and modified
    page.close()


def test_a_closed_waiting_tab_never_wedges_the_queue(server, browser):
    """A counts; B waits its turn, then its tab is closed; C, waiting behind them, runs as
    soon as A is done; D, asking for statistics already cached, is served while C counts."""
    url = server["url"]

    def counting(langs: str, budget: int):
        page = _page(browser, f"{url}/?langs={langs}&budget={budget}")
        return page

    first = counting("it,pt,nl,pl", 2999)
    first.locator("[data-testid=stProgress]").first.wait_for()
    gone = counting("ru,uk", 2999)
    gone.get_by_text("The server is busy").first.wait_for()
    gone.close()  # the student leaves while waiting
    waiting = counting("sv,fi,tr,vi,id,ro", 2999)
    waiting.get_by_text("The server is busy").first.wait_for()
    first.get_by_text("Language neurons per layer").first.wait_for(timeout=180_000)
    # The closed tab's place is given up: the next job starts within seconds, not never.
    waiting.locator("[data-testid=stProgress]").first.wait_for(timeout=30_000)
    assert waiting.get_by_text("Language neurons per layer").count() == 0
    cached = _page(browser, f"{url}/?langs=it,pt,nl,pl&budget=2999")
    cached.get_by_text("Language neurons per layer").first.wait_for(timeout=30_000)
    assert "The server is busy" not in cached.locator("body").inner_text()
    assert waiting.get_by_text("Language neurons per layer").count() == 0  # still counting
    _shot(cached, "15-cached-beside-a-long-job")
    waiting.get_by_text("Language neurons per layer").first.wait_for(timeout=300_000)
    for page in (first, waiting, cached):
        page.close()
