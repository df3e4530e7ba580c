"""Where LangNeurons keeps its cache and finds its embedded assets."""

from __future__ import annotations

import importlib.util
import os
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
    """The embedded assets: installed as ``langneurons.assets`` (a folder without
    ``__init__.py``, so found through its import locations), or ``assets/`` of a checkout."""
    try:
        spec = importlib.util.find_spec("langneurons.assets")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / "udhr").is_dir():
            return Path(location)
    return Path(__file__).resolve().parents[2] / "assets"
