"""Atomic file writes: write to a hidden temp file beside the target, then rename.

A run killed at any moment leaves either the complete file or no file under the final name; the
hidden ``.NAME.tmp-*`` leftovers are ignored by pyarrow's dataset discovery and by ``{a..b}.tar``
shard patterns, and are overwritten on the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path; on success rename it to ``path`` (fsync'd), on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_temp_files(folder: str | os.PathLike) -> int:
    """Delete ``.NAME.tmp-*`` files a killed run left in ``folder``; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.glob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)
