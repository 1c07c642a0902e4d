"""Find the user's video files by video_id: one walk of the ``--videos`` folder, then dict lookups.

The rule, for every regular file under the folder (nested folders allowed, symlinks followed,
hidden files and folders skipped) whose extension is in :data:`VIDEO_EXTENSIONS` (any case):

- ``<video_id>.<ext>`` stands for ``video_id`` (the whole name before the last dot; so yt-dlp's
  leftovers ``ID.f137.mp4`` / ``ID.temp.mp4`` stand for other, never-asked-for ids, and its
  ``ID.mp4.part`` files are not videos at all);
- ``<anything> [<video_id>].<ext>`` (yt-dlp's default ``%(title)s [%(id)s].%(ext)s`` names) also
  stands for the id in brackets.

When several files stand for one id the choice is deterministic: an exact ``<video_id>.<ext>`` name
before a bracketed one, then ``.mp4`` before other containers, then the larger file (a partial or
lower-quality copy is usually smaller), then the path in sort order. The others are kept in
:meth:`VideoIndex.alternatives` so the indexer can report them.

Cost: one ``os.scandir`` pass; files are stat'ed only when an id has more than one candidate
(100k files take well under a second on a local disk).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = frozenset(
    {"mp4", "m4v", "webm", "mkv", "avi", "mov", "flv", "wmv", "mpg", "mpeg", "ts", "m2ts", "mts", "3gp", "ogv", "vob"}
)
_BRACKETED_ID = re.compile(r"\[([^\[\]/\\]+)\]$")


@dataclass(frozen=True)
class _Candidate:
    path: str
    exact: bool  # named <video_id>.<ext>, not <title> [<video_id>].<ext>

    def rank(self) -> tuple:
        """Sort key: smaller is preferred."""
        is_mp4 = self.path.lower().endswith(".mp4")
        try:
            size = os.stat(self.path).st_size
        except OSError:  # vanished or broken symlink: last
            size = -1
        return (not self.exact, not is_mp4, -size, self.path)


def video_ids_of_name(name: str) -> list[tuple[str, bool]]:
    """The ``(video_id, exact)`` pairs a file name stands for; empty for a non-video name.

    >>> video_ids_of_name("QMi8x8o55Ns.mp4")
    [('QMi8x8o55Ns', True)]
    >>> video_ids_of_name("Bikes at dawn [QMi8x8o55Ns].webm")
    [('Bikes at dawn [QMi8x8o55Ns]', True), ('QMi8x8o55Ns', False)]
    """
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or ext.lower() not in VIDEO_EXTENSIONS:
        return []
    ids = [(stem, True)]
    bracketed = _BRACKETED_ID.search(stem)
    if bracketed and bracketed.group(1) != stem:
        ids.append((bracketed.group(1), False))
    return ids


class VideoIndex:
    """video_id -> video file, built once from a folder (see the module docstring for the rule)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        """Walk ``root`` (if given). Raises FileNotFoundError / NotADirectoryError for a bad root."""
        self._candidates: dict[str, list[_Candidate]] = {}
        self._chosen: dict[str, str] = {}
        self.root = Path(root) if root is not None else None
        if root is not None:
            if not self.root.exists():
                raise FileNotFoundError(f"--videos folder not found: {self.root}")
            if not self.root.is_dir():
                raise NotADirectoryError(f"--videos must be a folder, got the file {self.root}")
            self._walk(self.root)

    def _walk(self, root: Path) -> None:
        visited: set[tuple[int, int]] = set()  # (device, inode) of folders: symlink loops end here
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
                if (info.st_dev, info.st_ino) in visited:
                    continue
                visited.add((info.st_dev, info.st_ino))
                entries = list(os.scandir(folder))
            except OSError:  # unreadable folder: its videos are simply not found (video_missing)
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        stack.append(entry.path)
                    elif entry.is_file():
                        self.add_file(entry.path)
                except OSError:
                    continue

    def add_file(self, path: str | os.PathLike) -> list[str]:
        """Register one file (e.g. one just downloaded); returns the video ids it stands for."""
        path = os.fspath(path)
        ids = video_ids_of_name(os.path.basename(path))
        for video_id, exact in ids:
            candidate = _Candidate(path, exact)
            found = self._candidates.setdefault(video_id, [])
            if candidate not in found:
                found.append(candidate)
            self._chosen.pop(video_id, None)  # choose again on the next lookup
        return [video_id for video_id, _ in ids]

    def _choose(self, video_id: str) -> str | None:
        chosen = self._chosen.get(video_id)
        if chosen is None:
            found = self._candidates.get(video_id)
            if not found:
                return None
            if len(found) > 1:
                found.sort(key=_Candidate.rank)
            chosen = self._chosen[video_id] = found[0].path
        return chosen

    def lookup(self, video_id: str) -> Path | None:
        """The chosen file for ``video_id``, or None when no file stands for it."""
        chosen = self._choose(video_id)
        return Path(chosen) if chosen is not None else None

    def alternatives(self, video_id: str) -> list[Path]:
        """The other files that stand for ``video_id`` (not chosen), in preference order."""
        if self._choose(video_id) is None:
            return []
        return [Path(c.path) for c in self._candidates[video_id][1:]]

    def ambiguous_ids(self) -> list[str]:
        """The video ids with more than one file, sorted."""
        return sorted(video_id for video_id, found in self._candidates.items() if len(found) > 1)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._candidates

    def __len__(self) -> int:
        """How many video ids have at least one file."""
        return len(self._candidates)
