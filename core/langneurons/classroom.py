"""Classroom mode: the settings of a dashboard shared by a whole class, read once at start.

One teacher starts the dashboard on a machine and a class opens the link.  In classroom
mode the server runs only the models it allows, reads folders only under the roots it
names, caps what one student can ask of it, and queues long jobs.  The settings live in a
TOML file given at start (``langneurons dashboard --classroom FILE``, or the environment
variable ``LANGNEURONS_CLASSROOM``), never in a link.  Every key is optional:

.. code-block:: toml

    models = ["gemma-3-270m"]       # the models students may use; the first is the default
    corpus_roots = ["/srv/texts"]   # folders of <code>.txt files may be chosen below these
    run_roots = ["/srv/runs"]       # run folders may be opened below these
    uploads = true                  # students may upload their own <code>.txt files
    max_upload_mb = 1.0
    max_prompt_chars = 500
    max_new_tokens = 100
    max_compute_languages = 8
    max_budget_tokens = 5000        # token budget per language when counting
    max_ablation_languages = 4
    max_ablation_tokens = 300
    max_steering_prompts = 8        # prompts per steering sweep (targets: max_ablation_languages)
    max_loaded_models = 1
    job_timeout_s = 300             # a long job waits at most this long for its turn
    address = "0.0.0.0"             # where the server listens (all interfaces)
    port = 8501

>>> config = ClassroomConfig()
>>> config.models, config.max_prompt_chars
(('gemma-3-270m',), 500)
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, setting, validate
from .models import DEFAULT_MODEL

ENVIRONMENT = "LANGNEURONS_CLASSROOM"


@dataclass(frozen=True)
class ClassroomConfig:
    """What a classroom server allows (see the module's docstring for the file)."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    corpus_roots: tuple[str, ...] = ()
    run_roots: tuple[str, ...] = ()
    uploads: bool = setting(True, "students may upload their own <code>.txt files")
    max_upload_mb: float = setting(1.0, "largest upload per language, MB", above=0.0)
    max_prompt_chars: int = setting(500, "longest prompt or traced text, characters", minimum=1)
    max_new_tokens: int = setting(100, "most tokens one generation may ask for", minimum=1)
    max_compute_languages: int = setting(8, "most languages one computation counts", minimum=2)
    max_budget_tokens: int = setting(5000, "largest token budget per language", minimum=32)
    max_ablation_languages: int = setting(4, "most languages in an ablation matrix", minimum=2)
    max_ablation_tokens: int = setting(300, "most held-out tokens per language", minimum=8)
    max_steering_prompts: int = setting(8, "most prompts in a steering sweep", minimum=1)
    max_loaded_models: int = setting(1, "models held in memory at once", minimum=1)
    job_timeout_s: float = setting(300.0, "longest wait for a long job's turn, s", above=0.0)
    address: str = setting("0.0.0.0", "the address the server listens on")
    port: int = setting(8501, "the port the server listens on", minimum=1, maximum=65535)

    def __post_init__(self) -> None:
        validate(self)
        if not self.models:
            raise ConfigError("models: name at least one model students may use.")

    def allows_model(self, spec: str) -> bool:
        return spec in self.models

    def resolve_under(self, roots: Sequence[str], name: str) -> Path | None:
        """``name`` (relative to a root, or absolute) as a folder inside one of ``roots``,
        or ``None`` when it is outside them all (``..`` and links cannot leave a root)."""
        if not name.strip():
            return None
        for root in roots:
            base = Path(root).expanduser().resolve()
            candidate = Path(name).expanduser()
            target = (candidate if candidate.is_absolute() else base / candidate).resolve()
            if target == base or base in target.parents:
                return target
        return None

    def folders_under(self, roots: Sequence[str], marker: str | None = None) -> list[str]:
        """Folders under ``roots`` (one level down, and the roots themselves) to choose
        from; with ``marker``, only those holding that file (or glob).  A link leading out
        of its root is never offered."""
        found = []
        for root in roots:
            base = Path(root).expanduser().resolve()
            if not base.is_dir():
                continue
            for folder in [base, *sorted(p for p in base.iterdir() if p.is_dir())]:
                real = folder.resolve()
                if folder.name.startswith(".") or not (real == base or base in real.parents):
                    continue
                if marker is None or any(real.glob(marker)):
                    found.append(str(real))
        return found


def _from_document(document: dict[str, Any], source: str) -> ClassroomConfig:
    names = {f.name for f in dataclasses.fields(ClassroomConfig)}
    unknown = sorted(set(document) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(unknown)}; the settings are "
            f"{', '.join(sorted(names))}."
        )
    values = dict(document)
    for key in ("models", "corpus_roots", "run_roots"):
        if key in values:
            if not isinstance(values[key], list) or not all(
                isinstance(v, str) for v in values[key]
            ):
                raise ConfigError(f"{source}: {key} must be a list of strings.")
            values[key] = tuple(values[key])
    try:
        return ClassroomConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_classroom(path: str | Path) -> ClassroomConfig:
    """Read a classroom file (TOML); a clear error naming the file and the setting."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    source = str(path)
    try:
        document = tomllib.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the classroom file {source!r}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The classroom file {source!r} is not valid TOML: {exc}.") from exc
    return _from_document(document, source)


def classroom_from_environment() -> ClassroomConfig | None:
    """The classroom settings the server was started with, or ``None`` (a single user on
    their own machine: no limits)."""
    path = os.environ.get(ENVIRONMENT)
    return load_classroom(path) if path else None
