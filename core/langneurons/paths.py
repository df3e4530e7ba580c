"""Where LangNeurons keeps its cache and finds its embedded assets."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: ``$LANGNEURONS_CACHE``, else ``$XDG_CACHE_HOME/langneurons``,
    else ``~/.cache/langneurons``.  Created lazily by the code that writes into it."""
    env = os.environ.get("LANGNEURONS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "langneurons"


def models_dir() -> Path:
    """Where converted models live: ``$LANGNEURONS_MODELS``, else ``<cache_dir>/models``."""
    env = os.environ.get("LANGNEURONS_MODELS")
    return Path(env).expanduser() if env else cache_dir() / "models"


def assets_dir() -> Path:
    """The embedded assets: installed as ``langneurons.assets``, or ``assets/`` of a checkout."""
    try:
        installed = Path(str(resources.files("langneurons.assets")))
        if (installed / "udhr").is_dir():
            return installed
    except (ModuleNotFoundError, TypeError):
        pass
    checkout = Path(__file__).resolve().parents[2] / "assets"
    return checkout
