"""What ``fyp-app``'s two buttons do, as plain functions (no Gradio): testable without a browser.

- :func:`extract_poses`: an uploaded video -> the skeleton video the model will follow. A driving video's poses are
  extracted by ``pose-data extract-poses``' own code (:func:`pose_data.extract_poses.output.write_pose_folder`:
  ``skeleton.mp4`` + ``keypoints.parquet``); a skeleton video is used as it is. Which one it is: ``fyp-generate``'s
  auto-detection (:func:`model.generation.pose_source.detect_kind`) unless the user says. Then the frames are read
  back exactly as ``fyp-generate`` reads them (:func:`model.generation.pose_source.load_pose_frames`): that checks
  the frame count and the skeleton style, and gives the preview of the frames the model will get.
- :func:`generate_video`: that skeleton video + the prompt and settings -> ``fyp-generate``'s video and JSON sidecar
  (:func:`model.generation.make_video.generate_one`, so equal settings and seed give the same file).

Bad input is an :class:`AppInputError` whose message is for the page.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.generation.video_settings import VideoSettings

#: What the user may say the upload is ("auto": as fyp-generate decides).
UPLOAD_KINDS = ("auto", "driving_video", "skeleton_video")


class AppInputError(ValueError):
    """Bad input, said in one line for the page."""


@dataclass
class ExtractedPoses:
    """The skeleton video the model follows and what the page shows of it."""

    skeleton: Path  # the pose source handed to generate_one (extract-poses' skeleton.mp4, or the upload)
    preview: Path  # the pose frames as the model gets them (fitted to the output size, at the output rate)
    kind: str  # the upload's kind: driving_video or skeleton_video
    frames: int  # pose frames the source gives at the settings' rate
    upload: str  # the uploaded file's name
    key: tuple  # what the extraction depended on (a Generate with other settings extracts again)

    @property
    def message(self) -> str:
        what = "poses extracted from the driving video" if self.kind == "driving_video" else "skeleton video used as it is"
        return f"{self.upload}: {what}, {self.frames} pose frame(s)"


@dataclass
class GeneratedVideo:
    video: Path
    sidecar: Path
    seed: int
    frames: int
    message: str


def one_line(err: BaseException) -> str:
    """An error message on one line."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip()) or type(err).__name__


def markdown_text(text: str) -> str:
    """``text`` shown as it is in a Markdown component: every ASCII punctuation character backslash-escaped (an
    upload named ``*[x](javascript:..)*.mp4`` stays a name, not emphasis or a link)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def check_video(path: str | Path) -> None:
    """AppInputError unless ``path`` is a video PyAV can open whose frames are within
    :func:`pose_data.media.frame_limits.frame_size_problem` (checked on the stated size, before any frame is fitted or
    extracted: a small file can state a huge or very thin frame)."""
    from pose_data.media.frame_limits import frame_size_problem
    from pose_data.media.video_probe import VideoDecodeError, probe_video

    path = Path(path)
    if not path.is_file():
        raise AppInputError("upload a video first (a driving video or a skeleton video)")
    try:
        info = probe_video(path)
    except VideoDecodeError as err:
        raise AppInputError(f"{path.name} is not a video this app can read: {err.reason}") from None
    problem = frame_size_problem(info.width, info.height)
    if problem:
        raise AppInputError(f"{path.name}: its frames are {problem}; crop or resize it first")


#: fyp-generate's flags in its messages, as the page names them.
PAGE_WORDS = {"but --num-frames is": "but frames is set to", "lower --num-frames": "lower frames", "--num-frames": "frames",
              "or pass --allow-style-mismatch": "or tick 'allow a style mismatch'", "(--fps, --frame-stride)": "(fps)"}  # fmt: skip


def page_text(message: str, replacements: dict[str, str]) -> str:
    """``message`` with the paths in ``replacements`` (longest first) and fyp-generate's flag names said as the page
    says them."""
    for old in sorted(replacements, key=len, reverse=True):
        message = message.replace(old, replacements[old])
    for old, new in PAGE_WORDS.items():
        message = message.replace(old, new)
    return message


def extraction_key(upload: str, kind: str, settings: VideoSettings, pipe_style: str | None) -> tuple:
    fields = ("num_frames", "fps", "height", "width", "pose_backend", "skeleton_style", "allow_style_mismatch")
    return (str(upload), kind, pipe_style, *(getattr(settings, f) for f in fields))


def safe_stem(name: str) -> str:
    """A file-name stem made of letters, digits, ``-`` and ``_`` only (the upload's name can be anything)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:60] or "video"


def extract_poses(pipe, upload: str | Path, workdir: Path, settings: VideoSettings, *, kind: str = "auto",
                  on_frames: Callable[[int, int | None], None] | None = None) -> ExtractedPoses:  # fmt: skip
    """The skeleton video of ``upload`` in ``workdir`` (module doc). ``on_frames(done, total)``: extraction progress."""
    from model.generation.pose_source import detect_kind
    from pose_data.media.video_probe import VideoDecodeError
    from pose_data.pose.estimator import PoseModelLoadError

    if kind not in UPLOAD_KINDS:
        raise AppInputError(f"the upload's kind must be one of {', '.join(UPLOAD_KINDS)}, got {kind!r}")
    check_video(upload)
    upload = Path(upload)
    skeleton = upload
    try:
        settings.validate()
        if kind == "auto":
            kind = detect_kind(upload)
        key = extraction_key(upload, kind, settings, pipe.skeleton_style)
        folder = workdir / f"poses-{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        if kind == "driving_video":
            skeleton = _extract(pipe, upload, folder, settings, on_frames)
        preview, frames = _preview(pipe, skeleton, folder, settings)
    except AppInputError:
        raise
    except VideoDecodeError as err:
        raise AppInputError(f"{upload.name}: {err.reason}") from None
    except PoseModelLoadError as err:  # weights that cannot be fetched or read: the message says what to choose instead
        raise AppInputError(str(err)) from None
    except (ValueError, OSError) as err:
        label = upload.name if skeleton == upload else f"the poses of {upload.name}"
        raise AppInputError(page_text(one_line(err), {f"pose source {skeleton}": label, str(skeleton): label, str(upload): upload.name})) from None
    return ExtractedPoses(skeleton, preview, kind, frames, upload.name, key)


def _extract(pipe, upload: Path, folder: Path, settings: VideoSettings, on_frames) -> Path:
    """extract-poses' code on the driving video: ``folder/skeleton.mp4`` and ``folder/keypoints.parquet``."""
    from model.generation.pose_source import MAX_POSE_FRAMES_UNASKED
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.extract_poses.output import SKELETON_FILE, write_pose_folder
    from pose_data.extract_poses.sequence import SamplingConfig
    from pose_data.media.video_probe import probe_video
    from pose_data.pose.backends import load_pose_estimator
    from pose_data.pose.estimator import PoseModelConfig

    device = str(pipe.device)
    style = settings.skeleton_style or pipe.skeleton_style or "openpose"
    limit = settings.num_frames or MAX_POSE_FRAMES_UNASKED
    cfg = ExtractPosesConfig(pose=PoseModelConfig(backend=settings.pose_backend, device=device if device.startswith("cuda") else "cpu"),
                             sampling=SamplingConfig(fps=settings.fps, max_frames=limit), skeleton_style=style)  # fmt: skip
    cfg.validate()
    info = probe_video(upload)
    total = None if not info.container_duration else min(limit, max(1, int(info.container_duration * settings.fps)))
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if on_frames is not None:
            on_frames(done[0], total)

    with load_pose_estimator(cfg.pose, way_out="choose the mediapipe pose backend (offline)") as estimator:
        write_pose_folder(upload, folder, estimator, cfg, {"source": upload.name}, progress=progress)
    return folder / SKELETON_FILE


def _preview(pipe, skeleton: Path, folder: Path, settings: VideoSettings) -> tuple[Path, int]:
    """The pose frames read as fyp-generate reads them (frame count and style checked), written as a preview mp4."""
    from model.generation.pose_source import load_pose_frames
    from pose_data.media.video_writer import write_video

    height = pipe.default_size if settings.height is None else settings.height
    width = pipe.default_size if settings.width is None else settings.width
    poses = load_pose_frames(str(skeleton), width=width, height=height, num_frames=settings.num_frames, fps=settings.fps,
                             kind="skeleton_video", encoder_style=pipe.skeleton_style, skeleton_style=settings.skeleton_style,
                             allow_style_mismatch=settings.allow_style_mismatch)  # fmt: skip
    return write_video(poses.frames, folder / "pose-preview.mp4", settings.fps), len(poses.frames)


def generate_video(pipe, poses: ExtractedPoses, prompt: str, workdir: Path, settings: VideoSettings, *,
                   on_step: Callable[[int, int], None] | None = None) -> GeneratedVideo:  # fmt: skip
    """``fyp-generate``'s video and sidecar for ``poses`` (as :func:`make_video.generate_one` writes them) in
    ``workdir``; a ``None`` seed is drawn here so the file can be named after it. ``on_step(done, total)``: progress."""
    from model.generation.make_video import generate_one
    from model.generation.outputs import sidecar_path

    if not isinstance(prompt, str) or not prompt.strip():
        raise AppInputError("type a prompt first")
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    settings = dataclasses.replace(settings, seed=seed, source_kind="skeleton_video")
    output = workdir / f"{safe_stem(poses.upload)}-seed{seed}.mp4"
    try:
        sidecar = generate_one(pipe, prompt, str(poses.skeleton), output, settings, progress=False, on_step=on_step)
    except (ValueError, OSError) as err:
        label = poses.upload if poses.kind == "skeleton_video" else f"the poses of {poses.upload}"
        raise AppInputError(page_text(one_line(err), {f"pose source {poses.skeleton}": label, str(poses.skeleton): label})) from None
    message = f"{sidecar['frames']} frames at {sidecar['fps']:g} fps, {sidecar['width']}x{sidecar['height']}, seed {seed}"
    return GeneratedVideo(output, sidecar_path(output), seed, sidecar["frames"], message)


def form_settings(*, num_frames=0, window=8, steps=50, guidance=12.5, seed=0, random_seed=False, height=0, width=0,
                  fps=8.0, pose_scale=1.0, side_by_side=True, negative_prompt="", pose_backend="mmpose",
                  skeleton_style="", allow_style_mismatch=False) -> VideoSettings:  # fmt: skip
    """The page's form as :class:`VideoSettings` (0 frames / size: the source's / the model's; an empty style: the
    encoder's); AppInputError naming the setting for a bad value."""
    from model.generation.video_settings import settings_from

    def whole(name, value):
        if value is None or (isinstance(value, float) and not value.is_integer()):
            raise AppInputError(f"{name} must be a whole number, got {value!r}")
        return int(value)

    def decimal(name, value):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AppInputError(f"{name} must be a number, got {value!r}")
        return float(value)

    values = {
        "num_frames": whole("frames", num_frames) or None, "window": whole("window", window), "steps": whole("steps", steps),
        "guidance": decimal("guidance", guidance), "seed": None if random_seed else whole("seed", seed),
        "height": whole("height", height) or None, "width": whole("width", width) or None, "fps": decimal("fps", fps),
        "pose_scale": decimal("pose scale", pose_scale), "side_by_side": bool(side_by_side), "negative_prompt": negative_prompt or "",
        "pose_backend": pose_backend, "skeleton_style": skeleton_style or None, "allow_style_mismatch": bool(allow_style_mismatch),
    }  # fmt: skip
    try:
        return settings_from(values)
    except ValueError as err:
        raise AppInputError(one_line(err)) from None
