"""ControlNet 1.1 ``openpose_full`` skeleton (body, hands, face), drawn the way its annotator draws it.

Reference: ``draw_bodypose``, ``draw_handpose`` and ``draw_facepose`` in lllyasviel/ControlNet-v1-1-nightly
``annotator/openpose/util.py``, as copied into DWPose and into controlnet_aux 0.0.10
``controlnet_aux/dwpose/util.py``; the order (body, then hands, then faces, on one canvas) is ``draw_pose`` in
``controlnet_aux/dwpose/__init__.py``. The reference takes coordinates normalised to [0, 1] (absent = -1) and
multiplies them back by W and H; this module draws from pixel coordinates with the same integer and float
arithmetic, so it reproduces the reference pixel for pixel (tests/test_skeleton_openpose_full.py compares the
two on canvases whose W and H are powers of two, where ``x / W * W == x`` exactly). On a black (H, W, 3) uint8
canvas, read as RGB:

1. Body (not the ``openpose`` style's body, which blends each limb): the COCO-17 keypoints become OpenPose-18
   points as in :mod:`pose_data.skeleton.openpose_style` (neck = mean of both shoulders; a point is present
   when its score is at least ``min_score``). For each of the 17 limbs (outer loop) and each person (inner),
   with both ends present, the limb ellipse ``cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), 4),
   int(angle), 0, 360, 1)`` is filled opaque in the limb's full colour; then the whole canvas becomes
   ``(canvas * 0.6).astype(np.uint8)`` (a truncating look-up table here); then the 18 joints (outer loop over
   points, inner over persons) are filled circles of radius 4 at ``(int(x), int(y))`` in full colour.
2. Hands, person by person, the left hand then the right hand (the order of ControlNet 1.1's own annotator;
   DWPose's ``__call__`` stacks every person's left hand before every right hand, which differs only where
   hands of different persons overlap). A hand point is present when its score is at least
   :data:`PART_MIN_SCORE`. Edge ``ie`` of the 20 (wrist to each finger, palm outwards) is a 2 px ``cv2.line``
   when both ends are present and ``int(x1), int(y1), int(x2), int(y2)`` are all >= 1 (the reference's
   ``> eps`` on ints), in colour ``hsv_to_rgb([ie / 20, 1, 1]) * 255`` as OpenCV rounds a float colour: half
   to even (:data:`HAND_EDGE_COLORS`; truncating with ``int()`` is one off on several edges). Then each present
   point with ``int(x) >= 1`` and ``int(y) >= 1`` is a filled circle of radius 4 in (0, 0, 255).
3. Faces: for every person, every face point with score >= :data:`PART_MIN_SCORE` and ``int(x), int(y) >= 1``
   is a filled white circle of radius 3; no lines.

All coordinates are first passed through :func:`~pose_data.pose.keypoints.stored_values` (x, y rounded to 2
decimals, scores to 4, as float64), so a skeleton redrawn from its record or parquet row (float32 columns) is
bit for bit the one drawn from the estimator's output. Non-finite points count as absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pose_data.pose.keypoints import PART_MIN_SCORE, PersonPose, stored_values
from pose_data.skeleton.openpose_style import (
    JOINT_RADIUS,
    OPENPOSE_COLORS,
    OPENPOSE_LIMBS,
    coco17_to_openpose18,
    limb_polygon,
)

#: The 20 hand edges of the reference, as (from, to) indices into the 21 OpenPose hand points.
HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip
#: Edge ``ie``'s colour: ``np.rint(matplotlib.colors.hsv_to_rgb([ie / 20, 1, 1]) * 255)``, the value OpenCV
#: draws for the reference's float colour (it rounds half to even).
HAND_EDGE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0),
    (128, 255, 0), (51, 255, 0), (0, 255, 25), (0, 255, 102), (0, 255, 179),
    (0, 255, 255), (0, 178, 255), (0, 102, 255), (0, 25, 255), (51, 0, 255),
    (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153), (255, 0, 77),
)  # fmt: skip
HAND_POINT_COLOR = (0, 0, 255)
HAND_POINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
FACE_POINT_COLOR = (255, 255, 255)
FACE_POINT_RADIUS = 3
#: ``(v * 0.6).astype(np.uint8)`` for every uint8 ``v``: the reference's dimming of the limbs.
_DIM_LUT = (np.arange(256, dtype=np.float64) * 0.6).astype(np.uint8)


def _part_points(points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A hand or face as stored: (n, 2) truncated int coordinates and which points the reference draws
    (score >= PART_MIN_SCORE, finite, both integer coordinates >= 1); None for a missing part."""
    if points is None:
        return None
    values = np.asarray(stored_values(points), dtype=np.float64).reshape(-1, 3)
    finite = np.isfinite(values[:, :2]).all(axis=1)
    coords = np.trunc(np.where(finite[:, None], values[:, :2], -1.0))
    drawn = finite & (values[:, 2] >= PART_MIN_SCORE) & (coords >= 1).all(axis=1)
    return coords.astype(np.int64), drawn


def _draw_body(canvas: np.ndarray, persons: Sequence[PersonPose], min_score: float) -> np.ndarray:
    people = [coco17_to_openpose18(np.asarray(stored_values(p.keypoints), dtype=np.float64), min_score) for p in persons]
    present = [~np.isnan(points[:, 0]) for points in people]
    for (a, b), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        for points, ok in zip(people, present):
            if ok[a] and ok[b]:
                cv2.fillConvexPoly(canvas, limb_polygon(points[a], points[b]), color)
    canvas = cv2.LUT(canvas, _DIM_LUT)
    for joint, color in enumerate(OPENPOSE_COLORS):
        for points, ok in zip(people, present):
            if ok[joint]:
                x, y = points[joint, :2]
                cv2.circle(canvas, (int(x), int(y)), JOINT_RADIUS, color, thickness=-1)
    return canvas


def _draw_hand(canvas: np.ndarray, coords: np.ndarray, drawn: np.ndarray) -> None:
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if drawn[a] and drawn[b]:
            start = (int(coords[a, 0]), int(coords[a, 1]))
            end = (int(coords[b, 0]), int(coords[b, 1]))
            cv2.line(canvas, start, end, color, thickness=HAND_LINE_THICKNESS)
    for x, y in coords[drawn]:
        cv2.circle(canvas, (int(x), int(y)), HAND_POINT_RADIUS, HAND_POINT_COLOR, thickness=-1)


def render_openpose_full_skeleton(persons: Sequence[PersonPose], width: int, height: int, min_score: float) -> np.ndarray:
    """Draw every person's body, hands and face as ControlNet 1.1's ``openpose_full`` annotator does.

    Keypoints are in pixel coordinates of a ``width`` x ``height`` image; ``min_score`` is the body threshold,
    hands and faces use :data:`PART_MIN_SCORE`; persons without parts get the body only. Returns
    (height, width, 3) uint8 RGB. See the module docstring for the exact drawing.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got width={width}, height={height}")
    canvas = _draw_body(np.zeros((height, width, 3), dtype=np.uint8), persons, min_score)
    for person in persons:
        for hand in (_part_points(person.hand_left), _part_points(person.hand_right)):
            if hand is not None:
                _draw_hand(canvas, *hand)
    for person in persons:
        face = _part_points(person.face)
        if face is not None:
            coords, drawn = face
            for x, y in coords[drawn]:
                cv2.circle(canvas, (int(x), int(y)), FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)
    return canvas
