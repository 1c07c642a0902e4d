"""``fyp-app``'s temporary files: one root folder for the app's run, a folder per browser session inside it.

The root also holds Gradio's own cache (``GRADIO_TEMP_DIR`` is pointed there), so closing the app removes every file
it wrote; a session's folder goes when its page is closed (Gradio's unload event), while what Gradio cached for it
(its uploads, the copies of the videos sent to its page) stays until the app closes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


class SessionFiles:
    """The app's temporary folder (a context manager: removed on exit) and its per-session folders."""

    def __init__(self, parent: str | os.PathLike | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fyp-app-", dir=parent)).resolve()
        self.uploads = self.root / "gradio"
        self.uploads.mkdir()

    def session(self, session_id: str) -> Path:
        """The folder of one session (created when first asked for)."""
        folder = self.root / "sessions" / _safe_id(session_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def end_session(self, session_id: str) -> None:
        shutil.rmtree(self.root / "sessions" / _safe_id(session_id), ignore_errors=True)

    def sessions(self) -> list[str]:
        folder = self.root / "sessions"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SessionFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _safe_id(session_id: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", str(session_id or "anonymous"))[:64]
    return cleaned or "anonymous"
