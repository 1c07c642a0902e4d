"""Write RGB frames to a video file: H.264 mp4 through PyAV, or an animated GIF through Pillow.

Writes are atomic (a hidden temp file renamed at the end), so a killed run leaves no half video
under the final name. An mp4 may carry a small JSON object in its container ``comment`` tag
(:func:`read_video_comment` reads it back): skeleton videos record their skeleton style there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from pose_data.files.atomic import atomic_path
from pose_data.media.frame_sampling import check_fps

VIDEO_SUFFIXES = (".mp4", ".gif")
#: Every format this project writes into a comment tag starts so (fyp-skeleton-video, fyp-generated-video).
OWN_FORMAT_MARK = "fyp-"


class Mp4Writer:
    """``with Mp4Writer(path, fps) as w: w.add(rgb)`` -> an H.264 (libx264, yuv420p) mp4 at a constant ``fps``.

    Frames are (H, W, 3) uint8 RGB of one size with even H and W (yuv420p needs it). ``crf`` 0-51 (lower is
    better), ``comment``: a JSON-able dict stored in the container's comment tag. The file appears under
    ``path`` only when the block ends without an error and at least one frame was added.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18, preset: str = "medium", comment: dict | None = None):
        self.path, self.fps = Path(path), check_fps(fps)
        if not (isinstance(crf, int) and 0 <= crf <= 51):
            raise ValueError(f"crf must be an int in 0..51, got {crf!r}")
        self.crf, self.preset, self.comment = crf, preset, comment
        self.num_frames = 0
        self.size: tuple[int, int] | None = None
        self._atomic = None
        self._container = None
        self._stream = None

    def __enter__(self) -> Mp4Writer:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._container = av.open(str(tmp), mode="w", format="mp4")
        if self.comment is not None:
            self._container.metadata["comment"] = json.dumps(self.comment, sort_keys=True)
        return self

    def add(self, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
        height, width = rgb.shape[:2]
        if self._stream is None:
            if width % 2 or height % 2:
                raise ValueError(f"H.264 mp4 needs an even width and height, got {width}x{height}")
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            self._stream, self.size = stream, (width, height)
        elif (width, height) != self.size:
            raise ValueError(f"frame {self.num_frames} is {width}x{height}, the video is {self.size[0]}x{self.size[1]}")
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = self.num_frames
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.num_frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        empty = exc_type is None and self._stream is None
        try:
            if exc_type is None and not empty:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        finally:
            if empty:  # discard the temp file, then say why
                self._atomic.__exit__(ValueError, ValueError("no frame"), None)
            else:
                self._atomic.__exit__(exc_type, exc, tb)
        if empty:
            raise ValueError(f"{self.path}: no frame was added, there is no video to write")


def write_gif(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """(H, W, 3) uint8 frames -> an endlessly looping GIF, written atomically."""
    images = [Image.fromarray(np.asarray(frame)) for frame in frames]
    if not images:
        raise ValueError(f"{path}: no frame to write")
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / check_fps(fps)), loop=0)
    return Path(path)


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float, *, comment: dict | None = None) -> Path:
    """Frames -> ``path``, an mp4 (H.264) or a GIF by its extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(frames, path, fps)
    if suffix != ".mp4":
        raise ValueError(f"{path}: the output must end in {' or '.join(VIDEO_SUFFIXES)}")
    with Mp4Writer(path, fps, comment=comment) as writer:
        for frame in frames:
            writer.add(frame)
    return path


def read_video_comment(path: str | os.PathLike, *, strict: bool = False) -> dict | None:
    """The JSON object an :class:`Mp4Writer` stored in ``path``'s comment tag; None when there is none.

    Other tools write comments of their own, so a comment that is not a JSON object is no tag (None). ``strict``: a
    comment that names one of this project's formats (``"fyp-..."``) but is not a JSON object is a broken tag, a
    ValueError naming the file and the tag, so that a damaged skeleton video is not taken for a video without one.
    """
    try:
        with av.open(str(path)) as container:
            text = container.metadata.get("comment")
    except (av.FFmpegError, OSError):
        return None
    problem = None
    try:
        value = json.loads(text) if text else None
    except json.JSONDecodeError as err:
        value, problem = None, f"is not valid JSON ({err.msg} at character {err.pos})"
    if text and value is not None and not isinstance(value, dict):
        problem = f"is a JSON {type(value).__name__}, not an object"
    if strict and problem and OWN_FORMAT_MARK in text:
        raise ValueError(f"{path}: its comment tag mentions {OWN_FORMAT_MARK!r} (this project's tags) but {problem}; write the video "
                         "again, or remove the tag (ffmpeg -i IN -map_metadata -1 -c copy OUT)")  # fmt: skip
    return value if isinstance(value, dict) else None
