"""Keypoint records shared by every pose backend, the filter, the renderers and the shard formats.

Every backend returns, per image, a list of :class:`PersonPose` in COCO-17 order and pixel
coordinates of the image it was given. ``to_record``/``from_record`` give the plain-JSON form stored
in ``<key>.json`` and in the parquet ``bboxes``/``keypoints`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_KEYPOINTS = len(COCO17_NAMES)


@dataclass
class PersonPose:
    """One detected person.

    bbox: (x0, y0, x1, y1) in pixels; score: the detector's (or backend's) person score;
    keypoints: float32 array (17, 3) of (x, y, score) in pixels, COCO-17 order. Keypoint scores are
    backend-specific: MediaPipe visibilities lie in [0, 1], RTMPose SimCC scores are not
    probabilities and can exceed 1.
    """

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoints.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"keypoints must have shape ({NUM_KEYPOINTS}, 3), got {self.keypoints.shape}")
        self.bbox = tuple(float(v) for v in self.bbox)  # type: ignore[assignment]
        if len(self.bbox) != 4:
            raise ValueError(f"bbox must be (x0, y0, x1, y1), got {self.bbox}")
        self.score = float(self.score)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def num_confident(self, min_score: float) -> int:
        """Number of keypoints whose score is at least ``min_score``."""
        return int((self.keypoints[:, 2] >= min_score).sum())

    def to_record(self) -> dict:
        return {
            "bbox": [round(v, 2) for v in self.bbox],
            "score": round(self.score, 4),
            "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in self.keypoints],
        }

    @classmethod
    def from_record(cls, record: dict) -> PersonPose:
        return cls(bbox=tuple(record["bbox"]), score=record["score"], keypoints=np.asarray(record["keypoints"]))
