"""Open a video file with PyAV and read what its headers say: :func:`probe_video` -> :class:`VideoInfo`.

Every way a file can fail becomes a :class:`VideoDecodeError` (defined here, the base of the span errors of
:mod:`pose_data.media.video_decode` and :mod:`pose_data.media.span_decoder`) whose ``reason`` is stored as the row's
``error``. The helpers below (open a file, find its video stream, a frame's rotation and display size) are shared
with :mod:`pose_data.media.span_decoder`; rotation and display size follow :mod:`pose_data.media.video_decode`'s
conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av


class VideoDecodeError(Exception):
    """The file or span cannot be decoded; ``reason`` says why in words (stored as the row's error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's headers say (plus the rotation of its first frame); nothing is verified.

    ``width``/``height`` are the display size (after rotation); ``container_duration`` and ``fps``
    (the stream's average frame rate) are ``None`` when the file does not state them, and
    ``frame_count`` is the header's frame count (``None`` when unknown: Matroska, WebM).
    """

    width: int
    height: int
    rotation: int
    codec: str
    container_duration: float | None
    fps: float | None
    frame_count: int | None
    format_name: str


def probe_video(path: str | Path) -> VideoInfo:
    """Read a file's headers (and decode its first frame for the rotation); no span is decoded.

    Raises :class:`VideoDecodeError` when the file cannot be opened as a media file (missing,
    empty, random bytes, an mp4 cut before its index), has no video stream, or states no frame size.
    """
    with open_video(path) as container:
        stream = video_stream(container, path)
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise VideoDecodeError(f"video stream of {path} states no frame size ({ctx.width}x{ctx.height}): corrupt header")
        rotation = _first_frame_rotation(container, stream)
        width, height = display_size(ctx.width, ctx.height, rotation)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            width=width,
            height=height,
            rotation=rotation,
            codec=ctx.name,
            container_duration=container.duration / av.time_base if container.duration else None,
            fps=float(rate) if rate else None,
            frame_count=stream.frames or None,
            format_name=container.format.name,
        )


# --- internals --------------------------------------------------------------------------------


def open_video(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except FileNotFoundError:
        raise VideoDecodeError(f"video file {path} does not exist") from None
    except (av.FFmpegError, OSError) as exc:
        size = _file_size(path)
        what = "empty file" if size == 0 else f"{size} bytes, not a readable media file"
        raise VideoDecodeError(f"cannot open {path} ({what}): {ffmpeg_message(exc)}") from None


def _file_size(path: str | Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def ffmpeg_message(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def video_stream(container, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
        raise VideoDecodeError(f"{path} has no video stream (streams: {kinds})")
    return container.streams.video[0]


def normalise_rotation(degrees: float) -> int:
    """PyAV's counter-clockwise angle in [-180, 180] -> one of 0, 90, 180, 270."""
    return int(round(degrees / 90.0)) % 4 * 90


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


def _first_frame_rotation(container, stream, max_packets: int = 64) -> int:
    """Rotation of the first decodable frame (0 when none decodes within ``max_packets``)."""
    try:
        for i, packet in enumerate(container.demux(stream)):
            if i >= max_packets:
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue
            if frames:
                return normalise_rotation(frames[0].rotation)
    except av.FFmpegError:
        pass
    return 0
