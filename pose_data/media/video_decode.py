"""Decode one clip span of a video file with PyAV and report what was really decoded.

The HD-VILA indexer trusts no header: a span's fps, frame count, size and timestamps come from
the frames that :func:`decode_span` decoded, and every way a file can fail becomes a
:class:`~pose_data.media.video_probe.VideoDecodeError` whose ``reason`` is stored as the row's ``error``.

Conventions (shared by every function here, in :mod:`pose_data.media.video_probe` and in
:mod:`pose_data.media.span_decoder`):

- Times are seconds, and spans are half-open ``[start, end)``: a frame is kept when
  ``start <= t < end``.
- ``t`` is the frame's presentation timestamp *relative to the video stream's start*
  (``stream.start_time``; the container's ``start_time`` when the stream has none; else 0), so the
  first frame of every file is at ``t = 0`` whatever offset its container stores (ffmpeg's MPEG-TS
  files start at 1.4 s, cut files may keep their source offsets). HD-VILA spans are relative to the video start.
  This differs from ``ffmpeg -ss`` (container start) only when the video stream starts later than
  another stream of the same file.
- A frame without a ``pts`` is placed at its ``dts``, or one frame period after the previous frame.
- ``rotation`` is the display-matrix rotation that PyAV 18 reports on decoded frames
  (``VideoFrame.rotation``, from the stream's display matrix side data), normalised to
  ``{0, 90, 180, 270}``: the stored pixels must be turned that many degrees *counter-clockwise* to
  be shown upright (``numpy.rot90(pixels, rotation // 90)``). Phone videos tagged "rotate=90"
  (clockwise) read as 270. Reported ``width``/``height`` are the display size, after rotation.
  PyAV 18 has no reader for a stream's display matrix, so
  :func:`~pose_data.media.video_probe.probe_video` decodes the first frame to learn it.

Cost: :func:`decode_span` seeks to the keyframe at or before ``start`` and decodes forward, so the
work for a span is about one GOP plus the span, wherever the span lies in the video. When a seek
lands after ``start`` (a demuxer that indexes by dts, or a keyframe missing from the index), it
seeks again 1, 2, 4, ... s earlier, so no frame of the span is ever missed; ``frames_decoded``
counts every frame decoded, including those discarded before ``start``.
"""

from __future__ import annotations

import math
from pathlib import Path

from pose_data.media.span_decoder import FrameCallback, SpanDecoder, SpanResult
from pose_data.media.video_probe import VideoDecodeError


class InvalidSpan(VideoDecodeError):
    """The span itself is unusable (reversed, zero-length, negative or not finite); no file is read."""


def decode_span(path: str | Path, start: float, end: float, *, on_frame: FrameCallback | None = None) -> SpanResult:
    """Decode the frames of ``[start, end)`` (seconds from the video start) and report them.

    Seeks to the keyframe at or before ``start``, decodes forward, keeps frames with
    ``start <= t < end`` (calling ``on_frame(frame, t)`` for each, in order) and stops at the first
    frame with ``t >= end``. A span that starts inside the video but ends after it returns what was
    decoded with ``truncated=True`` and ``video_end``; the caller decides whether that is out of range.

    Raises :class:`InvalidSpan` for a reversed, zero-length, negative or non-finite span,
    :class:`SpanOutOfRange` when the span starts at or after the end of the video, and
    :class:`VideoDecodeError` when the file is unreadable, has no video stream, or yields no
    usable frame (with the decode error count), or when the stream ends before ``end`` in a way
    that looks like damage: with decode errors, or more than ``HEADER_END_TOLERANCE_S`` before the
    end its header states (a truncated download is decode_failed, not span_out_of_range).
    """
    _check_span(start, end)
    decoder = SpanDecoder(path)
    try:
        return decoder.run(start, end, on_frame)
    finally:
        decoder.close()


def decode_video(path: str | Path, *, on_frame: FrameCallback | None = None) -> SpanResult:
    """Decode every frame of the file in order (``on_frame(frame, t)`` for each) and report them.

    The whole-video form of :func:`decode_span`: a stream that breaks off early (a cut download,
    broken packets at the end) is not an error here; what decoded is kept and ``decode_errors``
    counts the damage. Raises :class:`VideoDecodeError` when the file is missing, empty, not a
    video, or yields no frame at all.
    """
    decoder = SpanDecoder(path)
    try:
        return decoder.run(0.0, math.inf, on_frame)
    finally:
        decoder.close()


# --- internals --------------------------------------------------------------------------------


def _check_span(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise InvalidSpan(f"span [{start}, {end}) is not finite")
    if start < 0:
        raise InvalidSpan(f"span [{start}, {end}) starts before the video (negative start)")
    if end < start:
        raise InvalidSpan(f"span [{start}, {end}) is reversed (end before start)")
    if end == start:
        raise InvalidSpan(f"span [{start}, {end}) has zero length")
