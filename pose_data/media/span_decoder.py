"""The decode loop behind :mod:`pose_data.media.video_decode`, and what it reports: :class:`SpanResult`.

:class:`SpanDecoder` seeks to the keyframe at or before a span's start (and earlier while a seek overshoots),
places every frame in seconds from the video stream's start, counts frames and errors, and judges how decoding
ended: a :class:`SpanResult`, a :class:`SpanOutOfRange` when the span starts at or after the end of the video, or a
:class:`~pose_data.media.video_probe.VideoDecodeError` when the stream breaks off. Times, spans and rotation follow
:mod:`pose_data.media.video_decode`'s conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from pose_data.media.video_probe import (
    VideoDecodeError,
    display_size,
    ffmpeg_message,
    normalise_rotation,
    open_video,
    video_stream,
)

#: A span end later than the decoded end of the video by at most this much is not "truncated":
#: HD-VILA spans are written with millisecond precision.
END_TOLERANCE_S = 1e-3

#: When decoding reaches the end of the stream this much earlier than the video stream's header
#: says it ends, the file is taken as truncated (decode_failed), not as a span out of range.
HEADER_END_TOLERANCE_S = 1.0

#: Slice threading, not PyAV's "AUTO" (frame + slice): with frame threading FFmpeg drops the error
#: of a broken packet and the frames decoded beside it (seen on an mp4 cut in half: "AUTO" gave
#: 114 frames and 0 errors, "SLICE" 116 frames and 1 error), and on 1-2 cores per worker it is not
#: faster (bikes.mp4: 0.12-0.15 s either way).
THREAD_TYPE = "SLICE"


class SpanOutOfRange(VideoDecodeError):
    """The span starts at or after the end of the video; ``video_end`` is that end in seconds."""

    def __init__(self, reason: str, video_end: float) -> None:
        super().__init__(reason)
        self.video_end = video_end


@dataclass(frozen=True)
class SpanResult:
    """The truth about one decoded span ``[start, end)``.

    - ``fps``: decoded rate ``(n - 1) / (decoded_end - decoded_start)`` when ``n > 1`` frames were
      kept (the mean rate of a variable-frame-rate span), else the stream's average rate (0.0
      when unknown).
    - ``num_frames``: frames whose timestamp lies in ``[start, end)``. It can be 0 only when the
      video has frames on both sides of a span shorter than the gap between them.
    - ``width``/``height``: display size of the kept frames (after rotation).
    - ``decoded_start``/``decoded_end``: timestamps of the first/last kept frame (``None`` when
      ``num_frames == 0``).
    - ``decoded_duration``: ``decoded_end - decoded_start + 1 / fps``, i.e. the time the kept frames
      cover when each lasts one frame period (0.0 when nothing was kept).
    - ``frames_decoded``: every frame decoded to produce the result, including those before
      ``start`` after the seek: the cost measure.
    - ``decode_errors``: packets the decoder rejected and that were skipped, plus read errors.
    - ``corrupt_frames``: kept frames that the decoder flagged as corrupt (concealed, not dropped).
    - ``truncated``: the video ended before ``end``; ``video_end`` is then the end of the video
      (last frame + one period). ``video_end`` is also set whenever decoding reached the end of the
      stream, else ``None``.
    - ``seeks``: how many seeks it took (0: decoded from the start; more than 1: a seek landed
      after ``start`` and was retried earlier).
    """

    fps: float
    num_frames: int
    width: int
    height: int
    decoded_start: float | None
    decoded_end: float | None
    decoded_duration: float
    frames_decoded: int
    decode_errors: int
    corrupt_frames: int
    rotation: int
    truncated: bool
    video_end: float | None
    seeks: int


FrameCallback = Callable[[av.VideoFrame, float], None]


class SpanDecoder:
    """One decode of one span: seeking, timestamps and counters (used once by :func:`~pose_data.media.video_decode.decode_span`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._open()
        container, stream = self.container, self.stream
        self.time_base: Fraction = stream.time_base
        if stream.start_time is not None:
            self.origin_pts = stream.start_time
        elif container.start_time is not None:
            self.origin_pts = int(container.start_time / av.time_base / self.time_base)
        else:
            self.origin_pts = 0
        rate = stream.average_rate or stream.guessed_rate
        self.header_fps = float(rate) if rate else 0.0
        self.frames_decoded = 0
        self.decode_errors = 0
        self.seeks = 0
        self.read_error: str | None = None
        self.last_error: str | None = None
        self.reached_eof = False
        self.last_t: float | None = None  # time of the last decoded frame (kept or not)
        self.last_duration: float | None = None

    def _open(self) -> None:
        self.container = open_video(self.path)
        try:
            self.stream = video_stream(self.container, self.path)
        except VideoDecodeError:
            self.container.close()
            raise
        self.stream.thread_type = THREAD_TYPE

    def _reopen(self) -> None:
        """Back to the first packet: seeking to the start is not reliable in every demuxer (MPEG-TS)."""
        self.container.close()
        self._open()

    def close(self) -> None:
        self.container.close()

    # -- timestamps --

    def _time(self, frame) -> float:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:  # neither: one nominal period after the previous frame
            if self.last_t is None:
                return 0.0
            return self.last_t + (1.0 / self.header_fps if self.header_fps else 0.0)
        return float((pts - self.origin_pts) * self.time_base)

    def _seconds_to_pts(self, seconds: float) -> int:
        """Floor of ``seconds`` (relative to the origin) in the stream's time base."""
        return self.origin_pts + math.floor(Fraction(seconds) / self.time_base)

    # -- decoding --

    def _frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """Decode from the current position to the end, counting frames and errors."""
        self.reached_eof = False
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                self.reached_eof = True
                return
            except av.FFmpegError as exc:  # a read error ends the stream; flush what the decoder holds
                self.decode_errors += 1
                self.read_error = ffmpeg_message(exc)
                packet = None
            try:
                frames = self.stream.decode(packet)
            except av.FFmpegError as exc:
                self.decode_errors += 1
                self.last_error = ffmpeg_message(exc)
                frames = []
            for frame in frames:
                self.frames_decoded += 1
                t = self._time(frame)
                self.last_t = t
                if frame.duration:
                    self.last_duration = float(frame.duration * self.time_base)
                yield frame, t
            if packet is None:
                self.reached_eof = True
                return

    def _seek(self, target: float) -> None:
        self.container.seek(self._seconds_to_pts(target), backward=True, any_frame=False, stream=self.stream)
        self.seeks += 1

    def _positioned_frames(self, start: float) -> Iterator[tuple[av.VideoFrame, float]]:
        """Frames from a position at or before ``start``: seek, and seek earlier while it overshoots."""
        if start <= 0:
            yield from self._frames()
            return
        target, step = start, 1.0
        while True:
            if target <= 0:  # decode from the first packet
                self._reopen()
                yield from self._frames()
                return
            try:
                self._seek(target)
            except av.FFmpegError as exc:  # unseekable: decode from the first packet
                self.last_error = f"seek failed ({ffmpeg_message(exc)})"
                target = 0.0
                continue
            frames = self._frames()
            first = next(frames, None)
            if first is not None and first[1] <= start:
                yield first
                yield from frames
                return
            frames.close()
            target = max(0.0, min(target, first[1] if first else target) - step)
            step *= 2

    def run(self, start: float, end: float, on_frame: FrameCallback | None) -> SpanResult:
        kept_first: float | None = None
        kept_last: float | None = None
        num_frames = 0
        corrupt = 0
        size: tuple[int, int] | None = None
        rotation = 0
        hit_end = False
        for frame, t in self._positioned_frames(start):
            if t >= end:
                hit_end = True
                break
            if t < start:
                continue
            if num_frames == 0:
                kept_first = t
                rotation = normalise_rotation(frame.rotation)
                size = display_size(frame.width, frame.height, rotation)
            kept_last = t if kept_last is None else max(kept_last, t)  # max: robust to out-of-order pts
            num_frames += 1
            corrupt += bool(frame.is_corrupt)
            if on_frame is not None:
                on_frame(frame, t)
        return self._result(start, end, num_frames, kept_first, kept_last, size, rotation, corrupt, hit_end)

    def _period(self, fps: float) -> float:
        if fps > 0:
            return 1.0 / fps
        return self.last_duration or 0.0

    def _header_end(self) -> float | None:
        """End of the video stream according to its own header (``None`` when it states none)."""
        if not self.stream.duration:
            return None
        start = self.stream.start_time if self.stream.start_time is not None else self.origin_pts
        return float((start + self.stream.duration - self.origin_pts) * self.time_base)

    def _broken_off(self, video_end: float) -> str | None:
        """Why the stream's early end looks like damage (decode errors, header promises more), or None."""
        reasons = []
        if self.decode_errors:
            reasons.append(f"{self.decode_errors} decode error(s) ({self.last_error or self.read_error})")
        header_end = self._header_end()
        if header_end is not None and video_end < header_end - HEADER_END_TOLERANCE_S:
            reasons.append(f"its header says the video stream lasts {header_end:.3f} s")
        return "; ".join(reasons) or None

    def _result(self, start, end, num_frames, kept_first, kept_last, size, rotation, corrupt, hit_end) -> SpanResult:
        span = f"span [{start:.3f}, {end:.3f}) s"
        if self.frames_decoded == 0:
            raise VideoDecodeError(self._nothing_decoded(start))
        if num_frames > 1 and kept_last > kept_first:
            fps = (num_frames - 1) / (kept_last - kept_first)
        else:
            fps = self.header_fps
        ended = not hit_end and self.reached_eof
        video_end = self.last_t + self._period(fps if num_frames > 1 else self.header_fps) if ended else None
        broken = self._broken_off(video_end) if ended else None
        if num_frames == 0 and hit_end:  # frames on both sides of the span, none inside it
            if self.decode_errors:
                raise VideoDecodeError(
                    f"no frame decoded in {span}; {self.decode_errors} decode error(s) ({self.last_error or self.read_error})"
                )
            return SpanResult(
                fps=fps,
                num_frames=0,
                width=0,
                height=0,
                decoded_start=None,
                decoded_end=None,
                decoded_duration=0.0,
                frames_decoded=self.frames_decoded,
                decode_errors=0,
                corrupt_frames=0,
                rotation=0,
                truncated=False,
                video_end=None,
                seeks=self.seeks,
            )
        # a whole-video decode (end = inf) is never "truncated": it keeps whatever decoded
        truncated = ended and math.isfinite(end) and (num_frames == 0 or end > video_end + END_TOLERANCE_S)
        if truncated and broken:
            raise VideoDecodeError(
                f"the stream breaks off at {self.last_t:.3f} s, before the end of {span}: {broken}; truncated or corrupt file"
            )
        if num_frames == 0:
            raise SpanOutOfRange(
                f"{span} starts at or after the end of the video ({video_end:.3f} s; last frame at {self.last_t:.3f} s)",
                video_end=video_end,
            )
        return SpanResult(
            fps=fps,
            num_frames=num_frames,
            width=size[0],
            height=size[1],
            decoded_start=kept_first,
            decoded_end=kept_last,
            decoded_duration=kept_last - kept_first + self._period(fps),
            frames_decoded=self.frames_decoded,
            decode_errors=self.decode_errors,
            corrupt_frames=corrupt,
            rotation=rotation,
            truncated=truncated,
            video_end=video_end,
            seeks=self.seeks,
        )

    def _nothing_decoded(self, start: float) -> str:
        stated = self.container.duration / av.time_base if self.container.duration else None
        where = f"after {self.seeks} seek(s) back from {start:.3f} s" if self.seeks else "from the start"
        errors = f"{self.decode_errors} decode error(s)"
        if self.last_error or self.read_error:
            errors += f" ({self.last_error or self.read_error})"
        header = f"; the header says the video lasts {stated:.3f} s" if stated else ""
        return f"no frame could be decoded {where}: {errors}{header}; truncated or corrupt file?"
