"""A video's poses, frame by frame: sample frames, estimate and filter people, render skeletons.

This is the building block of ``pose-data extract-poses`` and of ``fyp-generate`` given a driving
video. It uses the LAION-Pose builder's pieces unchanged: a :class:`PoseEstimator` backend, the
person filter (:func:`filter_persons`; the image-size check does not apply to video frames) and
the skeleton renderers.

One row per sampled frame (``keypoints.parquet``, binding for ``fyp-generate`` and ``fyp-eval``):

=============== ============================ ==================================================
column          type                         meaning
=============== ============================ ==================================================
frame           int32                        index of the source frame in decode order
time            float64                      its timestamp, seconds from the video's start
width, height   int32                        size of the frame the keypoints are in (upright)
status          string                       ok, no_person, low_confidence, too_many_persons
error           string                       why the frame is not ok, in words (null when ok)
num_persons     int32                        persons in ``bboxes``/``keypoints``
bboxes          list<list<float32>>          (x0, y0, x1, y1) per person, pixels
person_scores   list<float32>                detector score per person
keypoints       list<list<list<float32>>>    (17, 3) per person: x, y, score (COCO-17 order)
hand_left       list<list<list<float32>>>    (21, 3) per person (OpenPose hand order) or null: the person's left hand
hand_right      list<list<list<float32>>>    the same for the right hand
face            list<list<list<float32>>>    (68, 3) per person (iBUG-68 order) or null
=============== ============================ ==================================================

As in the LAION-Pose ``meta/``, ``ok`` rows hold the persons kept by the filter and other rows
every person detected (so one can see why); only ``ok`` rows are drawn, every other frame is a
black skeleton. The table's schema metadata ``fyp_pose_sequence`` (JSON) records the source,
the skeleton style, the keypoint score threshold used for filtering and drawing, and the sampling.

Reading checks what drawing relies on before anything is allocated, and names the file and the key when a check
fails: the metadata is a JSON object whose ``skeleton_style`` and ``min_keypoint_score`` are usable; every row's
canvas (``width`` x ``height``) is within :mod:`pose_data.media.frame_limits`; every keypoint coordinate is missing (NaN)
or a finite number of pixels within :data:`MAX_KEYPOINT_COORDINATE` of the origin.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pose_data.media.clip_writer import frame_to_rgb
from pose_data.media.frame_limits import MAX_FRAME_PIXELS, MAX_FRAME_SIDE, frame_size_problem
from pose_data.media.frame_sampling import decode_sampled, make_sampler
from pose_data.pose.estimator import PoseEstimator
from pose_data.pose.filtering import FilterConfig, filter_persons
from pose_data.pose.keypoints import PART_FIELDS, PART_SHAPES, PARTS, PersonPose
from pose_data.skeleton.render import SKELETON_STYLES, render_skeleton
from pose_data.statuses import OK

FORMAT = "fyp-pose-sequence"
METADATA_KEY = b"fyp_pose_sequence"
SCHEMA = pa.schema(
    [
        pa.field("frame", pa.int32()),
        pa.field("time", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("num_persons", pa.int32()),
        pa.field("bboxes", pa.list_(pa.list_(pa.float32()))),
        pa.field("person_scores", pa.list_(pa.float32())),
        pa.field("keypoints", pa.list_(pa.list_(pa.list_(pa.float32())))),
        *PART_FIELDS,
    ]
)
#: Columns a keypoints file must have to be drawn (``status`` is optional: without it every row is drawn).
REQUIRED_COLUMNS = ("time", "width", "height", "keypoints")
#: The farthest a keypoint may lie from the origin, in pixels (far beyond any frame of :mod:`pose_data.media.frame_limits`;
#: the renderers hand coordinates to OpenCV as 32-bit integers).
MAX_KEYPOINT_COORDINATE = 1e6


#: The pose rate of the workflow: ``extract-poses`` samples at it by default, ``fyp-generate`` samples its pose source
#: and plays its video at it, and ``index-hdvila --fps 8`` clips match it (the official training's stride 4 of
#: ~30 fps video is ~7.5 fps), so a skeleton video or keypoints file from extract-poses feeds fyp-generate frame for
#: frame at the defaults.
DEFAULT_POSE_FPS = 8.0


@dataclass
class SamplingConfig:
    """Which frames of a video to keep: ``fps`` (nearest frame per tick) or every ``frame_stride``-th
    (both None: every frame; ``fps`` 0 means the same), at most ``max_frames`` (None: all)."""

    fps: float | None = None
    frame_stride: int | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.fps == 0 and not isinstance(self.fps, bool):  # --fps 0: every frame
            self.fps = None

    def validate(self) -> None:
        make_sampler(self.fps, self.frame_stride)  # checks both
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1):
            raise ValueError(f"max_frames must be an integer >= 1 or None, got {self.max_frames!r}")


@dataclass
class PoseSequence:
    """The rows (a pyarrow table of :data:`SCHEMA`) and what made them."""

    table: pa.Table
    info: dict  # source, skeleton_style, min_keypoint_score, sampling, backend, decode figures

    def save(self, path: str | os.PathLike) -> Path:
        from pose_data.files.atomic import atomic_path

        table = self.table.replace_schema_metadata({METADATA_KEY: json.dumps(self.info, default=str).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return Path(path)

    def skeletons(self, style: str | None = None, min_score: float | None = None) -> Iterator[np.ndarray]:
        """The rows drawn in ``style`` (default: the recorded one), (height, width, 3) uint8 each."""
        return render_rows(self.table, style or self.info.get("skeleton_style") or "openpose",
                           self.info["min_keypoint_score"] if min_score is None else min_score)  # fmt: skip


def render_rows(table: pa.Table, style: str, min_score: float) -> Iterator[np.ndarray]:
    """Draw each row's persons on black (``ok`` rows only when the table has a ``status`` column)."""
    has_status = "status" in table.column_names
    for row in table.to_pylist():
        width, height = int(row["width"]), int(row["height"])
        people = []
        if not has_status or row["status"] == OK:
            keypoints = row["keypoints"] or []
            boxes = row.get("bboxes") or [None] * len(keypoints)
            parts = {part: row.get(part) or [None] * len(keypoints) for part in PARTS}  # absent in files written before parts
            people = [PersonPose(bbox=_bbox(kps, box), score=1.0, keypoints=kps, **{part: parts[part][i] for part in PARTS})
                      for i, (kps, box) in enumerate(zip(keypoints, boxes))]  # fmt: skip
        yield render_skeleton(style, people, width, height, min_score)


def _bbox(keypoints: list, box: list | None) -> tuple[float, float, float, float]:
    if box is not None:
        return tuple(box)
    xy = np.asarray(keypoints, dtype=np.float32)[:, :2]
    return (*xy.min(axis=0), *xy.max(axis=0))


def read_pose_sequence(path: str | os.PathLike) -> PoseSequence:
    """Read a ``keypoints.parquet``; ValueError naming the file when it is not one (missing columns,
    unreadable, no rows, keypoints not (17, 3) per person)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"keypoints file {str(path)!r} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{path}: not a pose sequence, it lacks the column(s) {', '.join(missing)} "
            f"(has {', '.join(table.column_names)}); write one with pose-data extract-poses"
        )
    if table.num_rows == 0:
        raise ValueError(f"{path}: the pose sequence has no rows")
    _check_columns(table, path)
    info = _read_info((table.schema.metadata or {}).get(METADATA_KEY), path)
    return PoseSequence(table.replace_schema_metadata(None), info)


def _read_info(meta: bytes | None, path: Path) -> dict:
    """The ``fyp_pose_sequence`` metadata as a dict with a usable ``min_keypoint_score`` (default 0.3) and
    ``skeleton_style`` (default None); ValueError naming ``path`` and the key otherwise."""
    key = METADATA_KEY.decode()
    way_out = "write the file again with pose-data extract-poses, or remove that metadata to draw it with the defaults"
    try:
        info = json.loads(meta) if meta else {}
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"{path}: its {key} metadata is not valid JSON ({getattr(err, 'msg', err)}); {way_out}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: its {key} metadata must be a JSON object, got {type(info).__name__}; {way_out}")
    info.setdefault("min_keypoint_score", 0.3)
    info.setdefault("skeleton_style", None)
    score, style = info["min_keypoint_score"], info["skeleton_style"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score < float("inf"):
        raise ValueError(f"{path}: its {key} metadata's min_keypoint_score must be a finite number >= 0, got {score!r}; {way_out}")
    if style is not None and style not in SKELETON_STYLES:
        raise ValueError(f"{path}: its {key} metadata's skeleton_style must be one of {', '.join(SKELETON_STYLES)}, got {style!r}; "
                         f"{way_out}")  # fmt: skip
    return info


def _check_columns(table: pa.Table, path: Path) -> None:
    """ValueError naming ``path`` unless times are finite and non-decreasing seconds, sizes positive integers and
    keypoints (17, 3) per person."""
    for name in ("time", "width", "height"):
        column = table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) or column.null_count:
            raise ValueError(f"{path}: column {name!r} must hold numbers without nulls, got {column.type} with {column.null_count} null(s)")
    times = table.column("time").to_numpy().astype(np.float64)
    if not np.isfinite(times).all() or (np.diff(times) < 0).any():
        raise ValueError(f"{path}: column 'time' must hold finite, non-decreasing seconds")
    for name in ("width", "height"):
        values = table.column(name).to_numpy()
        if (values < 1).any() or (values != np.round(values)).any():
            raise ValueError(f"{path}: column {name!r} must hold positive whole pixel counts")
    width, height = (table.column(name).to_numpy().astype(np.float64) for name in ("width", "height"))
    too_large = (width > MAX_FRAME_SIDE) | (height > MAX_FRAME_SIDE) | (width * height > MAX_FRAME_PIXELS)
    if too_large.any():  # each row's skeleton is drawn on a canvas of its size
        i = int(np.flatnonzero(too_large)[0])
        problem = frame_size_problem(int(width[i]), int(height[i]), aspect=False)
        raise ValueError(f"{path}: row {i} asks for a canvas of {problem}; a pose sequence's width and height are those of its "
                         "video's frames")  # fmt: skip
    if not pa.types.is_list(table.column("keypoints").type):
        raise ValueError(f"{path}: column 'keypoints' must be a list of (17, 3) arrays per row, got {table.column('keypoints').type}")
    for i, people in enumerate(table.column("keypoints").to_pylist()):
        for person in people or []:
            try:
                shape = np.asarray(person, dtype=np.float32).shape
            except (TypeError, ValueError):
                shape = "not numeric"
            if shape != (17, 3):
                raise ValueError(f"{path}: row {i} has keypoints of shape {shape}, expected (17, 3) per person")
    _check_coordinates(table.column("keypoints"), path)
    for part, shape in PART_SHAPES.items():
        if part in table.column_names:
            _check_part(table, part, shape, path)


def _check_part(table: pa.Table, part: str, shape: tuple[int, int], path: Path) -> None:
    """ValueError naming ``path``, the column and the row unless every row holds one entry per person, each null or
    ``shape`` points with usable coordinates (the column is optional: files written before parts lack it)."""
    column = table.column(part)
    if not pa.types.is_list(column.type):
        raise ValueError(f"{path}: column {part!r} must be a list of {shape} arrays (or nulls) per row, got {column.type}")
    for i, (people, entries) in enumerate(zip(table.column("keypoints").to_pylist(), column.to_pylist())):
        if entries is None:
            continue
        if len(entries) != len(people or []):
            raise ValueError(f"{path}: row {i} has {len(entries)} {part} entries for {len(people or [])} person(s)")
        for entry in entries:
            if entry is None:
                continue
            try:
                points = np.asarray(entry, dtype=np.float64)
            except (TypeError, ValueError):
                points = np.zeros(0)
            if points.shape != shape:
                raise ValueError(f"{path}: row {i} has a {part} of shape {points.shape}, expected {shape} or null")
            xy = points[:, :2]
            if (np.isinf(xy) | (np.abs(np.nan_to_num(xy)) > MAX_KEYPOINT_COORDINATE)).any():
                raise ValueError(f"{path}: row {i} has a {part} coordinate that is not a number of pixels within "
                                 f"{MAX_KEYPOINT_COORDINATE:g} of the origin")  # fmt: skip


def _check_coordinates(column: pa.ChunkedArray, path: Path) -> None:
    """ValueError naming ``path`` and the row unless every keypoint x and y is NaN (missing) or finite and within
    :data:`MAX_KEYPOINT_COORDINATE` (``column``: (17, 3) per person, checked already)."""
    for chunk in column.chunks:
        values = chunk.flatten().flatten().flatten().to_numpy(zero_copy_only=False)  # x, y, score, x, y, score, ...
        xy = np.asarray(values, dtype=np.float64).reshape(-1, 3)[:, :2]
        if (np.abs(xy) > MAX_KEYPOINT_COORDINATE).any():  # infinite ones too; NaN compares False
            break
    else:
        return
    for i, people in enumerate(column.to_pylist()):  # the slow way, once, to name the row
        for person in people or []:
            xy = np.asarray(person, dtype=np.float64)[:, :2]
            far = np.abs(xy) > MAX_KEYPOINT_COORDINATE
            if far.any():
                x, y = xy[np.flatnonzero(far.any(axis=1))[0]]
                raise ValueError(f"{path}: row {i} has a keypoint at ({x:g}, {y:g}); coordinates must be pixels within "
                                 f"{MAX_KEYPOINT_COORDINATE:g} of the origin (NaN for a missing point)")  # fmt: skip


def extract_pose_sequence(
    video: str | os.PathLike,
    estimator: PoseEstimator,
    *,
    filter_cfg: FilterConfig,
    min_keypoint_score: float,
    skeleton_style: str,
    sampling: SamplingConfig,
    batch_size: int = 16,
    on_skeleton: Callable[[np.ndarray], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PoseSequence:
    """Decode ``video`` (PyAV; rotation applied), keep the sampled frames, find the people in them ``batch_size``
    frames per estimator call, filter them and draw the skeletons (``on_skeleton(rgb)`` for each, in order).

    Raises :class:`pose_data.media.video_probe.VideoDecodeError` for a missing or undecodable file.
    """
    if skeleton_style not in SKELETON_STYLES:
        raise ValueError(f"skeleton style {skeleton_style!r} is not one of {', '.join(SKELETON_STYLES)}")
    sampling.validate()
    start = time.perf_counter()
    rows: dict[str, list] = {f.name: [] for f in SCHEMA}
    pending: list[tuple[int, float, np.ndarray]] = []
    counts: dict[str, int] = {}
    pose_seconds = [0.0]

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        results = estimator([rgb for _, _, rgb in pending])
        pose_seconds[0] += time.perf_counter() - t0
        for (index, t, rgb), detected in zip(pending, results):
            height, width = rgb.shape[:2]
            verdict = filter_persons(detected, width, height, filter_cfg, min_keypoint_score)
            people = verdict.persons if verdict.ok else detected
            records = [p.to_record() for p in people]
            for key, value in (("frame", index), ("time", t), ("width", width), ("height", height), ("status", verdict.status),
                               ("error", verdict.error), ("num_persons", len(records)), ("bboxes", [r["bbox"] for r in records]),
                               ("person_scores", [r["score"] for r in records]), ("keypoints", [r["keypoints"] for r in records]),
                               *((part, [r.get(part) for r in records]) for part in PARTS)):  # fmt: skip
                rows[key].append(value)
            counts[verdict.status] = counts.get(verdict.status, 0) + 1
            if on_skeleton is not None:
                on_skeleton(render_skeleton(skeleton_style, verdict.persons, width, height, min_keypoint_score))
        if progress is not None:
            progress(len(pending))
        pending.clear()

    def on_kept(index: int, frame, t: float) -> None:
        pending.append((index, t, frame_to_rgb(frame)))
        if len(pending) >= batch_size:
            flush()

    span, decoded = decode_sampled(video, on_kept, fps=sampling.fps, stride=sampling.frame_stride, max_frames=sampling.max_frames)
    flush()
    info = {
        "format": FORMAT,
        "source": str(video),
        "skeleton_style": skeleton_style,
        "min_keypoint_score": min_keypoint_score,
        "backend": getattr(estimator, "name", type(estimator).__name__),
        "sampling": asdict(sampling),
        "sampled_fps": _sampled_fps(sampling, span, rows["time"]),
        "frames": len(rows["frame"]),
        "frames_decoded": decoded,
        "decode_errors": span.decode_errors if span is not None else None,
        "counts": counts,
        "seconds": {"total": round(time.perf_counter() - start, 3), "pose": round(pose_seconds[0], 3)},
        "filter": asdict(filter_cfg),
    }
    return PoseSequence(pa.table(rows, schema=SCHEMA), info)


def _sampled_fps(sampling: SamplingConfig, span, times: list[float]) -> float | None:
    """The rate of the sampled frames: ``fps`` when given, else the decoded rate over the stride."""
    if sampling.fps is not None:
        return float(sampling.fps)
    stride = sampling.frame_stride or 1
    if span is not None and span.fps:
        return span.fps / stride
    if len(times) > 1 and times[-1] > times[0]:
        return (len(times) - 1) / (times[-1] - times[0])
    return None
