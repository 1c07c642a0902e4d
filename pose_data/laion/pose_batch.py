"""The pose stage of the LAION-Pose builder as a plain callable (a Ray actor wraps it unchanged).

It loads the pose model once, then takes a downloaded shard and the indices of a batch of its
images, decodes them and runs the estimator on the whole batch in one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from pose_data.laion.download import DownloadedShard
from pose_data.media.image_decode import ImageDecodeError, decode_image
from pose_data.pose.backends import load_pose_estimator
from pose_data.pose.estimator import MMPOSE_BACKENDS, PoseModelConfig, PoseModelLoadError


@dataclass
class PoseBatchResult:
    """Per requested index: person records (``PersonPose.to_record()``) or a decode error."""

    indices: np.ndarray
    persons: list[list[dict] | None]
    errors: list[str | None]
    seconds: float  # decoding + inference


class PoseBatchRunner:
    def __init__(self, cfg: PoseModelConfig, num_threads: int | None = None) -> None:
        """``num_threads``: torch threads of the mmpose backend (MediaPipe's TFLite manages its own)."""
        if num_threads and cfg.backend in MMPOSE_BACKENDS:
            import torch

            torch.set_num_threads(num_threads)
        self.estimator, self.load_error = None, None
        try:
            self.estimator = load_pose_estimator(cfg)
        except PoseModelLoadError as err:  # kept and raised by ready(), not as a worker crash
            self.load_error = str(err)

    def ready(self) -> str:
        """The loaded model's name: a driver waits on this so a model that cannot load stops the run first
        (RuntimeError naming why, as one line)."""
        if self.estimator is None:
            raise PoseModelLoadError(self.load_error)
        return self.estimator.name

    def estimate(self, shard: DownloadedShard, indices: np.ndarray) -> PoseBatchResult:
        self.ready()
        start = time.perf_counter()
        images, ok_positions = [], []
        persons: list[list[dict] | None] = [None] * len(indices)
        errors: list[str | None] = [None] * len(indices)
        for pos, i in enumerate(indices):
            try:
                images.append(decode_image(shard.image_bytes(int(i))))
                ok_positions.append(pos)
            except ImageDecodeError as err:
                errors[pos] = err.reason
        if images:
            results = self.estimator(images)  # backends run without autograd themselves
            for pos, people in zip(ok_positions, results):
                persons[pos] = [p.to_record() for p in people]
        return PoseBatchResult(np.asarray(indices), persons, errors, time.perf_counter() - start)

    __call__ = estimate
