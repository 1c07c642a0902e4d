"""The frames a captioner sees of a clip: a few of those the clip writer keeps, spread over the clip.

:class:`KeptFrames` collects them as the clip is decoded, with bounded memory (the writer hands it every frame it
keeps, through the writer's ``on_kept`` hook), and :meth:`KeptFrames.clip_frames` picks ``k`` spread over the clip as
:class:`ClipFrames`: the frames, where they stand among the clip's frames, and the clip's frame rate and length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def spread_indices(count: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``count`` frames (the middle of each of ``k`` equal parts); every index when
    ``count <= k``."""
    if count <= k:
        return list(range(count))
    return [min(count - 1, math.floor((i + 0.5) * count / k)) for i in range(k)]


class KeptFrames:
    """Frames a clip writer keeps, collected for the captioner with bounded memory: every ``stride``-th one, at most
    ``2 * k`` of them (when full, every other one is dropped and the stride doubles), each scaled down to
    ``max_side``. :meth:`clip_frames` then spreads ``k`` over what was collected, so they span the whole clip."""

    def __init__(self, k: int, max_side: int):
        self.k, self.max_side = k, max_side
        self.stride, self.count = 1, 0
        self.kept: list[tuple[int, np.ndarray]] = []  # (index among the writer's frames, frame)

    def add(self, rgb) -> None:
        """The writer's next frame: an (H, W, 3) array, or a function that makes it (called only when it is kept)."""
        if self.count % self.stride == 0:
            self.kept.append((self.count, downscaled(rgb() if callable(rgb) else rgb, self.max_side)))
            if len(self.kept) > 2 * self.k:
                self.stride *= 2
                self.kept = [(i, frame) for i, frame in self.kept if i % self.stride == 0]
        self.count += 1

    def clip_frames(self, fps: float) -> ClipFrames | None:
        """The ``k`` frames to caption with their indices at the writer's frame rate ``fps`` (the clip lasts as long as
        the frames the writer kept: ``count / fps``); None when none came."""
        if not self.kept:
            return None
        chosen = [self.kept[i] for i in spread_indices(len(self.kept), self.k)]
        return ClipFrames(np.stack([frame for _, frame in chosen]), [i for i, _ in chosen], fps, self.count / fps, self.count)


def downscaled(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side`` (area-averaged, aspect kept); the array itself when it fits."""
    height, width = rgb.shape[:2]
    if max(height, width) <= max_side:
        return rgb
    from PIL import Image

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


@dataclass
class ClipFrames:
    """What the captioner sees of one clip: ``frames`` (k, H, W, 3) uint8 RGB, their ``indices`` among the clip's
    ``total`` frames, the clip's frame rate ``fps`` and its ``duration`` in seconds (the model is told when each frame
    is, and a model such as Qwen2.5-VL how far apart)."""

    frames: np.ndarray
    indices: list[int]
    fps: float
    duration: float
    total: int | None = None  # frames in the clip; None: as many as ``frames`` (every frame of the clip)
