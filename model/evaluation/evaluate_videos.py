"""``fyp-eval``'s work: score generated videos, one row each, into ``DIR/metrics.parquet`` and ``DIR/summary.json``.

Per video (an :class:`model.evaluation.inputs.EvalItem`): decode every frame (PyAV; for a side-by-side video only the
generated right-hand part) and hand the frames on as they come, in batches (:class:`FrameBatches`: at most a batch
of frames is held, however long or large the video), to

- CLIP: CLIP score and frame consistency (:mod:`model.evaluation.clip_metrics`, ``100 * cosine``);
- the pose backend: ``person_found`` is the share of frames where it finds someone;
- the requested pose frame of each frame (:mod:`model.evaluation.inputs`; a driving video's poses are extracted here with
  the same backend, at the video's frame rate, and kept in ``DIR/poses/``), and COCO keypoint AP
  (:mod:`model.evaluation.pose_accuracy`) over the frames that have one.

``DIR/metrics.parquet`` columns (one row per video):

================= ================ ===========================================================================
column            type             meaning
================= ================ ===========================================================================
path              string           the video
origin            string           where it was listed: its sidecar, or FILE.jsonl:LINE
prompt            string           its prompt
status            string           ``ok`` or ``failed`` (the video could not be scored at all)
reason            string           why it failed (null when ok)
frames            int32            frames decoded (and scored)
fps               float64          the sidecar's frame rate, else the decoded one
width, height     int32            size of the scored frames (the generated part of a side-by-side video)
clip_score        float64          100 * mean text-frame CLIP cosine
frame_consistency float64          100 * mean CLIP cosine of consecutive frames (null for one frame)
pose_ap           float64          COCO keypoint AP (0-1) against the requested pose (null: see pose_reason)
person_found      float64          share of frames where the pose backend found a person (0-1)
pose_frames       int32            frames compared with a requested pose frame (its row ``ok``: a person was shown)
pose_reason       string           why pose_ap is null (no pose given, a skeleton video without keypoints, ...)
pose_source       string           the pose the video was asked to follow
frame_clip_scores list<float64>    100 * text-frame cosine, per frame
frame_persons     list<int32>      persons found, per frame
frame_oks         list<float64>    best OKS of any found person with any visible requested one, per frame
                                   that has a requested pose frame (null: not compared, or no one found)
seconds           float64          time spent on this video
================= ================ ===========================================================================

Resuming: every scored video is appended to ``DIR/scored.jsonl`` as it finishes; a run over the same inputs with
the same models takes a video from there when its file (size, modification time), prompt, pose files and model files
(a local folder's, a hub model's cached revision) are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import reprlib
import stat
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.evaluation.clip_metrics import (
    SCALE,
    ClipEmbedder,
    ClipModelLoadError,
    ImageEmbeddingStream,
    clip_score,
    exact_mean,
    frame_clip_cosines,
    frame_consistency,
)
from model.evaluation.config import EvalConfig
from model.evaluation.inputs import EvalItem, file_kind, no_keypoints_reason
from model.evaluation.pose_accuracy import compared_frames, detected_annotations, keypoint_ap, requested_annotations
from pose_data.files.atomic import atomic_path, write_json_atomic
from pose_data.files.utf8_text import utf8_text
from pose_data.media.clip_writer import frame_to_rgb
from pose_data.media.video_decode import VideoDecodeError, decode_video
from pose_data.pose.estimator import PoseModelLoadError

log = logging.getLogger(__name__)
FORMAT = "fyp-eval"
#: Part of every resume key: a change to what is scored (or how) makes earlier journals' rows stale.
KEY_VERSION = "fyp-eval/3"
#: The longest line of ``DIR/scored.jsonl`` read (a row holds a few figures per frame, about 100 bytes a frame).
MAX_JOURNAL_LINE_BYTES = 64 * 2**20
OK, FAILED = "ok", "failed"
SCHEMA = pa.schema([
    ("path", pa.string()), ("origin", pa.string()), ("prompt", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("frames", pa.int32()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("clip_score", pa.float64()), ("frame_consistency", pa.float64()), ("pose_ap", pa.float64()),
    ("person_found", pa.float64()), ("pose_frames", pa.int32()), ("pose_reason", pa.string()), ("pose_source", pa.string()),
    ("frame_clip_scores", pa.list_(pa.float64())), ("frame_persons", pa.list_(pa.int32())), ("frame_oks", pa.list_(pa.float64())),
    ("seconds", pa.float64()),
])  # fmt: skip
SCALES = {
    "clip_score": "100 x cosine of CLIP text and frame embeddings, averaged over frames (the paper's scale)",
    "frame_consistency": "100 x cosine of CLIP embeddings of consecutive frames, averaged (a percentage)",
    "pose_ap": "COCO keypoint AP, OKS 0.50:0.95, 0-1 (xtcocotools COCOeval)",
    "person_found": "share of frames with a person found, 0-1",
}


class Models:
    """The CLIP model and the pose estimator, each loaded on first use (a fully resumed run loads neither)."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self._clip: ClipEmbedder | None = None
        self._pose = None

    @property
    def clip(self) -> ClipEmbedder:
        if self._clip is None:
            self._clip = ClipEmbedder.from_pretrained(self.cfg.clip_model, device=self.cfg.device or "cpu")
        return self._clip

    @property
    def pose(self):
        if self._pose is None:
            from pose_data.pose.backends import load_pose_estimator

            self._pose = load_pose_estimator(self.cfg.pose)
        return self._pose

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()


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


def hub_revision(name: str) -> str | None:
    """The commit of a hub model's snapshot in the local cache (what ``from_pretrained`` loads); None for a local
    folder or a model not cached."""
    if Path(os.path.expanduser(name)).exists() or name.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id: not cached
        return None
    return Path(cached).parent.name if isinstance(cached, str) else None


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


class FrameBatches:
    """A video's frames as they are decoded (``on_frame`` of :func:`pose_data.media.video_decode.decode_video`), handed on
    and let go: to CLIP at once (:class:`model.evaluation.clip_metrics.ImageEmbeddingStream` keeps only its 224 x 224 input,
    ``cfg.batch_size`` distinct frames per model call) and to the pose backend ``cfg.pose.batch_size`` frames per
    call, in order; so at most one pose batch of frames is held, whatever the video's length. A side-by-side video
    gives its right-hand ``crop_width`` columns. The models are loaded at the first frame (a video that cannot be
    decoded loads none)."""

    def __init__(self, models: Models, crop_width: int | None = None) -> None:
        self.models, self.crop_width = models, crop_width
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (height, width) of the first frame
        self.people: list = []  # the persons found, per frame
        self._pose_pending: list[np.ndarray] = []
        self._clip: ImageEmbeddingStream | None = None

    def on_frame(self, frame, t: float) -> None:
        rgb = frame_to_rgb(frame)
        if self.crop_width:
            whole = rgb.shape[1]
            if self.size is None and whole != 2 * self.crop_width:  # fyp-generate writes the skeleton left of the frame, both as wide
                raise VideoDecodeError(f"a side-by-side video {whole} px wide, but its sidecar gives each half {self.crop_width} px")
            rgb = np.ascontiguousarray(rgb[:, -self.crop_width :])
        if self.size is None:
            self.size = rgb.shape[:2]
        self.frames += 1
        if self._clip is None:
            self._clip = ImageEmbeddingStream(self.models.clip, self.models.cfg.batch_size)
        self._clip.add(rgb)
        self._pose_pending.append(rgb)
        if len(self._pose_pending) >= self.models.cfg.pose.batch_size:
            self._find_people()

    def _find_people(self) -> None:
        if self._pose_pending:
            self.people.extend(self.models.pose(self._pose_pending))
            self._pose_pending = []

    def finish(self) -> np.ndarray:
        """The last batches handed on; returns the (frames, d) CLIP embeddings."""
        self._find_people()
        return self._clip.result() if self._clip is not None else np.zeros((0, 0), np.float32)


def stream_frames(item: EvalItem, models: Models) -> tuple[FrameBatches, np.ndarray, float]:
    """Decode the video, handing its frames on as they come (:class:`FrameBatches`); returns them (frame count,
    size, persons found), the CLIP embedding of every frame and the frame rate. VideoDecodeError when there is no
    frame, or a side-by-side video is not twice as wide as its generated part."""
    batches = FrameBatches(models, item.crop_width)
    span = decode_video(item.video, on_frame=batches.on_frame)
    return batches, batches.finish(), item.fps or span.fps


def requested_rows(item: EvalItem, frames: int, fps: float, models: Models, poses_dir: Path) -> tuple[list[dict] | None, float, str | None]:
    """The requested pose row of each video frame (at most ``frames``), the pose file's keypoint threshold, and why
    there are none."""
    from model.generation.pose_source import detect_kind, sample_rows
    from pose_data.pose.sequence import read_pose_sequence

    if item.no_pose:
        return None, 0.0, item.no_pose
    source = item.keypoints or item.pose
    rows = item.keypoint_rows
    kind = "keypoints" if item.keypoints else item.pose_kind or detect_kind(Path(source))
    if kind == "skeleton_frames":
        return None, 0.0, no_keypoints_reason(kind)
    if kind == "skeleton_video":
        from pose_data.media.video_writer import read_video_comment

        beside = Path(source).parent / "keypoints.parquet"
        if (read_video_comment(source) or {}).get("format") != "fyp-skeleton-video" or not beside.is_file():
            return None, 0.0, no_keypoints_reason(kind)
        source = str(beside)
    if kind == "driving_video":
        if rows is not None:
            return None, 0.0, (f"keypoint_rows are given for {source}, a driving video: its poses are extracted at the video's "
                               "frame rate (pose frame i for frame i); leave keypoint_rows out, or pass its keypoints.parquet")  # fmt: skip
        tag = hashlib.sha1(f"{item.video}|{source}".encode("utf-8", "surrogatepass")).hexdigest()[:8]  # (a non-UTF-8 name too)
        stem = Path(item.video).stem.encode("utf-8", "replace").decode("utf-8").replace("?", "_")  # a name Parquet can write
        sequence = extract_driving_poses(Path(source), frames, fps, models, poses_dir / f"{stem}-{tag}.keypoints.parquet")
        rows = list(range(sequence.table.num_rows))
    else:
        try:
            sequence = read_pose_sequence(source)
        except (ValueError, OSError) as err:
            return None, 0.0, f"the pose {source} cannot be read: {err}"
    threshold = sequence.info.get("min_keypoint_score")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        return None, 0.0, f"the pose {source} records no keypoint threshold in [0, 1] (min_keypoint_score {threshold!r})"
    table = sequence.table
    if rows is None:
        rows = sample_rows(table.column("time").to_pylist(), frames, fps, None)
    rows = rows[:frames]
    if rows and max(rows) >= table.num_rows:
        return None, 0.0, f"the pose {source} has {table.num_rows} rows but row {reprlib.repr(max(rows))} is asked for"
    return table.take(rows).to_pylist(), float(threshold), None


def extract_driving_poses(video: Path, frames: int, fps: float, models: Models, save_to: Path):
    """The poses of a driving video at ``fps`` (as fyp-generate samples it), with the evaluation's pose backend."""
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.pose.estimator import DEFAULT_MIN_KEYPOINT_SCORE
    from pose_data.pose.sequence import SamplingConfig, extract_pose_sequence

    defaults = ExtractPosesConfig()
    sequence = extract_pose_sequence(
        video, models.pose, filter_cfg=defaults.filter, min_keypoint_score=DEFAULT_MIN_KEYPOINT_SCORE[models.cfg.pose.backend],
        skeleton_style=defaults.skeleton_style, sampling=SamplingConfig(fps=fps, max_frames=frames), batch_size=models.cfg.pose.batch_size,
    )  # fmt: skip
    sequence.save(save_to)
    return sequence


def score_video(item: EvalItem, models: Models, poses_dir: Path) -> dict:
    """One video's row (:data:`SCHEMA`) plus what the pooled AP needs (``_compared``, ``_requested``, ``_detected``
    and ``_pairs``). A video that cannot be decoded is a failed row; a pose that cannot be read or compared leaves
    pose_ap empty with the reason."""
    started = time.perf_counter()
    row: dict = {"path": item.video, "origin": item.origin, "prompt": item.prompt, "pose_source": item.pose or item.keypoints}
    if item.error:
        return {**row, "status": FAILED, "reason": item.error}
    try:
        decoded, images, fps = stream_frames(item, models)
    except VideoDecodeError as err:
        return {**row, "status": FAILED, "reason": f"the video cannot be decoded: {err.reason}"}
    (height, width), frames, people = decoded.size, decoded.frames, decoded.people
    text = models.clip.text_embedding(item.prompt)
    row.update(status=OK, reason=None, frames=frames, fps=fps, width=width, height=height,
               clip_score=clip_score(text, images), frame_consistency=frame_consistency(images),
               person_found=sum(bool(p) for p in people) / frames,
               frame_clip_scores=[SCALE * float(c) for c in frame_clip_cosines(text, images)],
               frame_persons=[len(p) for p in people], _pairs=frames - 1)  # fmt: skip
    try:
        row.update(pose_accuracy(item, people, width, height, fps, models, poses_dir))
    except (ClipModelLoadError, PoseModelLoadError):
        raise
    except Exception as err:  # noqa: BLE001 - a hostile pose file (wrong types, shapes): this video's pose reason
        reason = getattr(err, "reason", None) or str(err)
        log.debug("pose of %s", item.video, exc_info=True)
        row.update(pose_frames=0, pose_reason=f"the pose {item.keypoints or item.pose} cannot be compared: {type(err).__name__}: {reason}")
    row.update(seconds=round(time.perf_counter() - started, 3))
    return row


def pose_accuracy(item: EvalItem, people: list, width: int, height: int, fps: float, models: Models, poses_dir: Path) -> dict:
    """The pose columns of a video's row: its requested pose frames against the persons found in its frames."""
    requested, min_score, why = requested_rows(item, len(people), fps, models, poses_dir)
    if requested is None:
        return {"pose_frames": 0, "pose_reason": why}
    compared = compared_frames(requested)
    gt = requested_annotations(requested, width, height, min_score)
    dt = detected_annotations(people[: len(requested)])
    result = keypoint_ap([(compared, gt, dt)])
    oks_of = dict(zip(compared, result.frame_oks[0]))
    if not compared:
        why = "the requested pose has no frame with a person (every pose row asks for nothing: no_person, too unsure, ...)"
    elif result.ap is None:
        why = "no requested person has a visible keypoint in the frame"
    return {"pose_ap": result.ap, "pose_frames": len(compared), "pose_reason": why,
            "frame_oks": [oks_of.get(frame) for frame in range(len(requested))],
            "_compared": compared, "_requested": gt, "_detected": dt}  # fmt: skip


#: What a journal row must hold besides the :data:`SCHEMA` columns (the overall figures need them).
JOURNAL_FIELDS = ("frames", "clip_score", "frame_clip_scores", "frame_persons", "person_found", "pose_frames", "_pairs")


def _load_scored(path: Path) -> dict[str, dict]:
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
    """A journal row as :func:`score_video` writes it (raises or returns False for anything else): the table's
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


def _ends_a_line(path: Path) -> None:
    """Close a torn last line of ``path`` (a killed run's) so the next entry starts a line of its own."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def evaluate_videos(items: list[EvalItem], cfg: EvalConfig, output: str | os.PathLike, *, inputs: list[str] | None = None,
                    progress: bool = True) -> tuple[dict, pa.Table]:  # fmt: skip
    """Score ``items`` into ``output`` (module doc); returns the summary (also ``output/summary.json``) and the
    table (``output/metrics.parquet``). Only a model that cannot be loaded stops the run."""
    from pose_data.config import to_dict
    from pose_data.files.manifest import package_versions
    from pose_data.progress import StatusProgress

    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    scored_file = out / "scored.jsonl"
    done = _load_scored(scored_file)
    _ends_a_line(scored_file)
    models, identity = Models(cfg), fingerprint(cfg)
    rows, reused = [], 0
    try:
        with open(scored_file, "a", encoding="utf-8") as journal, \
                StatusProgress(total=len(items), initial=0, statuses=(OK, FAILED), enabled=progress, unit="video") as bar:  # fmt: skip
            for item in items:
                stamp = item_stamp(item)
                key = resume_key(stamp, identity)
                if key is not None and key in done:
                    row, reused = {**done[key], "origin": item.origin}, reused + 1
                else:
                    row = _score_or_fail(item, models, out / "poses")
                    if key is not None and row["status"] == OK:
                        identity = fingerprint(cfg)  # as loaded: a hub model downloaded just now has its revision
                        journal.write(json.dumps({"key": resume_key(stamp, identity), "row": row}) + "\n")
                        journal.flush()
                rows.append(row)
                bar.update(1, {row["status"]: 1})
    finally:
        models.close()
    table = pa.Table.from_pylist([{f.name: _storable(r.get(f.name), f.type) for f in SCHEMA} for r in rows], schema=SCHEMA)
    with atomic_path(out / "metrics.parquet") as tmp:
        pq.write_table(table, tmp)
    summary = {
        "format": FORMAT,
        "inputs": inputs,
        "config": to_dict(cfg),
        "models": {"clip": cfg.clip_model, "clip_revision": identity["clip_revision"], "clip_files": identity["clip_files"],
                   "pose": _pose_model_name(cfg)},  # fmt: skip
        "scales": SCALES,
        "counts": {"videos": len(rows), OK: sum(r["status"] == OK for r in rows), FAILED: sum(r["status"] == FAILED for r in rows),
                   "with_pose_ap": sum(r.get("pose_ap") is not None for r in rows), "reused": reused},  # fmt: skip
        "overall": overall(rows),
        "versions": package_versions(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary, table


def _storable(value, kind: pa.DataType | None = None):
    """``value`` as a column of ``kind`` can hold it: text for a string column (a prompt that was no string, from an
    item built by hand), and a file name that is not UTF-8 (Python keeps its bytes as lone surrogates) with those
    bytes escaped (``caf\\udce9.mp4``)."""
    if kind is not None and pa.types.is_string(kind) and value is not None and not isinstance(value, str):
        value = repr(value)
    return utf8_text(value) if isinstance(value, str) else value


def _score_or_fail(item: EvalItem, models: Models, poses_dir: Path) -> dict:
    """:func:`score_video`, with anything unforeseen in one video's data made that video's failed row (the models
    failing to load is not about one video: it stops the run)."""
    try:
        return score_video(item, models, poses_dir)
    except (ClipModelLoadError, PoseModelLoadError):
        raise
    except Exception as err:  # noqa: BLE001 - never a crash for one bad video
        log.warning("%s could not be scored: %s: %s", _storable(item.video), type(err).__name__, _storable(str(err))[:300])
        log.debug("the error's traceback", exc_info=True)
        return {"path": item.video, "origin": item.origin, "prompt": item.prompt, "pose_source": item.pose or item.keypoints,
                "status": FAILED, "reason": f"unexpected error: {type(err).__name__}: {err}"}  # fmt: skip


def _pose_model_name(cfg: EvalConfig) -> str:
    if cfg.pose.backend == "mediapipe":
        return "mediapipe BlazePose full"
    return f"mmpose {cfg.pose.det_model} ({cfg.pose.det_checkpoint}) + {cfg.pose.pose_model} ({cfg.pose.pose_checkpoint})"


def overall(rows: list[dict]) -> dict:
    """The figures over every scored video: CLIP score over all frames (the paper averages over frames), frame
    consistency over all consecutive pairs, pose AP pooled over all paired frames (one COCOeval), and the means of
    the per-video figures."""
    ok = [r for r in rows if r["status"] == OK]
    frame_scores = [s for r in ok for s in r["frame_clip_scores"]]
    pairs = [(r["frame_consistency"], r["_pairs"]) for r in ok if r.get("frame_consistency") is not None]
    posed = [r for r in ok if r.get("pose_ap") is not None]
    compared = [r for r in ok if r.get("_compared")]  # with the detections of videos whose requested persons are all unseen
    pooled = keypoint_ap([(r["_compared"], r["_requested"], r["_detected"]) for r in compared]) if compared else None
    return {
        "clip_score": exact_mean(frame_scores),
        "frame_consistency": math.fsum(fc * n for fc, n in pairs) / sum(n for _, n in pairs) if pairs else None,
        "pose_ap": pooled.ap if pooled else None,
        "person_found": exact_mean(r["person_found"] for r in ok),
        "clip_score_mean_per_video": exact_mean(r["clip_score"] for r in ok),
        "frame_consistency_mean_per_video": exact_mean(fc for fc, _ in pairs),
        "pose_ap_mean_per_video": exact_mean(r["pose_ap"] for r in posed),
        "frames": len(frame_scores),
        "pose_frames": sum(r["pose_frames"] for r in compared),
    }


def format_table(summary: dict, rows: pa.Table) -> str:
    """The per-video table (``metrics.parquet``'s) and the overall line, for the terminal."""

    def num(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"{'video':<32} {'frames':>6} {'CLIP':>6} {'consist':>7} {'pose AP':>7} {'person':>6}  note"]
    for r in rows.to_pylist():
        name = Path(r["path"]).name[-32:]
        note = r["reason"] if r["status"] == FAILED else (r["pose_reason"] or "")
        lines.append(f"{name:<32} {r['frames'] if r['frames'] is not None else '-':>6} {num(r['clip_score']):>6} "
                     f"{num(r['frame_consistency']):>7} {num(r['pose_ap'], 3):>7} {num(r['person_found']):>6}  {note}")  # fmt: skip
    o, c = summary["overall"], summary["counts"]
    lines.append(f"{'overall (' + str(c[OK]) + ' of ' + str(c['videos']) + ' videos)':<32} {o['frames']:>6} {num(o['clip_score']):>6} "
                 f"{num(o['frame_consistency']):>7} {num(o['pose_ap'], 3):>7} {num(o['person_found']):>6}")  # fmt: skip
    return "\n".join(lines)
