"""Keypoint records shared by every pose backend, the filter, the renderers and the shard formats.

Every backend returns, per image, a list of :class:`PersonPose` in COCO-17 order and pixel
coordinates of the image it was given. Whole-body backends also fill the person's hands (21 points
each, OpenPose hand order) and face (68 points, iBUG-68 order); body-only backends leave them None.
``to_record``/``from_record`` give the plain-JSON form stored in ``<key>.json`` and in the parquet
``bboxes``/``keypoints``/``hand_left``/``hand_right``/``face`` columns: coordinates rounded to 2
decimals, scores to 4 (:func:`stored_values`), so a renderer that draws from the stored values draws
the same image from a parquet row as from the estimator's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_KEYPOINTS = len(COCO17_NAMES)

# OpenPose hand order: the wrist, then thumb, index, middle, ring and little finger, 4 points each from the palm out.
HAND_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{joint}" for finger in ("thumb", "index", "middle", "ring", "little") for joint in (1, 2, 3, 4)
)
NUM_HAND_POINTS = len(HAND_NAMES)  # 21
NUM_FACE_POINTS = 68  # iBUG-68 (Multi-PIE) order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67
#: The optional parts of a person, their record/column names and their shapes.
PART_SHAPES: dict[str, tuple[int, int]] = {"hand_left": (NUM_HAND_POINTS, 3), "hand_right": (NUM_HAND_POINTS, 3),
                                           "face": (NUM_FACE_POINTS, 3)}  # fmt: skip
PARTS: tuple[str, ...] = tuple(PART_SHAPES)
#: A hand or face point counts as found when its score is at least this (DWPose's threshold, for drawing and for
#: deciding that a part was found at all); MediaPipe Holistic gives no part scores and stores 1.0 for a found part.
PART_MIN_SCORE = 0.3
#: The parquet columns of the parts (LAION-Pose ``meta/`` and ``keypoints.parquet``): per row, one entry per person,
#: the part's (n, 3) points or null where it was not found (always null from a body-only backend).
PART_FIELDS: list[pa.Field] = [pa.field(part, pa.list_(pa.list_(pa.list_(pa.float32())))) for part in PARTS]


def stored_values(points: np.ndarray) -> list[list[float]]:
    """(n, 3) x, y, score as stored in records and parquet: x and y rounded to 2 decimals, the score to 4."""
    return [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in np.asarray(points)]


@dataclass
class PersonPose:
    """One detected person.

    bbox: (x0, y0, x1, y1) in pixels; score: the detector's (or backend's) person score;
    keypoints: float32 array (17, 3) of (x, y, score) in pixels, COCO-17 order. Keypoint scores are
    backend-specific: MediaPipe visibilities lie in [0, 1], RTMPose SimCC scores are not
    probabilities and can exceed 1.
    hand_left, hand_right: float32 (21, 3) in :data:`HAND_NAMES` order, or None where the hand was
    not found (or the backend finds no hands). ``hand_left`` is the person's own left hand.
    face: float32 (68, 3) in iBUG-68 order, or None.
    """

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray = field(repr=False)
    hand_left: np.ndarray | None = field(default=None, repr=False)
    hand_right: np.ndarray | None = field(default=None, repr=False)
    face: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.keypoints.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"keypoints must have shape ({NUM_KEYPOINTS}, 3), got {self.keypoints.shape}")
        self.bbox = tuple(float(v) for v in self.bbox)  # type: ignore[assignment]
        if len(self.bbox) != 4:
            raise ValueError(f"bbox must be (x0, y0, x1, y1), got {self.bbox}")
        self.score = float(self.score)
        for part, shape in PART_SHAPES.items():
            value = getattr(self, part)
            if value is not None:
                value = np.asarray(value, dtype=np.float32)
                if value.shape != shape:
                    raise ValueError(f"{part} must have shape {shape} or be None, got {value.shape}")
                setattr(self, part, value)

    @property
    def has_parts(self) -> bool:
        """True when a hand or the face was found."""
        return any(getattr(self, part) is not None for part in PARTS)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def num_confident(self, min_score: float) -> int:
        """Number of keypoints whose score is at least ``min_score``."""
        return int((self.keypoints[:, 2] >= min_score).sum())

    def to_record(self) -> dict:
        """Plain JSON; a part's key is present only when the part was found."""
        record = {
            "bbox": [round(v, 2) for v in self.bbox],
            "score": round(self.score, 4),
            "keypoints": stored_values(self.keypoints),
        }
        for part in PARTS:
            value = getattr(self, part)
            if value is not None:
                record[part] = stored_values(value)
        return record

    @classmethod
    def from_record(cls, record: dict) -> PersonPose:
        """The inverse of :meth:`to_record`; a part missing or None stays None (records written before parts existed)."""
        parts = {part: None if record.get(part) is None else np.asarray(record[part]) for part in PARTS}
        return cls(bbox=tuple(record["bbox"]), score=record["score"], keypoints=np.asarray(record["keypoints"]), **parts)
