"""What ``fyp-eval`` scores: one :class:`EvalItem` per video, from a folder of ``fyp-generate`` output or a JSONL.

- A **folder**: every ``fyp-generate`` JSON sidecar in it (any depth) is one video: its prompt, its size (for a
  side-by-side video, only the generated right-hand part is scored) and the keypoints file and rows of its pose
  frames. A sidecar is the video's file name + ``.json`` (``clip.mp4.json``; older ``fyp-generate`` wrote
  ``clip.json``, which is read too); it names its video (``"video"``), a file beside it; the run manifest
  ``generate_manifest.json`` is never one. When two sidecars name one video, ``clip.mp4.json`` is taken, then
  ``clip.json``. A video file (``.mp4``, ``.gif``) without a sidecar is an item that cannot be scored (its prompt
  is unknown), as is a sidecar whose video is gone.
  Only files inside the folder are read or scored: a sidecar whose ``video`` is a path (absolute, ``../x.mp4``,
  ``sub/x.mp4``) is an item carrying that error, and so is a video or sidecar that is a symlink to a file outside
  the folder (list such a video in a JSONL INPUT to score it). Only regular files up to
  :data:`MAX_SIDECAR_BYTES` are read as sidecars: a FIFO, a device, a symlink to one, or a larger file is skipped
  with a warning naming it (and a video beside it says so).
  The sidecar's keypoints file is found at the path it records, else by its name beside the sidecar (files moved
  together); either way it must be the very file the video was made from (the sidecar's ``keypoints_sha256``).
  A sidecar with a missing or wrongly typed field is an item carrying that error.
- A **JSONL** file: one object per line, ``video``, ``prompt`` and, optionally, ``pose``: the pose the video was
  asked to follow, a ``keypoints.parquet`` of ``pose-data extract-poses``, a driving video, or a skeleton video /
  frame folder (which has no keypoints: pose accuracy stays empty, unless it is an extract-poses skeleton video
  with its ``keypoints.parquet`` beside it); ``pose_kind``, one of ``keypoints``, ``driving_video``,
  ``skeleton_video``, ``skeleton_frames`` when the kind should not be guessed from the file (a driving video of
  dancers on black can look like a skeleton video); and ``keypoint_rows``, the keypoints file's row for each
  frame (not for a driving video: its poses are extracted at the video's frame rate, pose frame i for frame i).
  Relative paths are taken from the current folder, else from the JSONL file's folder. A bad line is an item
  carrying its error; the other lines are scored. The JSONL must be a regular file of at most
  :data:`MAX_JSONL_BYTES`, and each ``video`` a regular file (a FIFO would never end).

Frame i of the video is compared with pose frame i: row ``keypoint_rows[i]`` when the rows are known (a sidecar
records them), else the pose frame at the video frame's time ``i / fps``, sampled as ``fyp-generate`` samples a
pose source (nearest frame per tick).
"""

from __future__ import annotations

import json
import logging
import math
import os
import reprlib
from dataclasses import dataclass
from pathlib import Path

from model.evaluation.capped_read import SkippedFile, file_kind, read_capped
from model.generation.make_video import SIDECAR_FORMAT
from model.generation.outputs import old_sidecar_path, sidecar_path
from model.generation.pose_source import KINDS
from model.generation.prompt_jobs import MANIFEST_NAME
from pose_data.files.manifest import file_sha256
from pose_data.media.video_writer import VIDEO_SUFFIXES

#: The kinds of pose source (``model.generation.pose_source``'s, less "auto").
POSE_KINDS = tuple(k for k in KINDS if k != "auto")
JSONL_KEYS = ("video", "prompt", "pose", "pose_kind", "keypoint_rows")
#: The frame rates a sidecar may record (video runs at 1-240 fps; beyond these is a broken or hostile file).
MIN_FPS, MAX_FPS = 0.01, 10_000.0
#: The largest file read as a sidecar (fyp-generate's are a few KB, a few hundred KB for thousands of frames).
MAX_SIDECAR_BYTES = 16 * 2**20
#: The largest JSONL INPUT (about a million lines of video, prompt and pose).
MAX_JSONL_BYTES = 256 * 2**20

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    video: str
    prompt: str | None = None
    pose: str | None = None  # the pose source as given (a sidecar's pose.source, or the JSONL's pose)
    pose_kind: str | None = None  # keypoints, driving_video, skeleton_video, skeleton_frames; None: find out
    keypoints: str | None = None  # the keypoints.parquet to compare with (known from a sidecar)
    keypoint_rows: list[int] | None = None  # its row per video frame; None: sample by time
    crop_width: int | None = None  # side-by-side video: score the right-most crop_width columns
    fps: float | None = None  # the frame rate the sidecar records (else the decoded one)
    origin: str = ""  # the sidecar, or FILE.jsonl:LINE
    error: str | None = None  # why the video cannot be scored at all
    no_pose: str | None = None  # why pose accuracy stays empty


def read_inputs(inputs: list[str]) -> list[EvalItem]:
    """The items of every INPUT (a folder or a ``.jsonl`` file); FileNotFoundError / ValueError naming an INPUT that
    is neither, holds no video, or is a JSONL that is not a regular file of at most :data:`MAX_JSONL_BYTES`."""
    items: list[EvalItem] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = _from_folder(path)
        elif path.suffix.lower() == ".jsonl" and path.exists():
            found = _from_jsonl(path)
        elif path.exists():
            raise ValueError(f"INPUT {given}: not a folder of fyp-generate videos or a .jsonl file")
        else:
            raise FileNotFoundError(f"INPUT {given!r} does not exist")
        if not found:
            raise ValueError(f"INPUT {given}: no video in it (a folder needs fyp-generate's videos and .json sidecars)")
        items.extend(found)
    return items


def sidecar_names(video: Path) -> tuple[Path, Path]:
    """Where a video's sidecar is: its file name + ``.json`` (``clip.mp4.json``), then the older ``clip.json``."""
    return sidecar_path(video), old_sidecar_path(video)


def _default_video_name(sidecar: Path) -> str:
    """The video of a sidecar that does not name it: ``clip.mp4.json`` -> ``clip.mp4``, ``clip.json`` -> ``clip.mp4``."""
    name = sidecar.name[: -len(".json")]
    return name if name.lower().endswith(VIDEO_SUFFIXES) else name + ".mp4"


def _resolved(path: Path) -> Path:
    """``path`` with every symlink followed (as written, made absolute, for a name no file can have: a NUL byte)."""
    try:
        return path.resolve()
    except ValueError:
        return path.absolute()


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, every symlink followed, is ``root`` (a resolved folder) or inside it."""
    return _resolved(path).is_relative_to(root)


def _from_folder(folder: Path) -> list[EvalItem]:
    root = folder.resolve()
    unreadable: dict[Path, str] = {}  # sidecar -> why it was not read
    listed: list[EvalItem | Path] = []  # in the sidecars' order: an item, or the resolved video of the sidecars in by_video
    by_video: dict[Path, list[tuple[Path, Path, dict]]] = {}  # resolved video -> (video, sidecar, data) of every sidecar naming it
    for sidecar in sorted(folder.rglob("*.json")):
        if sidecar.name == MANIFEST_NAME or _temporary(sidecar):
            continue
        try:
            if sidecar.is_file() and not _inside(sidecar, root):  # (a FIFO or a device: read_capped names it)
                raise SkippedFile(sidecar, f"a symlink to {_resolved(sidecar)}, outside the folder {folder}")
            data = json.loads(read_capped(sidecar, MAX_SIDECAR_BYTES).decode("utf-8"))
        except SkippedFile as err:
            log.warning("skipped %s: %s", sidecar, err.reason)
            unreadable[sidecar] = f"was skipped: {err.reason}"
            continue
        except (ValueError, RecursionError, OSError) as err:  # not JSON, not UTF-8, too deep, a number too long
            why = type(err).__name__ if isinstance(err, RecursionError) else str(err)[:200]
            unreadable[sidecar] = f"cannot be read as JSON ({why})"
            continue  # not ours, or a sidecar spoilt: its video says so below
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            continue
        name = data.get("video") or _default_video_name(sidecar)
        if not isinstance(name, str):
            listed.append(EvalItem(str(sidecar), origin=str(sidecar), error=_unreadable(sidecar, f"video must be a file name, got {_shown(name)}")))
            continue
        if name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
            why = (f"video must be the name of a file beside the sidecar, got {name[:300]!r}: fyp-eval scores only videos "
                   "inside a folder INPUT; to score a video elsewhere, list it in a .jsonl INPUT")  # fmt: skip
            listed.append(EvalItem(str(sidecar), origin=str(sidecar), error=_unreadable(sidecar, why)))
            continue
        video = sidecar.parent / name
        resolved = _resolved(video)
        if resolved not in by_video:
            listed.append(resolved)
        by_video.setdefault(resolved, []).append((video, sidecar, data))
    items, claimed = [], set()
    for entry in listed:
        if isinstance(entry, EvalItem):
            items.append(entry)
            continue
        video, sidecar, data = min(by_video[entry], key=lambda named: _sidecar_rank(named[0], named[1]))
        for _, other, _ in by_video[entry]:
            if other != sidecar:
                log.warning("skipped sidecar %s: it names the video %s, as %s does, which is taken", other, video, sidecar)
        if video.is_file():  # (False for a name no file can have, such as one with a NUL byte)
            claimed.add(entry)
        if video.exists() and not entry.is_relative_to(root):
            items.append(EvalItem(str(video), prompt=data.get("prompt") if isinstance(data.get("prompt"), str) else None, origin=str(sidecar),
                                  error=f"the video {video} of sidecar {sidecar.name} is a symlink to {entry}, outside the folder "
                                        f"{folder}: fyp-eval scores only files inside a folder INPUT; to score it, list it in a .jsonl INPUT"))  # fmt: skip
            continue
        items.append(_from_sidecar(video, sidecar, data))
    for video in sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        if _resolved(video) in claimed or _temporary(video):
            continue
        spoilt = next((s for s in sidecar_names(video) if s in unreadable), None)
        if spoilt is not None:
            error = f"its sidecar {spoilt.name} {unreadable[spoilt]}"
        else:
            new, old = sidecar_names(video)
            error = (f"no fyp-generate sidecar ({new.name} or {old.name}) beside it, so its prompt is unknown: list it in a .jsonl "
                     "INPUT with its prompt and pose")  # fmt: skip
        items.append(EvalItem(str(video), origin=str(video), error=error))
    return items


def _temporary(path: Path) -> bool:
    """A file being written (``.NAME.tmp-*``, the project's temporary names): what a killed fyp-generate left."""
    return path.name.startswith(".") and ".tmp-" in path.name


def _sidecar_rank(video: Path, sidecar: Path) -> tuple[int, str]:
    """Which of the sidecars naming one video is taken: ``clip.mp4.json``, then ``clip.json``, then the first by name."""
    new, old = sidecar_names(video)
    return (0 if sidecar == new else 1 if sidecar == old else 2, str(sidecar))


def _from_sidecar(video: Path, sidecar: Path, data: dict) -> EvalItem:
    item = EvalItem(str(video), origin=str(sidecar))
    try:
        pose = data.get("pose") or {}
        if not isinstance(pose, dict):
            raise ValueError(f"pose must be an object, got {type(pose).__name__}")
        item.prompt = _text(data.get("prompt"), "prompt", unicode=True)
        item.pose = _text(pose.get("source"), "pose.source", optional=True)
        item.pose_kind = _kind(pose.get("kind"), "pose.kind")
        keypoints = _text(pose.get("keypoints"), "pose.keypoints", optional=True)
        digest = _text(pose.get("keypoints_sha256"), "pose.keypoints_sha256", optional=True)
        fps = data.get("fps")
        item.fps = _frame_rate(fps) if fps is not None else None
        side_by_side = data.get("side_by_side", False)
        if not isinstance(side_by_side, bool):
            raise ValueError(f"side_by_side must be true or false, got {_shown(side_by_side)}")
        if side_by_side:
            item.crop_width = _whole(data.get("width"), "width")
        rows = pose.get("keypoint_rows")
        if rows is not None and not _row_numbers(rows):
            raise ValueError(f"pose.keypoint_rows must be a non-empty list of row numbers >= 0, got {_shown(rows)}")
    except ValueError as err:
        item.error = _unreadable(sidecar, err)
        return item
    if not video.is_file():
        what = f"is {file_kind(video.stat().st_mode)}, not a video file" if video.exists() else "does not exist"
        item.error = f"the video {video.name} of sidecar {sidecar.name} {what}"
        return item
    if not keypoints:
        item.no_pose = no_keypoints_reason(item.pose_kind)
        return item
    found = _existing(keypoints, sidecar.parent, by_name=True)
    if found is None or not found.is_file():
        item.no_pose = f"the keypoints file {keypoints} the sidecar records does not exist (here or beside the sidecar)"
        return item
    if digest and file_sha256(found) != digest:
        item.no_pose = (f"the keypoints file {found} is not the one the video was made from (its SHA-256 differs from "
                        f"the sidecar's pose.keypoints_sha256)")  # fmt: skip
        return item
    item.keypoints, item.keypoint_rows = str(found), rows
    return item


def _shown(value) -> str:
    """``value`` for a message, cut short (a hostile field can be megabytes, or an int too long to print)."""
    return reprlib.repr(value)


def _unreadable(sidecar: Path, why) -> str:
    return f"sidecar {sidecar}: not a readable fyp-generate sidecar ({why})"


def _text(value, name: str, *, optional: bool = False, unicode: bool = False) -> str | None:
    """A non-empty string (``unicode``: also valid Unicode text, no lone surrogate: what a prompt must be)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {_shown(value)}")
    if unicode:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid Unicode text (a lone surrogate): {_shown(value)}") from None
    return value


def _kind(value, name: str) -> str | None:
    if value is not None and value not in POSE_KINDS:
        raise ValueError(f"{name} must be one of {', '.join(POSE_KINDS)}, got {_shown(value)}")
    return value


def _frame_rate(value) -> float:
    """A number of frames per second from :data:`MIN_FPS` to :data:`MAX_FPS`."""
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int of hundreds of digits
        number = math.inf
    if not MIN_FPS <= number <= MAX_FPS:
        raise ValueError(f"fps must be a number from {MIN_FPS:g} to {MAX_FPS:g}, got {_shown(value)}")
    return number


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {_shown(value)}")
    return value


def _row_numbers(rows) -> bool:
    """A non-empty list of row numbers."""
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in rows)


def no_keypoints_reason(kind: str | None) -> str:
    what = {"skeleton_frames": "a folder of skeleton frames", "skeleton_video": "a skeleton video"}.get(kind or "", "a pose source")
    return f"the pose is {what} without keypoints: there is nothing to compare the frames with"


def _existing(name: str, folder: Path, *, by_name: bool = False) -> Path | None:
    """``name`` as given (absolute, or from the current folder), else from ``folder`` (``by_name``: its file name
    there; files moved together with the sidecar)."""
    path = Path(os.path.expanduser(name))  # (Path.expanduser raises for an unknown ~user; this leaves it as written)
    for candidate in (path, folder / path, folder / path.name if by_name else None):
        if candidate is not None and candidate.exists():
            return candidate
    return None


def _from_jsonl(file: Path) -> list[EvalItem]:
    try:
        text = read_capped(file, MAX_JSONL_BYTES)
    except SkippedFile as err:
        raise ValueError(f"INPUT {file}: {err.reason}; pass a regular .jsonl file (split a larger one into several INPUTs)") from None
    items = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{file}:{number}"
        item = EvalItem("", origin=where)
        try:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("not UTF-8 text") from None
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"expected a JSON object, got {type(values).__name__}")
            unknown = sorted(set(values) - set(JSONL_KEYS))
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(_shown(k) for k in unknown[:5])} (known: {', '.join(JSONL_KEYS)})")
            item.video, item.prompt = _text(values.get("video"), "video"), _text(values.get("prompt"), "prompt", unicode=True)
            video = _existing(item.video, file.parent)
            if video is None:
                raise ValueError(f"the video {item.video} does not exist")
            item.video = str(video)
            if not video.is_file():  # a FIFO would make the decoder wait forever
                raise ValueError(f"the video {video} is {file_kind(video.stat().st_mode)}, not a video file")
            rows = values.get("keypoint_rows")
            if rows is not None and not _row_numbers(rows):
                raise ValueError(f"keypoint_rows must be a non-empty list of row numbers >= 0, got {_shown(rows)}")
            item.keypoint_rows = rows
            item.pose_kind = _kind(values.get("pose_kind"), "pose_kind")
            if rows is not None and item.pose_kind in ("driving_video", "skeleton_frames"):
                raise ValueError(f"keypoint_rows are rows of a keypoints file; a pose_kind {item.pose_kind} has none")
            pose = values.get("pose")
            if pose is None and item.pose_kind is not None:
                raise ValueError("pose_kind is given but pose is not")
            if pose is None:
                item.no_pose = "no pose given for this video"
            elif not isinstance(pose, str) or not pose.strip():
                raise ValueError(f"pose must be a path, got {_shown(pose)}")
            else:
                item.pose = pose
                found = _existing(pose, file.parent)
                if found is None:
                    item.no_pose = f"the pose {pose} does not exist"
                elif not (found.is_file() or found.is_dir()):  # a FIFO would make its reader wait forever
                    item.no_pose = f"the pose {found} is {file_kind(found.stat().st_mode)}, not a file or a folder of frames"
                else:
                    item.pose = str(found)
        except json.JSONDecodeError as err:
            item.error = f"{where}: not JSON ({err.msg})"
        except ValueError as err:  # (also json's refusal of a number of thousands of digits)
            item.error = f"{where}: {err}"
        except RecursionError:
            item.error = f"{where}: not JSON this reader can take (nested too deeply)"
        items.append(item)
    return items
