"""What several test modules build: command lines, launchers and stand-ins."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any


def compute_args(model: str | Path | None, languages: str, **options: Any) -> list[str]:
    """``compute`` arguments: ``compute_args(m, "en,fr", max_tokens=150, quiet=True)`` ->
    ``["compute", "--model", m, "--languages", "en,fr", "--max-tokens", "150", "--quiet"]``
    (``True`` is a bare flag; ``None`` and ``False`` are left out)."""
    argv = ["compute"]
    if model is not None:
        argv += ["--model", str(model)]
    argv += ["--languages", languages]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def torchrun() -> list[str]:
    """The torchrun launcher of this environment (or the module behind it)."""
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


class Upload:
    """What ``st.file_uploader`` returns: a name and the bytes."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data
