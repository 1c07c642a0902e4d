"""OpenPose-style body skeleton, drawn the way ControlNet's OpenPose annotator draws it.

Reference: ``draw_bodypose(canvas, candidate, subset)`` in lllyasviel/ControlNet
``annotator/openpose/util.py`` (v1.0, pixel coordinates) and lllyasviel/ControlNet-v1-1-nightly
(v1.1, the same drawing on coordinates normalised to [0, 1] and multiplied back by W/H). Its drawing,
which this module reproduces pixel for pixel for the same 18 points:

1. joints first: for each of the 18 points (outer loop) and each person (inner loop), a filled
   ``cv2.circle`` of radius 4 at ``(int(x), int(y))`` in the point's colour;
2. then limbs: for each of the first 17 entries of its limb table (outer) and each person (inner),
   an ellipse ``cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), 4), int(angle), 0, 360, 1)``
   filled with ``cv2.fillConvexPoly`` on a copy of the canvas, blended back with
   ``cv2.addWeighted(canvas, 0.4, copy, 0.6, 0)``. So a limb over black reads ``round(0.6 * colour)``,
   limbs over limbs accumulate, and a joint covered by a limb is blended (0.4 joint + 0.6 limb): only a
   joint with no drawn limb through it keeps its exact colour.

The canvas is the RGB image ControlNet feeds its model (its ``OpenposeDetector`` flips the input to
BGR for the network only; the canvas of zeros goes to the model as it is), so the colour table
reads as RGB: limb 0 (neck to right shoulder) is red.

Not matched: controlnet_aux >= 0.0.6 (``Keypoint`` objects, normalised coordinates), which draws
each person's limbs opaque in ``int(0.6 * colour)`` and its joints on top, person by person. Its
images differ from the classic ones wherever a joint and a limb or two limbs overlap. The classic
v1.0/v1.1 annotator made the data the ControlNet OpenPose models were trained on.

Speed: the 0.6 blend is done on the limb polygon's bounding box only (the reference blends the whole
canvas, where ``0.4 * v + 0.6 * v`` rounds back to ``v`` for every uint8 ``v``), so a render costs a
few small OpenCV calls per limb.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from pose_data.pose.keypoints import NUM_KEYPOINTS, PersonPose

OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NECK = 1
# COCO-17 index of every OpenPose-18 point; the neck (None) is the mean of COCO 5 and 6.
_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_COCO_LEFT_SHOULDER, _COCO_RIGHT_SHOULDER = 5, 6

# The annotator's 17 drawn limbs as 0-based OpenPose-18 index pairs; limb i is drawn in colour i.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# The annotator's colour table (RGB in the final image); joint i and limb i use colour i.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICK_WIDTH = 4
JOINT_RADIUS = 4
LIMB_ALPHA = 0.6


def coco17_to_openpose18(keypoints: np.ndarray, min_score: float) -> np.ndarray:
    """Reorder COCO-17 ``(x, y, score)`` rows into the OpenPose-18 order of :data:`OPENPOSE18_NAMES`.

    A point is present when its score is at least ``min_score`` and its coordinates are finite.
    Missing points are the row ``(nan, nan, 0)``: test ``np.isnan(points[:, 0])``, not the score (a
    present point may score 0 when ``min_score <= 0``). The neck is the mean of the two shoulders,
    with the lower of their scores, and only when both shoulders are present.

    Returns float64 (18, 3), the dtype of the OpenPose estimator's ``candidate`` array, so that the
    drawing arithmetic is the reference's.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape ({NUM_KEYPOINTS}, 3), got {keypoints.shape}")
    present = (keypoints[:, 2] >= min_score) & np.isfinite(keypoints[:, :2]).all(axis=1)
    coco = np.where(present[:, None], keypoints, np.array([np.nan, np.nan, 0.0]))

    points = np.empty((len(OPENPOSE18_NAMES), 3), dtype=np.float64)
    for index, coco_index in enumerate(_FROM_COCO):
        if coco_index is not None:
            points[index] = coco[coco_index]
    left, right = coco[_COCO_LEFT_SHOULDER], coco[_COCO_RIGHT_SHOULDER]
    if present[_COCO_LEFT_SHOULDER] and present[_COCO_RIGHT_SHOULDER]:
        points[NECK] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2, min(left[2], right[2]))
    else:
        points[NECK] = (np.nan, np.nan, 0.0)
    return points


def limb_polygon(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The annotator's limb ellipse between two (x, y) points, as int32 (K, 2) polygon vertices."""
    x0, y0, x1, y1 = float(start[0]), float(start[1]), float(end[0]), float(end[1])
    length = ((y0 - y1) ** 2 + (x0 - x1) ** 2) ** 0.5
    angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
    center = (int((x0 + x1) / 2), int((y0 + y1) / 2))
    return cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)


def _blend_polygon(canvas: np.ndarray, polygon: np.ndarray, color: tuple[int, int, int]) -> None:
    """In place: ``canvas = addWeighted(canvas, 0.4, canvas with polygon filled, 0.6, 0)``, done on the
    polygon's bounding box (outside it the full-canvas blend changes nothing)."""
    height, width = canvas.shape[:2]
    x_lo, y_lo = polygon.min(axis=0)
    x_hi, y_hi = polygon.max(axis=0)
    x_lo, y_lo = max(int(x_lo), 0), max(int(y_lo), 0)
    x_hi, y_hi = min(int(x_hi) + 1, width), min(int(y_hi) + 1, height)
    if x_lo >= x_hi or y_lo >= y_hi:
        return  # entirely off the canvas
    box = canvas[y_lo:y_hi, x_lo:x_hi]
    filled = box.copy()
    cv2.fillConvexPoly(filled, polygon - np.array([x_lo, y_lo], dtype=polygon.dtype), color)
    canvas[y_lo:y_hi, x_lo:x_hi] = cv2.addWeighted(box, 1.0 - LIMB_ALPHA, filled, LIMB_ALPHA, 0)


def render_openpose_skeleton(persons: Sequence[PersonPose], width: int, height: int, min_score: float) -> np.ndarray:
    """Draw every person's OpenPose-18 body skeleton on black; returns (height, width, 3) uint8 RGB.

    Keypoints are in pixel coordinates of a ``width`` x ``height`` image; points below ``min_score``
    are left out with every limb that touches them. See the module docstring for the exact drawing.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got width={width}, height={height}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    people = [coco17_to_openpose18(person.keypoints, min_score) for person in persons]
    present = [~np.isnan(points[:, 0]) for points in people]

    for joint, color in enumerate(OPENPOSE_COLORS):
        for points, ok in zip(people, present):
            if ok[joint]:
                x, y = points[joint, :2]
                cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, color, thickness=-1)

    for (a, b), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        for points, ok in zip(people, present):
            if ok[a] and ok[b]:
                _blend_polygon(canvas, limb_polygon(points[a], points[b]), color)
    return canvas
