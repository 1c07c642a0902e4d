"""Which frames of a timestamped sequence to keep: every k-th one, or one per tick of a constant rate.

Both rules take items one at a time (``add(item, t)``) so a video is sampled as it is decoded, and
both are used by the clip writer, ``pose-data extract-poses`` and ``fyp-generate``.

Constant-rate resampling (:class:`RateSampler`): output tick ``k`` lies at ``t_first + k / fps``
and gets the input whose timestamp is nearest to it (the earlier one on a tie); ticks run while
``t_first + k / fps <= t_last``, so a sequence from ``t_first`` to ``t_last`` gives
``floor((t_last - t_first) * fps) + 1`` items (:func:`resampled_count`). A lower rate than the
source drops items, a higher one repeats them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

#: Slack when comparing a tick with an input timestamp (float rounding of seconds).
TICK_EPS = 1e-9
#: The most ticks one input may close (over 9 hours at 30 fps): a longer gap is a broken timestamp, not a pause.
MAX_TICKS_PER_INPUT = 1_000_000


def resampled_count(first: float, last: float, fps: float) -> int:
    """Items a :class:`RateSampler` with ``fps`` gives for inputs from ``first`` to ``last`` seconds."""
    return math.floor((last - first) * fps + TICK_EPS) + 1


def check_fps(fps: object, name: str = "fps") -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{name} must be a positive number, got {fps!r}")
    return float(fps)


def check_stride(stride: object, name: str = "frame stride") -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {stride!r}")
    return stride


class RateSampler:
    """Nearest-item resampling to ``fps`` (module doc). ``add`` returns the items of the ticks it closed, at most
    ``max_ticks`` in all (None: no limit), so a timestamp far ahead (a jump in a hostile file) costs no more than
    the items still wanted."""

    def __init__(self, fps: float, max_ticks: int | None = None) -> None:
        self.fps = check_fps(fps)
        self.max_ticks = max_ticks
        self.first_t: float | None = None
        self.ticks = 0  # ticks emitted so far
        self._previous: tuple[Any, float] | None = None

    def add(self, item: Any, t: float) -> list[Any]:
        """Take the next input; returns the items of every tick up to ``t`` (none for a timestamp that goes back)."""
        if not math.isfinite(t):
            raise ValueError(f"timestamp {t!r} is not a finite number of seconds")
        if self.first_t is None:
            self.first_t = t
        closing = math.floor((t + TICK_EPS - self.first_t) * self.fps) + 1 - self.ticks  # ticks up to t
        if self.max_ticks is not None:
            closing = min(closing, self.max_ticks - self.ticks)
        if closing > MAX_TICKS_PER_INPUT:
            since = self._previous[1] if self._previous is not None else self.first_t
            raise ValueError(f"timestamps jump from {since:g} s to {t:g} s: {closing} frames at {self.fps:g} fps; the timestamps look broken")
        out = []
        while self.max_ticks is None or self.ticks < self.max_ticks:
            tick = self.first_t + self.ticks / self.fps
            if tick > t + TICK_EPS:
                break
            previous = self._previous
            out.append(previous[0] if previous is not None and tick - previous[1] <= t - tick + TICK_EPS else item)
            self.ticks += 1
        self._previous = (item, t)
        return out


class StrideSampler:
    """Every ``stride``-th input, starting with the first."""

    def __init__(self, stride: int = 1) -> None:
        self.stride = check_stride(stride)
        self.seen = 0

    def add(self, item: Any, t: float) -> list[Any]:
        keep = self.seen % self.stride == 0
        self.seen += 1
        return [item] if keep else []


def make_sampler(fps: float | None = None, stride: int | None = None, max_items: int | None = None) -> RateSampler | StrideSampler:
    """``fps`` -> :class:`RateSampler` (giving at most ``max_items``); else every ``stride``-th (default every) input. Not both."""
    if fps is not None and stride is not None:
        raise ValueError(f"give a sampling rate (fps {fps}) or a frame stride ({stride}), not both")
    return RateSampler(fps, max_items) if fps is not None else StrideSampler(1 if stride is None else stride)


class _Enough(Exception):
    pass


def decode_sampled(path, on_kept: Callable[[int, Any, float], None], *, fps: float | None = None, stride: int | None = None,
                   max_frames: int | None = None) -> tuple[Any, int]:  # fmt: skip
    """Decode the video at ``path`` (:func:`pose_data.media.video_decode.decode_video`) and call ``on_kept(index, frame, t)``
    for each sampled frame (``index``: its place in decode order), at most ``max_frames`` of them.

    Returns ``(result, frames decoded)``: ``result`` is the decode's ``SpanResult``, or None when decoding stopped
    at ``max_frames``. Raises what ``decode_video`` raises for an unreadable file.
    """
    from pose_data.media.video_decode import decode_video

    sampler = make_sampler(fps, stride, max_frames)
    counts = {"decoded": 0, "kept": 0}

    def on_frame(frame, t: float) -> None:
        if max_frames is not None and counts["kept"] >= max_frames:
            raise _Enough
        index = counts["decoded"]
        counts["decoded"] += 1
        for kept_index, kept_frame, kept_t in sampler.add((index, frame, t), t):
            on_kept(kept_index, kept_frame, kept_t)
            counts["kept"] += 1

    try:
        return decode_video(path, on_frame=on_frame), counts["decoded"]
    except _Enough:
        return None, counts["decoded"]
