"""The pose frames ``fyp-generate`` follows, from any of four sources, at the output size.

SOURCE is one of (``kind="auto"`` tells them apart in this order):

- a folder of skeleton frames (png, jpg, jpeg, webp, bmp; natural order: ``2.png`` before ``10.png``);
- a ``.parquet`` pose sequence from ``pose-data extract-poses`` (drawn here, in the pose encoder's style);
- a skeleton video: an mp4 written by ``extract-poses`` (its comment tag says so), or any video whose frames at
  0, 1/4, 1/2 and 3/4 of it are mostly black with coloured lines (:func:`looks_like_skeletons`);
- otherwise a driving video, whose poses are extracted on the fly (``pose-data extract-poses``'s code and
  settings) and drawn in the pose encoder's style.

Sampling: videos and pose sequences have timestamps and are sampled at ``fps`` (nearest frame per tick),
or every ``frame_stride``-th frame; a folder has no timestamps and gives every ``frame_stride``-th image (default
every one). Each frame is scaled to cover ``width`` x ``height`` and centre-cropped (nearest-neighbour, as stage 1
resizes skeletons). A source with fewer frames than ``num_frames`` is a ValueError saying how many it has.

Memory follows the output, not the source: each frame is fitted to the output size as it is decoded (drawn, read),
a frame the sampler repeats is fitted and held once, and decoding stops once ``num_frames`` pose frames are taken.
Without ``num_frames`` a source may give at most :data:`MAX_POSE_FRAMES_UNASKED` (a ValueError beyond, asking for
``num_frames``). Every size read from a file is checked against :mod:`pose_data.media.frame_limits` before its frame is
held or fitted: a frame image's header before decoding, a keypoints canvas before drawing, a video frame as decoded.
Frame images are decoded by :func:`pose_data.media.image_decode.decode_image`: EXIF orientation applied, 16-bit grey scaled
to 8 bits, transparent pixels black (the skeleton background).

Skeleton style: the style a source is drawn in (declared with ``skeleton_style``, recorded in an extract-poses
video or its ``keypoints.parquet``) must be the pose encoder's, unless ``allow_style_mismatch``; sources
drawn here use the encoder's style (or the declared one, or openpose).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from model.datasets.frame_transforms import cover_and_center_crop
from pose_data.extract_poses.output import SKELETON_VIDEO_FORMAT
from pose_data.extract_poses.sequence import PoseSequence, SamplingConfig, read_pose_sequence
from pose_data.media.clip_writer import frame_to_rgb
from pose_data.media.frame_limits import MAX_FRAME_FILE_BYTES, MAX_FRAME_PIXELS, frame_size_problem
from pose_data.media.frame_sampling import decode_sampled, make_sampler
from pose_data.media.image_decode import ImageDecodeError, decode_image, image_size
from pose_data.media.video_decode import decode_span, decode_video
from pose_data.media.video_probe import VideoDecodeError, probe_video
from pose_data.media.video_writer import read_video_comment
from pose_data.pose.estimator import WHOLE_BODY_BACKENDS
from pose_data.pose.keypoints import PARTS
from pose_data.skeleton.render import SKELETON_STYLES

log = logging.getLogger(__name__)
KINDS = ("auto", "skeleton_video", "skeleton_frames", "keypoints", "driving_video")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: A skeleton frame has at least this share of near-black pixels (all channels < 24).
SKELETON_BLACK_FRACTION = 0.8
#: Strokes this thin are lines: at most this share of the stroke pixels has all 8 neighbours in strokes too (1-pixel
#: MMPose lines with radius-3 joints: 0.12-0.23, also after MPEG-4; a 10 x 10 lamp: 0.64).
THIN_STROKES_CORE_SHARE = 0.35
#: The most pose frames a source may give when ``num_frames`` is not given (4 min 16 s at 8 fps): a longer video is made
#: only when asked for, so that a long source, or one whose timestamps jump (a 6-frame video with 2000 s gaps gives
#: 80,001 frames at 8 fps), is not taken whole by default.
MAX_POSE_FRAMES_UNASKED = 2048


@dataclass
class PoseFrames:
    """``frames`` (f, H, W, 3) uint8 at the output size, and where they came from (for the JSON sidecar)."""

    frames: np.ndarray
    kind: str
    source: str
    skeleton_style: str | None
    source_frames: list[int]  # which frame / row / image of the source each pose frame is
    times: list[float] | None = None  # their timestamps in the source, seconds (None for a folder)
    keypoints: str | None = None  # a keypoints.parquet holding these poses, when there is one
    keypoint_rows: list[int] | None = None  # its row for each pose frame
    extracted: PoseSequence | None = field(default=None, repr=False)  # poses extracted here from a driving video
    source_count: int | None = None  # frames (rows, images) the whole source has; None when not read to its end

    def to_tensor(self):
        """(1, 3, f, H, W) uint8, the layout the sampler takes."""
        import torch

        return torch.from_numpy(self.frames).permute(3, 0, 1, 2).unsqueeze(0).contiguous()


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _fit(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(cover_and_center_crop(Image.fromarray(rgb), width, height))


def _fitter(width: int, height: int, source: str):
    """``fit(rgb, where)``: the frame fitted to the output size, once its size is within :mod:`pose_data.media.frame_limits`
    (ValueError naming ``source`` and ``where`` otherwise)."""

    def fit(rgb: np.ndarray, where: str) -> np.ndarray:
        problem = frame_size_problem(rgb.shape[1], rgb.shape[0])
        if problem:
            raise ValueError(f"pose source {source}: {where} is {problem}; crop or resize the source to the shape of the video to make")
        return _fit(rgb, width, height)

    return fit


class _Enough(Exception):
    pass


def looks_like_skeletons(rgb: np.ndarray) -> bool | None:
    """True: mostly black with coloured strokes; False: a picture; None: (nearly) all black, says nothing.

    Strokes are the pixels of peak >= 64, saturated ones those of chroma >= 0.4 x peak. Skeleton colours are
    saturated: half the strokes saturated is a skeleton. Thin lines lose much of their colour to 4:2:0 chroma
    subsampling and inter-frame coding (the official MMPose-style examples are 1-px lines in MPEG-4: a third of
    their strokes stay saturated), so a quarter also counts when the saturated strokes are of several hues
    (skeletons colour limbs apart; a dark scene's lights are mostly white, a coloured one mostly one hue). A frame
    whose dim pixels (peak 24-63) outnumber its strokes three to one is a dark scene (lines leave thin fringes). Thin
    strokes without that colour say nothing (None): a codec can wash the colour out of thin lines entirely (MPEG-4 at
    176 x 144 leaves a tenth of an MMPose skeleton's strokes saturated, and mostly in its blue head and torso),
    while the lights of a dark scene are blobs (:data:`THIN_STROKES_CORE_SHARE`)."""
    peak = rgb.max(axis=2)
    if (peak < 24).mean() < SKELETON_BLACK_FRACTION:
        return False
    strokes = peak >= 64
    if strokes.sum() < 0.0005 * strokes.size:
        return None
    dim = int(((peak >= 24) & ~strokes).sum())
    if dim > 3 * strokes.sum():  # much dim, unlit-looking area beside the bright strokes: a dark scene, not lines
        return False
    pixels = rgb[strokes].astype(np.int32)
    bright = pixels.max(axis=1)
    saturated = pixels[bright - pixels.min(axis=1) >= 0.4 * bright]
    share = len(saturated) / len(pixels)
    if share >= 0.5 or (share >= 0.25 and hue_concentration(saturated) < 0.8):
        return True
    return None if stroke_core_share(strokes) <= THIN_STROKES_CORE_SHARE else False


def stroke_core_share(strokes: np.ndarray) -> float:
    """The share of the ``strokes`` (a boolean mask) whose 8 neighbours are strokes too: 0 for lines 1-2 pixels wide,
    near 1 for large blobs."""
    core = strokes[1:-1, 1:-1].copy()
    rows, cols = strokes.shape
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            core &= strokes[1 + dy : rows - 1 + dy, 1 + dx : cols - 1 + dx]
    return float(core.sum()) / max(int(strokes.sum()), 1)


def hue_concentration(pixels: np.ndarray) -> float:
    """How much ``pixels`` (saturated RGB) share one hue: the length of the mean unit vector of their hue angles, 1 for
    a single hue, near 0 for hues spread around the circle (two hues 90 degrees apart in equal parts: 0.71)."""
    if len(pixels) == 0:
        return 1.0
    r, g, b = (pixels[:, i].astype(np.float64) for i in range(3))
    hue = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)  # the hexagonal hue angle
    return float(np.hypot(np.cos(hue).mean(), np.sin(hue).mean()))


def _frames_at(path: Path, fractions: tuple[float, ...]) -> list[np.ndarray]:
    """The first frame at or after each fraction of the video's stated duration (only the first without one)."""
    duration = probe_video(path).container_duration
    starts = [0.0] if not duration else [f * duration for f in fractions]
    frames: list[np.ndarray] = []

    def take(frame, t):
        frames.append(frame_to_rgb(frame))
        raise _Enough

    for start in starts:
        try:
            if start == 0:
                decode_video(path, on_frame=take)
            else:
                decode_span(path, start, start + duration, on_frame=take)
        except _Enough:
            pass
        except VideoDecodeError:
            if start == 0:  # an unreadable file; a later position may only lie past the real end
                raise
    return frames


def detect_kind(path: Path) -> str:
    """Which kind of pose source ``path`` is (module doc): a skeleton video when tagged so by extract-poses, or when
    frames at 0, 1/4, 1/2 and 3/4 of it are all mostly black and at least one shows coloured strokes."""
    if path.is_dir():
        return "skeleton_frames"
    if path.suffix.lower() == ".parquet":
        return "keypoints"
    if (read_video_comment(path, strict=True) or {}).get("format") == SKELETON_VIDEO_FORMAT:
        return "skeleton_video"
    verdicts = [looks_like_skeletons(rgb) for rgb in _frames_at(path, (0.0, 0.25, 0.5, 0.75))]
    kind = "skeleton_video" if False not in verdicts and True in verdicts else "driving_video"
    log.info("pose source %s: read as a %s (pass --source-kind to say otherwise)", path, kind.replace("_", " "))
    return kind


def check_style(source_style: str | None, encoder_style: str | None, source: str, allow_mismatch: bool) -> None:
    if source_style and encoder_style and source_style != encoder_style and not allow_mismatch:
        raise ValueError(
            f"pose source {source} is drawn in the {source_style!r} skeleton style but the pose encoder was trained on "
            f"{encoder_style!r} skeletons; use a source of that style (pose-data extract-poses --skeleton-style "
            f"{encoder_style}) or pass --allow-style-mismatch"
        )


def load_pose_frames(
    source: str,
    *,
    width: int,
    height: int,
    num_frames: int | None = None,
    fps: float | None = None,
    frame_stride: int | None = None,
    kind: str = "auto",
    encoder_style: str | None = None,
    skeleton_style: str | None = None,
    allow_style_mismatch: bool = False,
    extract_config=None,
) -> PoseFrames:
    """The pose frames of ``source`` (module doc). ``skeleton_style``: the style the user declares for the source
    (or wants it drawn in); ``extract_config``: the :class:`ExtractPosesConfig` for a driving video."""
    path = Path(source)
    if kind not in KINDS:
        raise ValueError(f"pose source kind {kind!r} is not one of {', '.join(KINDS)}")
    if not path.exists():
        raise FileNotFoundError(f"pose source {source!r} does not exist")
    if frame_stride is not None:
        fps = None  # a stride replaces sampling by time
    limit = num_frames if num_frames is not None else MAX_POSE_FRAMES_UNASKED + 1  # one more: to tell "more than" apart
    fit = _fitter(width, height, source)
    try:
        kind = detect_kind(path) if kind == "auto" else kind
        if kind == "skeleton_frames":
            loaded = _from_folder(path, limit, frame_stride, fit)
        elif kind == "keypoints":
            loaded = _from_keypoints(path, limit, fps, frame_stride, skeleton_style or encoder_style, fit)
        elif kind == "skeleton_video":
            loaded = _from_skeleton_video(path, limit, fps, frame_stride, skeleton_style, fit)
        else:
            loaded = _from_driving_video(path, limit, fps, frame_stride, skeleton_style or encoder_style, extract_config, fit)
    except VideoDecodeError as err:
        raise ValueError(f"pose source {source}: {err.reason}") from None
    check_style(loaded.skeleton_style, encoder_style, source, allow_style_mismatch)
    _warn_if_no_parts(loaded, source, extract_config)
    count = len(loaded.frames)
    unit = {"skeleton_frames": "image", "keypoints": "row"}.get(loaded.kind, "frame")
    if loaded.kind == "skeleton_frames":
        how = f"taking every {frame_stride or 1} image(s) of the folder"
    else:
        how = f"at every {frame_stride or 1} {unit}(s)" if fps is None else f"at {fps:g} fps"
    if num_frames is not None and count < num_frames:
        has = "" if loaded.source_count is None else f"has {loaded.source_count} {unit}(s) and "
        raise ValueError(
            f"pose source {source} {has}gives {count} pose frame(s) {how} but --num-frames is {num_frames}: "
            "lower --num-frames, or sample more densely (--fps, --frame-stride)"
        )
    if num_frames is None and count > MAX_POSE_FRAMES_UNASKED:
        raise ValueError(
            f"pose source {source} gives more than {MAX_POSE_FRAMES_UNASKED} pose frames {how}, the most taken without "
            "--num-frames: pass --num-frames N to make a video of N frames (or sample less densely: --fps, --frame-stride)"
        )
    if count == 0:
        raise ValueError(f"pose source {source} gives no pose frame")
    loaded.frames = np.stack(loaded.frames)  # (f, height, width, 3): fitted as they came
    return loaded


def _from_folder(path: Path, limit: int, stride: int | None, fit) -> PoseFrames:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)
    if not files:
        raise ValueError(f"pose source {path} is a folder with no skeleton frames ({', '.join(IMAGE_SUFFIXES)})")
    chosen = list(range(0, len(files), stride or 1))[:limit]
    frames = [fit(read_skeleton_image(files[i]), f"image {files[i].name}") for i in chosen]
    return PoseFrames(frames, "skeleton_frames", str(path), None, chosen, source_count=len(files))


def read_skeleton_image(file: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one skeleton frame file, by :func:`pose_data.media.image_decode.decode_image` with transparent
    pixels black; ValueError naming ``file`` when it is not a usable image or breaks :mod:`pose_data.media.frame_limits`
    (checked on its size and header before decoding)."""
    size = file.stat().st_size
    if size > MAX_FRAME_FILE_BYTES:
        raise ValueError(f"pose frame {file}: {size:,} bytes, more than the {MAX_FRAME_FILE_BYTES:,} a frame image may have")
    data = file.read_bytes()
    try:
        problem = frame_size_problem(*image_size(data))
        if problem:
            raise ValueError(f"pose frame {file}: {problem}; crop or resize the frames to the shape of the video to make")
        return decode_image(data, max_pixels=MAX_FRAME_PIXELS, background="black")
    except ImageDecodeError as err:
        raise ValueError(f"pose frame {file}: not a usable image ({err.reason})") from None


def sample_rows(times: list[float], num_frames: int | None, fps: float | None, stride: int | None) -> list[int]:
    """The rows of a pose sequence with timestamps ``times`` kept when sampling at ``fps`` (nearest row per tick)
    or every ``stride``-th row, at most ``num_frames``."""
    sampler = make_sampler(fps, stride, num_frames)
    chosen: list[int] = []
    for i, t in enumerate(times):
        chosen.extend(sampler.add(i, t))
        if num_frames is not None and len(chosen) >= num_frames:
            return chosen[:num_frames]
    return chosen


def _warn_if_no_parts(loaded: PoseFrames, source, extract_config) -> None:
    """An ``openpose_full`` encoder was trained on hands and faces: drawing a source with none of them works but asks
    the model for a body alone, which a user should hear about (and how to get them)."""
    if loaded.skeleton_style != "openpose_full":
        return
    if loaded.kind == "driving_video":
        backend = extract_config.pose.backend if extract_config is not None else "mmpose"
        if backend not in WHOLE_BODY_BACKENDS:
            log.warning("the pose is drawn in the openpose_full style (hands and face), but --pose-backend %s finds bodies "
                        "only: use --pose-backend %s", backend, " or ".join(WHOLE_BODY_BACKENDS))  # fmt: skip
    elif loaded.kind == "keypoints":
        table = read_pose_sequence(loaded.keypoints).table
        if not any(part in table.column_names and any(any(p is not None for p in row or []) for row in table.column(part).to_pylist())
                   for part in PARTS):  # fmt: skip
            log.warning("%s has no hand or face keypoints, so its openpose_full skeletons show bodies only: extract them "
                        "with --pose-backend %s", source, " or ".join(WHOLE_BODY_BACKENDS))  # fmt: skip


def _from_keypoints(path: Path, limit: int, fps, stride, style: str | None, fit) -> PoseFrames:
    sequence = read_pose_sequence(path)
    times = sequence.table.column("time").to_pylist()
    rows = sample_rows(times, limit, fps, stride)
    style = style or sequence.info.get("skeleton_style") or "openpose"
    distinct = list(dict.fromkeys(rows))  # a row the sampler repeats is drawn and fitted once, and held once
    subset = PoseSequence(sequence.table.take(distinct), sequence.info)
    try:
        fitted = {row: fit(skeleton, f"row {row}") for row, skeleton in zip(distinct, subset.skeletons(style))}
    except (ValueError, TypeError) as err:  # e.g. a box or keypoint the renderer cannot take
        raise ValueError(f"{path}: cannot draw its poses ({err})") from None
    frames = [fitted[row] for row in rows]
    return PoseFrames(frames, "keypoints", str(path), style, rows, [times[r] for r in rows], str(path), rows, source_count=len(times))


def _from_skeleton_video(path: Path, limit: int, fps, stride, declared: str | None, fit) -> PoseFrames:
    comment = read_video_comment(path, strict=True) or {}
    recorded = comment.get("skeleton_style")
    if recorded is not None and recorded not in SKELETON_STYLES:
        raise ValueError(f"{path}: its comment tag records skeleton_style {recorded!r}, not one of {', '.join(SKELETON_STYLES)}; write "
                         "the video again with pose-data extract-poses, or remove the tag (ffmpeg -i IN -map_metadata -1 -c copy OUT)")  # fmt: skip
    frames, indices, times = [], [], []

    def on_kept(index: int, frame, t: float) -> None:
        repeated = bool(indices) and indices[-1] == index  # the sampler repeats a frame: held once
        frames.append(frames[-1] if repeated else fit(frame_to_rgb(frame), f"frame {index}"))
        indices.append(index)
        times.append(t)

    span, decoded = decode_sampled(path, on_kept, fps=fps, stride=stride, max_frames=limit)
    keypoints = path.parent / "keypoints.parquet"
    if not recorded and keypoints.is_file():
        try:
            recorded = read_pose_sequence(keypoints).info.get("skeleton_style")
        except ValueError:
            keypoints = None
    if declared and recorded and declared != recorded:
        raise ValueError(f"--skeleton-style {declared} but {path} records the {recorded!r} style")
    has_keypoints = keypoints is not None and keypoints.is_file() and comment.get("format") == SKELETON_VIDEO_FORMAT
    return PoseFrames(frames, "skeleton_video", str(path), declared or recorded, indices, times,
                      str(keypoints) if has_keypoints else None, indices if has_keypoints else None,
                      source_count=None if span is None else decoded)  # fmt: skip


def _from_driving_video(path: Path, limit: int, fps, stride, style: str | None, extract_config, fit) -> PoseFrames:
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.extract_poses.sequence import extract_pose_sequence
    from pose_data.pose.backends import load_pose_estimator

    cfg = extract_config or ExtractPosesConfig()
    style = style or "openpose"
    frames: list[np.ndarray] = []
    log.info("extracting poses from the driving video %s with %s", path, cfg.pose.backend)
    way_out = ("use --pose-backend mediapipe (offline), or extract the poses first with `pose-data extract-poses VIDEO "
               "--det-checkpoint PATH --pose-checkpoint PATH` and pass its keypoints.parquet as the pose")  # fmt: skip
    with load_pose_estimator(cfg.pose, way_out=way_out) as estimator:
        sequence = extract_pose_sequence(
            path, estimator, filter_cfg=cfg.filter, min_keypoint_score=cfg.min_keypoint_score, skeleton_style=style,
            sampling=SamplingConfig(fps=fps, frame_stride=stride, max_frames=limit), batch_size=cfg.pose.batch_size,
            on_skeleton=lambda rgb: frames.append(fit(rgb, f"sampled frame {len(frames)}")),
        )  # fmt: skip
    table = sequence.table
    whole = sequence.info["frames"] < limit  # else decoding may have stopped early
    return PoseFrames(frames, "driving_video", str(path), style, table.column("frame").to_pylist(),
                      table.column("time").to_pylist(), None, list(range(table.num_rows)), sequence,
                      source_count=sequence.info["frames_decoded"] if whole else None)  # fmt: skip
