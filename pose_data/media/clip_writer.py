"""Turn the frames of one decoded span into a training sample: an H.264 mp4 clip, or sampled JPEGs.

Both classes take frames one at a time as ``add(frame, t)``, the signature of
:func:`pose_data.media.video_decode.decode_span`'s ``on_frame`` callback, so a clip is decoded once and
written as it is decoded: ``decode_span(path, a, b, on_frame=encoder.add)``. ``on_kept`` (optional) sees every
frame that goes into the clip, as the RGB array written (the captioner's frames come from there).

Every frame goes through the same geometry (:func:`frame_to_rgb`):

1. the display rotation (``frame.rotation``) is applied, so the output is upright and carries no
   display matrix;
2. with ``size``, the frame is scaled (swscale, area averaging) so its *short* side is ``size``
   pixels, keeping the aspect ratio;
3. with ``center_crop``, the centre square of the short side is cut out;
4. the width and height are made even (yuv420p H.264 needs it) by dropping the last odd column/row,
   or, when scaling, by rounding the scaled long side to an even number.

Output frame rate of :class:`ClipEncoder` with ``fps``: output frame ``k`` is shown at
``k / fps`` after the first input frame and holds the input frame nearest in time to
``t_first + k / fps`` (:class:`pose_data.media.frame_sampling.RateSampler`), so the clip has
``floor((t_last - t_first) * fps) + 1`` frames (see :func:`resampled_count`).
Lower ``fps`` drops frames, higher duplicates them. Without ``fps`` every frame is written at its
own timestamp minus the first one (variable frame rate preserved). Clips start at t = 0.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from pose_data.media.frame_sampling import RateSampler, resampled_count

__all__ = ["ClipEncoder", "FrameSampler", "frame_to_rgb", "output_size", "resampled_count"]

#: libx264 presets, fastest to slowest.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: Time base of clips written without ``fps``: 1/90000 s (the MPEG clock) represents any input timestamp.
VFR_TIME_BASE = Fraction(1, 90000)

def _check_geometry(size: int | None, center_crop: bool) -> None:
    if size is not None and (not isinstance(size, int) or size < 2 or size % 2):
        raise ValueError(f"size must be an even int >= 2 (short side in pixels) or None, got {size!r}")
    if not isinstance(center_crop, bool):
        raise ValueError(f"center_crop must be True or False, got {center_crop!r}")


def _even(n: int) -> int:
    """``n`` rounded down to an even number (at least 2): drop the last odd row or column."""
    return max(2, n - n % 2)


def _nearest_even(x: float) -> int:
    """``x`` rounded to the nearest even number (at least 2): the long side of a scaled frame."""
    return max(2, 2 * round(x / 2))


def _scaled_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """Display size after scaling the short side to ``size`` (the long side rounded to even)."""
    if size is None:
        return width, height
    if width <= height:
        return size, max(size, _nearest_even(height * size / width))
    return max(size, _nearest_even(width * size / height)), size


def output_size(width: int, height: int, rotation: int, size: int | None, center_crop: bool) -> tuple[int, int]:
    """(width, height) of the frames :func:`frame_to_rgb` makes from a stored ``width x height`` frame."""
    if rotation in (90, 270):
        width, height = height, width
    width, height = _scaled_size(width, height, size)
    if center_crop:
        width = height = min(width, height)
    return _even(width), _even(height)


def frame_to_rgb(frame: av.VideoFrame, size: int | None = None, center_crop: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``frame``: rotated upright, scaled, centre-cropped, even-sized (see module doc)."""
    rotation = int(round(frame.rotation / 90.0)) % 4 * 90
    quarter = rotation in (90, 270)
    display_w, display_h = (frame.height, frame.width) if quarter else (frame.width, frame.height)
    scaled_w, scaled_h = _scaled_size(display_w, display_h, size)
    if (scaled_w, scaled_h) != (display_w, display_h):
        # swscale works on the stored pixels: swap back for quarter turns
        stored_w, stored_h = (scaled_h, scaled_w) if quarter else (scaled_w, scaled_h)
        rgb = frame.reformat(width=stored_w, height=stored_h, format="rgb24", interpolation="AREA").to_ndarray()
    else:
        rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.rot90(rgb, rotation // 90)  # counter-clockwise quarter turns: (H, W, 3) in display orientation
    out_w, out_h = output_size(frame.width, frame.height, rotation, size, center_crop)
    top, left = (rgb.shape[0] - out_h) // 2, (rgb.shape[1] - out_w) // 2
    return np.ascontiguousarray(rgb[top : top + out_h, left : left + out_w])


class ClipEncoder:
    """Encode frames into an in-memory H.264 (libx264, yuv420p) mp4; ``finish()`` returns its bytes.

    ``size`` (short side, even) and ``center_crop`` set the geometry, ``fps`` resamples by timestamp
    (module doc), ``crf`` (0-51, lower is better) and ``preset`` are libx264's quality and speed.
    The encoder opens on the first frame (no empty mp4 is ever produced); leaving the ``with``
    block without ``finish()`` discards the clip.
    """

    def __init__(
        self,
        *,
        size: int | None = None,
        center_crop: bool = False,
        fps: float | None = None,
        crf: int = 23,
        preset: str = "veryfast",
        on_kept: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        _check_geometry(size, center_crop)
        if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number or None, got {fps!r}")
        if not (isinstance(crf, int) and 0 <= crf <= 51):
            raise ValueError(f"crf must be an int in 0..51, got {crf!r}")
        if preset not in X264_PRESETS:
            raise ValueError(f"unknown x264 preset {preset!r}; choose one of {', '.join(X264_PRESETS)}")
        self.size, self.center_crop, self.fps, self.crf, self.preset = size, center_crop, fps, crf, preset
        self.on_kept = on_kept
        self.num_written = 0
        self._buffer: io.BytesIO | None = None
        self._container = None
        self._stream = None
        self._finished = False
        self._first_t: float | None = None
        self._resampler = RateSampler(fps) if fps is not None else None
        self._last_pts = -1

    def __enter__(self) -> ClipEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, frame: av.VideoFrame, t: float) -> None:
        """Take the next decoded frame, shown at ``t`` seconds (timestamps must not decrease)."""
        if self._finished:
            raise RuntimeError("ClipEncoder.add() after finish() or close()")
        if self._first_t is None:
            self._first_t = t
        if self.fps is None:
            pts = max(self._last_pts + 1, round((t - self._first_t) / VFR_TIME_BASE))
            self._write(frame, pts)
            return
        # every tick up to t gets whichever of (previous frame, this frame) is nearer to it; pts = tick index
        for chosen in self._resampler.add(frame, t):
            self._write(chosen, self._last_pts + 1)

    def finish(self) -> bytes:
        """Flush the encoder and return the mp4 bytes. Raises ValueError when no frame was added."""
        if self._finished:
            raise RuntimeError("ClipEncoder.finish() called twice, or after close()")
        if self._container is None:
            self._finished = True
            raise ValueError("ClipEncoder.finish(): no frame was added, there is no clip to write")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._finished = True
        return self._buffer.getvalue()

    def close(self) -> None:
        """Discard an unfinished clip and release the encoder (safe to call more than once)."""
        if self._container is not None and not self._finished:
            self._container.close()
        self._finished = True
        self._resampler = None

    def _open(self, width: int, height: int) -> None:
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format="mp4")
        if self.fps is not None:
            rate = Fraction(self.fps).limit_denominator(1001)
            time_base = 1 / rate
        else:
            rate, time_base = Fraction(25), VFR_TIME_BASE  # rate is only x264's rate-control hint here
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream = stream

    def _write(self, frame: av.VideoFrame, pts: int) -> None:
        rgb = frame_to_rgb(frame, self.size, self.center_crop)  # (H, W, 3)
        if self.on_kept is not None:
            self.on_kept(rgb)
        if self._container is None:
            self._open(rgb.shape[1], rgb.shape[0])
        out = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        out.pts = pts
        out.time_base = self._stream.codec_context.time_base
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self._last_pts = pts
        self.num_written += 1


class FrameSampler:
    """Keep ``num_frames`` frames ``stride`` frames apart (the 1st, (1+stride)th, ...) as JPEG bytes.

    For users who train on frames rather than video. Geometry options are those of
    :class:`ClipEncoder`; ``quality`` is the JPEG quality (1-95). ``times`` lists the kept frames'
    timestamps; ``full`` says whether all ``num_frames`` were collected (a short span gives fewer:
    ``finish()`` returns what there is and the caller decides).
    """

    def __init__(
        self,
        num_frames: int,
        stride: int = 1,
        *,
        size: int | None = None,
        center_crop: bool = False,
        quality: int = 90,
        on_kept: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        if not (isinstance(num_frames, int) and num_frames >= 1):
            raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
        if not (isinstance(stride, int) and stride >= 1):
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        if not (isinstance(quality, int) and 1 <= quality <= 95):
            raise ValueError(f"quality must be an int in 1..95, got {quality!r}")
        _check_geometry(size, center_crop)
        self.num_frames, self.stride, self.size, self.center_crop, self.quality = num_frames, stride, size, center_crop, quality
        self.on_kept = on_kept
        self.times: list[float] = []
        self._jpegs: list[bytes] = []
        self._seen = 0

    @property
    def full(self) -> bool:
        return len(self._jpegs) >= self.num_frames

    def add(self, frame: av.VideoFrame, t: float) -> None:
        """Take the next decoded frame; only every ``stride``-th one is converted and kept."""
        index = self._seen
        self._seen += 1
        if self.full or index % self.stride:
            return
        rgb = frame_to_rgb(frame, self.size, self.center_crop)
        if self.on_kept is not None:
            self.on_kept(rgb)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=self.quality)
        self._jpegs.append(buffer.getvalue())
        self.times.append(t)

    def finish(self) -> list[bytes]:
        """The kept frames as JPEG bytes, in time order (fewer than ``num_frames`` for a short span)."""
        return list(self._jpegs)
