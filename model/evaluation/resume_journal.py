"""``fyp-eval``'s resume journal ``DIR/scored.jsonl``: the key of a scored video, and the rows read back from it.

A video's key (:func:`resume_key`) is its :func:`item_stamp` (its file's size and modification time, its prompt,
its pose files) and the models' :func:`fingerprint` (a local folder's files, a hub model's cached revision): a run
takes a video's row from the journal only when none of these changed. A line that is torn (a killed run) or not a
whole ``ok`` row is skipped, so its video is scored again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from model.evaluation.capped_read import file_kind
from model.evaluation.config import EvalConfig
from model.evaluation.inputs import EvalItem
from model.evaluation.video_scoring import OK, SCHEMA
from pose_data.files.hub_revision import hub_revision

#: Part of every resume key: a change to what is scored (or how) makes earlier journals' rows stale.
KEY_VERSION = "fyp-eval/3"
#: The longest line of ``DIR/scored.jsonl`` read (a row holds a few figures per frame, about 100 bytes a frame).
MAX_JOURNAL_LINE_BYTES = 64 * 2**20


def fingerprint(cfg: EvalConfig) -> dict:
    """What changes the scores: the CLIP model and the pose model, with the files they load (a local folder's or
    checkpoint's sizes and times, a hub model's cached revision); not devices or batch sizes."""
    pose = {k: v for k, v in asdict(cfg.pose).items() if k not in ("device", "batch_size")}
    pose_files = {k: file_stamp(v) for k, v in pose.items() if k.endswith(("_model", "_checkpoint")) and isinstance(v, str)}
    return {"format": KEY_VERSION, "clip_model": cfg.clip_model, "clip_files": file_stamp(cfg.clip_model),
            "clip_revision": hub_revision(cfg.clip_model), "pose": pose, "pose_files": pose_files}  # fmt: skip


def file_stamp(path: str | os.PathLike | None):
    """A file's (size, mtime), a folder's ``[name, size, mtime]`` for every file in it, None when there is none."""
    if not path:
        return None
    path = Path(os.path.expanduser(path))
    try:
        if path.is_file():
            stat = path.stat()
            return [stat.st_size, stat.st_mtime_ns]
        if path.is_dir():
            return [[str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(path.rglob("*")) if f.is_file()]
    except (OSError, ValueError):
        return None
    return None


def item_stamp(item: EvalItem) -> dict | None:
    """What of a video its scores depend on: its file, prompt, and the pose files it is compared with (as given,
    and the ``keypoints.parquet`` beside a skeleton video), by size and time; None when it cannot be scored anyway.
    Taken before scoring, so a file rewritten meanwhile is scored again next time."""
    if item.error:
        return None
    video = file_stamp(item.video)
    if video is None:
        return None
    read = [item.keypoints, item.pose, str(Path(item.pose).parent / "keypoints.parquet") if item.pose else None]
    listed = {k: v for k, v in asdict(item).items() if k != "origin"}  # a line moved in its jsonl is the same video
    return {"video": str(Path(item.video).resolve()), "stamp": video, "item": listed, "pose_files": [(p, file_stamp(p)) for p in read if p]}


def resume_key(stamp: dict | None, models: dict) -> str | None:
    """The resume key of a video: its :func:`item_stamp` and the models' :func:`fingerprint`."""
    if stamp is None:
        return None
    return hashlib.sha256(json.dumps({**stamp, "models": models}, sort_keys=True, default=str).encode()).hexdigest()


#: What a journal row must hold besides the :data:`~model.evaluation.video_scoring.SCHEMA` columns (the overall figures need them).
JOURNAL_FIELDS = ("frames", "clip_score", "frame_clip_scores", "frame_persons", "person_found", "pose_frames", "_pairs")


def load_scored(path: Path) -> dict[str, dict]:
    """The rows already scored; a line that is torn (a killed run) or not a whole ``ok`` row is skipped, so its video
    is scored again. ValueError for a journal that is not a regular file (a FIFO would never end, nor would
    ``/dev/zero``) or has a line longer than :data:`MAX_JOURNAL_LINE_BYTES`: not fyp-eval's."""
    done: dict[str, dict] = {}
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return done
    way_out = "remove it, or choose another --output"
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is {file_kind(mode)}, not fyp-eval's journal (a regular file): {way_out}")
    with open(path, "rb") as f:
        for number, raw in enumerate(iter(lambda: f.readline(MAX_JOURNAL_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_JOURNAL_LINE_BYTES:
                raise ValueError(f"{path}: line {number} is longer than {MAX_JOURNAL_LINE_BYTES // 2**20} MiB, so this is not "
                                 f"fyp-eval's journal: {way_out}")  # fmt: skip
            try:
                entry = json.loads(raw.decode("utf-8", errors="replace"))
                if _whole_row(entry["row"]):
                    done[str(entry["key"])] = entry["row"]
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError, pa.ArrowException):
                continue
    return done


def _whole_row(row: dict) -> bool:
    """A journal row as :func:`~model.evaluation.video_scoring.score_video` writes it (raises or returns False for anything else): the table's
    columns and types, a figure for every frame, and what the pooled AP needs when the video was compared."""
    if row.get("status") != OK or any(row.get(name) is None for name in JOURNAL_FIELDS):
        return False
    pa.Table.from_pylist([{f.name: row.get(f.name) for f in SCHEMA}], schema=SCHEMA)  # the types, or ArrowException
    frames = row["frames"]
    if frames < 1 or row["_pairs"] != frames - 1 or len(row["frame_clip_scores"]) != frames or len(row["frame_persons"]) != frames:
        return False
    compared = row.get("_compared") or []
    if len(compared) != row["pose_frames"]:
        return False
    if not compared:
        return True
    requested, detected = row["_requested"], row["_detected"]
    return (all(type(f) is int and 0 <= f < frames for f in compared)
            and all(isinstance(a["frame"], int) and len(a["keypoints"]) == 51 and len(a["bbox"]) == 4 and isinstance(a["num_keypoints"], int)
                    for a in requested)
            and all(isinstance(a["frame"], int) and len(a["keypoints"]) == 51 and isinstance(a["score"], float | int) for a in detected))  # fmt: skip


def ends_a_line(path: Path) -> None:
    """Close a torn last line of ``path`` (a killed run's) so the next entry starts a line of its own."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
