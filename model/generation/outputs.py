"""The files ``fyp-generate`` writes for one video, and the checks they pass before any model is loaded.

A video ``clip.mp4`` comes with files named after its full file name, so that ``clip.mp4`` and ``clip.gif`` in one
folder never share one:

- ``clip.mp4.json``: the sidecar (every setting, the seed, the models, the pose source; ``fyp-eval`` reads it);
- ``clip.mp4.keypoints.parquet``: the poses extracted from a driving video (only for that kind of pose source).

Sidecars written before these names were ``clip.json``; one that names its video still counts as done on resume.

A file the video writes may not be an input (the pose source or a file of it, a model file, the ``--prompts``
file) nor lie inside an input folder (a skeleton-frame folder, a model folder): "input" is decided on resolved
paths, so a symlink to the pose source is the pose source. It may not be an existing folder, nor have a file
where a parent folder should be. All files are written atomically (a temp file renamed over the target), so the
place written is the target's directory entry: its parent folder resolved, plus its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def sidecar_path(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.mp4.json``."""
    return video.with_name(video.name + ".json")


def old_sidecar_path(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.json``: the sidecar name of earlier versions (read on resume, never written)."""
    return video.with_suffix(".json")


def keypoints_path(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.mp4.keypoints.parquet``: poses extracted from a driving video for this video."""
    return video.with_name(video.name + ".keypoints.parquet")


def written_files(video: Path) -> dict[str, Path]:
    """Every file one video may write, by role (the keypoints file only for a driving video)."""
    return {"video": video, "sidecar": sidecar_path(video), "keypoints": keypoints_path(video)}


def written_location(path: Path) -> Path:
    """Where an atomic write of ``path`` lands: its parent folder resolved (symlinks followed), plus its name."""
    try:
        return path.absolute().parent.resolve() / path.name
    except (OSError, RuntimeError) as err:  # a symlink loop (RuntimeError before Python 3.13), a folder not readable
        raise ValueError(f"output {path}: its folder cannot be resolved ({err}): choose another output") from None


@dataclass
class Inputs:
    """The paths a run reads, resolved, each with what it is (for the message): files, and folders read whole."""

    files: dict[Path, str] = field(default_factory=dict)
    folders: dict[Path, str] = field(default_factory=dict)

    def add(self, path: str | Path | None, what: str) -> None:
        if path is None or str(path) == "":
            return
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError):  # a symlink loop: no output can be it; reading it fails later, named
            resolved = Path(path).absolute()
        (self.folders if resolved.is_dir() else self.files).setdefault(resolved, what)

    def add_pose(self, pose: str | None, what: str) -> None:
        """The pose source, and the ``keypoints.parquet`` beside a video (an extract-poses skeleton video's poses)."""
        if not isinstance(pose, str) or not pose:
            return
        self.add(pose, what)
        path = Path(pose)
        if not path.is_dir() and path.suffix.lower() != ".parquet":
            self.add(path.parent / "keypoints.parquet", f"the keypoints.parquet beside {what}")

    def add_models(self, models: dict[str, str | None]) -> None:
        """Model paths that exist here (a hub id names no local file)."""
        for flag, value in models.items():
            if value and Path(value).exists():
                self.add(value, f"the model given as {flag}")

    def clash(self, path: Path) -> str | None:
        """How ``path`` (a place about to be written) meets an input, with the way out; None when it does not."""
        if path in self.files:
            return f"is {self.files[path]} ({path}): writing it would replace an input; choose another output"
        for folder, what in self.folders.items():
            if path == folder or folder in path.parents:
                return f"lies inside {what} ({folder}), an input folder: choose an output outside it"
        return None


def describe(video: Path, role: str, path: Path) -> str:
    return f"output {video}" if role == "video" else f"output {video}: its {role} file {path.name}"


def check_output(video: Path, inputs: Inputs) -> dict[str, Path]:
    """ValueError naming the output and the way out when a file it writes is a folder, has a file for a parent,
    or is an input; returns :func:`written_files` at their :func:`written_location`."""
    places = {}
    for role, path in written_files(video).items():
        name = describe(video, role, path)
        if path.is_dir():
            raise ValueError(f"{name} is an existing folder: choose another output name")
        parent = next(p for p in path.absolute().parents if p.exists() or p == p.parent)
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{name}: {parent} is a file, not a folder: choose another output folder")
        place = written_location(path)
        clash = inputs.clash(place)
        if clash is not None:
            raise ValueError(f"{name} {clash}")
        places[role] = place
    return places
