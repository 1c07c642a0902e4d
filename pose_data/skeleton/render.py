"""One entry point for the skeleton renderers, plus lossless PNG encoding of their output.

Styles:
- ``"openpose"``: ControlNet's OpenPose annotator drawing (:mod:`pose_data.skeleton.openpose_style`).
- ``"openpose_full"``: ControlNet 1.1's OpenPose annotator with hands and face, as DWPose draws it
  (:mod:`pose_data.skeleton.openpose_full_style`).
- ``"mmpose"``: MMPose's own visualiser on black, as the Follow-Your-Pose skeleton videos were made
  (:mod:`pose_data.skeleton.mmpose_style`; imported only when asked for, since it pulls in mmpose).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pose_data.pose.keypoints import PersonPose
from pose_data.skeleton.openpose_full_style import render_openpose_full_skeleton
from pose_data.skeleton.openpose_style import render_openpose_skeleton

SKELETON_STYLES: tuple[str, ...] = ("openpose", "mmpose", "openpose_full")


def render_skeleton(
    style: str, persons: Sequence[PersonPose], width: int, height: int, min_score: float
) -> np.ndarray:
    """Draw ``persons`` (pixel keypoints of a ``width`` x ``height`` image) on black in ``style``.

    Returns (height, width, 3) uint8 RGB. Raises ValueError for a style not in :data:`SKELETON_STYLES`.
    """
    if style == "openpose":
        return render_openpose_skeleton(persons, width, height, min_score)
    if style == "openpose_full":
        return render_openpose_full_skeleton(persons, width, height, min_score)
    if style == "mmpose":
        from pose_data.skeleton.mmpose_style import render_mmpose_skeleton

        return render_mmpose_skeleton(persons, width, height, min_score)
    raise ValueError(f"unknown skeleton style {style!r}; choose one of {', '.join(SKELETON_STYLES)}")


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 RGB image; a PNG reader gets the same RGB back."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR input
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {rgb.shape} as PNG")
    return buffer.tobytes()
