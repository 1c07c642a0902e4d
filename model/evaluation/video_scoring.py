"""One video's row of ``fyp-eval``'s ``metrics.parquet`` (:data:`SCHEMA`): its frames decoded and handed on in batches.

Each frame goes to CLIP (CLIP score, frame consistency) and to the pose backend (the persons found), and the
requested pose frames are compared with those persons (COCO keypoint AP, :mod:`model.evaluation.pose_accuracy`, and
where both have hands COCO-WholeBody's hand AP, :mod:`model.evaluation.hand_accuracy`); a driving video's poses are
extracted here, with the same backend, at the video's frame rate. The run over every video, and what the columns
mean, are :mod:`model.evaluation.evaluate_videos`'s.
"""

from __future__ import annotations

import hashlib
import logging
import reprlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from model.evaluation.clip_metrics import (
    SCALE,
    ClipEmbedder,
    ClipModelLoadError,
    ImageEmbeddingStream,
    clip_score,
    frame_clip_cosines,
    frame_consistency,
)
from model.evaluation.config import EvalConfig
from model.evaluation.hand_accuracy import hand_columns
from model.evaluation.inputs import EvalItem, no_keypoints_reason
from model.evaluation.pose_accuracy import compared_frames, detected_annotations, keypoint_ap, requested_annotations
from pose_data.media.clip_writer import frame_to_rgb
from pose_data.media.video_decode import decode_video
from pose_data.media.video_probe import VideoDecodeError
from pose_data.pose.estimator import PoseModelLoadError

log = logging.getLogger(__name__)
OK, FAILED = "ok", "failed"
SCHEMA = pa.schema([
    ("path", pa.string()), ("origin", pa.string()), ("prompt", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("frames", pa.int32()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("clip_score", pa.float64()), ("frame_consistency", pa.float64()), ("pose_ap", pa.float64()),
    ("person_found", pa.float64()), ("pose_frames", pa.int32()), ("pose_reason", pa.string()), ("pose_source", pa.string()),
    ("hand_ap", pa.float64()), ("hand_reason", pa.string()),
    ("frame_clip_scores", pa.list_(pa.float64())), ("frame_persons", pa.list_(pa.int32())), ("frame_oks", pa.list_(pa.float64())),
    ("seconds", pa.float64()),
])  # fmt: skip


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
    from pose_data.extract_poses.sequence import read_pose_sequence

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
    from pose_data.extract_poses.sequence import SamplingConfig, extract_pose_sequence
    from pose_data.pose.estimator import DEFAULT_MIN_KEYPOINT_SCORE

    defaults = ExtractPosesConfig()
    sequence = extract_pose_sequence(
        video, models.pose, filter_cfg=defaults.filter, min_keypoint_score=DEFAULT_MIN_KEYPOINT_SCORE[models.cfg.pose.backend],
        skeleton_style=defaults.skeleton_style, sampling=SamplingConfig(fps=fps, max_frames=frames), batch_size=models.cfg.pose.batch_size,
    )  # fmt: skip
    sequence.save(save_to)
    return sequence


def score_video(item: EvalItem, models: Models, poses_dir: Path) -> dict:
    """One video's row (:data:`SCHEMA`) plus what the pooled APs need (``_compared``, ``_requested``, ``_detected``,
    ``_hand_requested``, ``_hand_detected`` and ``_pairs``). A video that cannot be decoded is a failed row; a pose
    that cannot be read or compared leaves pose_ap (and hand_ap) empty with the reason."""
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
        why = f"the pose {item.keypoints or item.pose} cannot be compared: {type(err).__name__}: {reason}"
        row.update(pose_frames=0, pose_reason=why, hand_ap=None, hand_reason=why)
    row.update(seconds=round(time.perf_counter() - started, 3))
    return row


def pose_accuracy(item: EvalItem, people: list, width: int, height: int, fps: float, models: Models, poses_dir: Path) -> dict:
    """The pose columns of a video's row: its requested pose frames against the persons found in its frames; the
    hand columns (:func:`model.evaluation.hand_accuracy.hand_columns`) too, a hand that cannot be compared leaving
    hand_ap empty with the reason, the body's columns as they are."""
    requested, min_score, why = requested_rows(item, len(people), fps, models, poses_dir)
    if requested is None:
        return {"pose_frames": 0, "pose_reason": why, "hand_ap": None, "hand_reason": why}
    compared = compared_frames(requested)
    gt = requested_annotations(requested, width, height, min_score)
    dt = detected_annotations(people[: len(requested)])
    result = keypoint_ap([(compared, gt, dt)])
    oks_of = dict(zip(compared, result.frame_oks[0]))
    if not compared:
        why = "the requested pose has no frame with a person (every pose row asks for nothing: no_person, too unsure, ...)"
    elif result.ap is None:
        why = "no requested person has a visible keypoint in the frame"
    try:
        hands = hand_columns(requested, gt, people[: len(requested)], compared, width, height, models.cfg.pose.backend)
    except Exception as err:  # noqa: BLE001 - a hostile hand column (wrong types, shapes): this video's hand reason
        log.debug("hands of %s", item.video, exc_info=True)
        hands = {"hand_ap": None, "hand_reason": f"the hands of the pose {item.keypoints or item.pose} cannot be compared: "
                                                 f"{type(err).__name__}: {err}"}  # fmt: skip
    return {"pose_ap": result.ap, "pose_frames": len(compared), "pose_reason": why,
            "frame_oks": [oks_of.get(frame) for frame in range(len(requested))],
            "_compared": compared, "_requested": gt, "_detected": dt, **hands}  # fmt: skip
