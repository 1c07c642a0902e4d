"""Reading a small JSON file this project or a user wrote (a config, a manifest, a sidecar, a training state): one
ValueError naming the file for everything that can go wrong, so no caller forgets a case (a file that is not UTF-8,
nesting too deep for the parser)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_json(path: str | os.PathLike):
    """The JSON value in ``path``; ValueError ``"PATH: not readable JSON (...)"`` when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not readable JSON ({type(err).__name__}: {err})") from None
