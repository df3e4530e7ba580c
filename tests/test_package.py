"""LangNeurons as its users install it: a wheel built from this checkout, installed into
a new virtual environment (not an editable checkout), whose ``langneurons dashboard``
serves the page, with the embedded corpus, in a real browser, in classroom mode.

The new environment gets the wheel alone (``--no-deps``: nothing is downloaded); the
libraries it needs (torch, Streamlit, ...) come from this environment's site-packages
through a ``.pth`` line, after its own, so ``langneurons`` is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.parse
import venv
import zipfile
from pathlib import Path

import pytest

from .test_browser import load_test

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
SHIPPED = ("pyproject.toml", "README.md", "core", "dashboard", "assets")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "screenshots")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    command += ["--no-build-isolation", "--no-index", "-q", "-w", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("langneurons-*.whl")
    return built


def test_the_wheel_holds_the_dashboard_and_the_embedded_corpus(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "langneurons/cli/dashboard.py",
        "langneurons/dashboard/app.py",
        "langneurons/dashboard/main.py",
        "langneurons/dashboard/routes/playground.py",
        "langneurons/dashboard/views/playground.py",
        "langneurons/assets/udhr/en.txt",
        "langneurons/assets/udhr/fr.txt",
        "langneurons/assets/prompts/en.txt",
        "langneurons/dashboard/views/steering.py",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "scripts/")) or "__pycache__" in n for n in names)


@pytest.fixture(scope="module")
def environment(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with the wheel installed."""
    home = tmp_path_factory.mktemp("env") / "env"
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's libraries, after the new one's own packages.
    (Path(site) / "zz_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return home


def _python(environment: Path, code: str) -> list[str]:
    """What the new environment's Python prints for ``code``, a word per item."""
    done = subprocess.run(
        [str(environment / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=environment,
    )
    return done.stdout.split()


def test_the_installed_package_is_the_wheel_not_the_checkout(environment):
    where = _python(
        environment,
        "import langneurons, langneurons.dashboard as d; print(langneurons.__file__, d.__file__)",
    )
    assert all(Path(p).is_relative_to(environment) for p in where), where
    corpus = _python(
        environment,
        "from langneurons.corpus import embedded_languages; from langneurons.paths import "
        "assets_dir; from langneurons.prompts import embedded_prompts; "
        "print(assets_dir(), len(embedded_languages()), len(embedded_prompts('ja')))",
    )
    assert Path(corpus[0]).is_relative_to(environment) and int(corpus[1]) > 50, corpus
    assert int(corpus[2]) >= 20
    help_text = subprocess.run(
        [str(environment / "bin" / "langneurons"), "dashboard", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--classroom" in help_text and "--run" in help_text


def test_the_installed_dashboard_serves_a_classroom_in_a_browser(environment, tmp_path):
    from playwright.sync_api import sync_playwright

    config = tmp_path / "classroom.toml"
    config.write_text("max_budget_tokens = 300\nmax_prompt_chars = 80\n")
    port = load_test.free_port()
    env = {**os.environ, "LANGNEURONS_CACHE": str(tmp_path / "cache")}
    env.setdefault("LANGNEURONS_MODELS", str(_models_dir()))
    env.pop("PYTHONPATH", None)
    command = [str(environment / "bin" / "langneurons"), "dashboard", "--port", str(port)]
    command += ["--classroom", str(config), "--address", "127.0.0.1"]
    log = tmp_path / "dashboard.log"
    with open(log, "w") as output:
        proc = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    url = f"http://127.0.0.1:{port}"
    try:
        load_test.wait_until_serving(url, proc)
        # A crafted link: another model, and Markdown that would be a link and an image.
        crafted = {
            "langs": "en,fr",
            "model": "[log in](http://evil.example/login)",
            "prompt": "![x](http://evil.example/pixel.png) <b>bold</b>",
        }
        with sync_playwright() as playwright:
            browser = load_test.launch(playwright)
            page = browser.new_page(viewport=load_test.VIEWPORT)
            page.set_default_timeout(300_000)
            page.goto(f"{url}/playground?{urllib.parse.urlencode(crafted)}")
            page.get_by_text("Deactivate the neurons of").first.wait_for()
            load_test.settle(page)
            body = page.locator("body").inner_text()
            assert "Classroom server" in body
            assert "[log in](http://evil.example/login)" in body.replace("\u2060", "")  # as typed
            assert page.locator("a[href*='evil'], img[src*='evil'], b:text('bold')").count() == 0
            prompt = page.get_by_label("Prompt", exact=True).input_value()
            assert len(prompt) <= 80  # the classroom's cap
            page.get_by_role("button", name="Generate", exact=True).click()
            page.wait_for_function(
                "() => document.querySelectorAll('.ln-output .ln-lang').length === 2"
            )
            assert page.locator("img[src*='evil'], b:text('bold')").count() == 0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _models_dir() -> Path:
    from langneurons.paths import models_dir

    return models_dir()
