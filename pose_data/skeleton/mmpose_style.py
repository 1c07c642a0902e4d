"""MMPose-style body skeleton on black, drawn by MMPose's own visualiser.

The official Follow-Your-Pose skeleton videos are MMPose 1.x demo output on a black background:
``demo/topdown_demo_with_mmdet.py --radius 3 --thickness 1 --kpt-thr T`` builds a
``PoseLocalVisualizer`` (OpenCV backend) with ``radius``, ``line_width=thickness`` and the demo's
default ``--alpha 0.8``, gives it the COCO dataset meta with ``skeleton_style='mmpose'``, and calls
``add_datasample(..., draw_gt=False, kpt_thr=T)`` on the RGB frame. This module makes exactly those
calls on a black RGB canvas, so the drawing is MMPose's, not a copy of it:

- links: ``cv2.line`` of width ``thickness`` in the COCO meta link colour, only when both end
  points score at least ``kpt_thr`` and both lie strictly inside the image (``0 < int(x) < width``,
  ``0 < int(y) < height``; MMPose skips links touching the border row/column 0);
- keypoints, after all links of that person: filled ``cv2.circle`` of ``radius`` in the COCO meta
  keypoint colour, blended with ``alpha`` (0.8: a point over black reads ``round(0.8 * colour)``).

The COCO meta colours are RGB in the RGB canvas (the demo writes files after an RGB-to-BGR flip):
left limbs green (0, 255, 0), right limbs orange (255, 128, 0), head and torso blue (51, 153, 255).
Keypoint scores play the role of MMPose's ``keypoints_visible`` (its top-down models set
``keypoints_visible = keypoint_scores``).

Building a ``PoseLocalVisualizer`` is slow (it makes matplotlib figures), so one is built per
(radius, thickness, alpha) and reused; it keeps the image being drawn as state, so calls are
serialised with a lock.
"""

from __future__ import annotations

import functools
import pathlib
import threading
from collections.abc import Sequence

import mmpose
import numpy as np
from mmengine.structures import InstanceData
from mmpose.datasets.datasets.utils import parse_pose_metainfo
from mmpose.structures import PoseDataSample
from mmpose.visualization import PoseLocalVisualizer

from pose_data.pose.keypoints import PersonPose

# MMPose's COCO dataset meta, as init_model() sets it for a COCO model. The file inside mmpose's
# package, by absolute path: parse_pose_metainfo would prefer a same-named file under the cwd.
COCO_META_FILE = pathlib.Path(mmpose.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "coco.py"
DEMO_ALPHA = 0.8  # topdown_demo_with_mmdet.py's default --alpha

_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def coco_dataset_meta() -> dict:
    """MMPose's parsed COCO meta: ``keypoint_colors`` (17, 3) and ``skeleton_link_colors`` (19, 3)
    uint8 RGB, ``skeleton_links`` as 19 COCO-17 index pairs, among others."""
    if not COCO_META_FILE.is_file():
        raise FileNotFoundError(f"mmpose's COCO dataset meta is missing: {COCO_META_FILE}")
    return parse_pose_metainfo(dict(from_file=str(COCO_META_FILE)))


@functools.lru_cache(maxsize=8)
def _visualizer(radius: int, thickness: int, alpha: float) -> PoseLocalVisualizer:
    # Built directly (not through get_instance), so it is not registered in mmengine's global table.
    visualizer = PoseLocalVisualizer(
        name=f"pose_data_skeleton_r{radius}_t{thickness}_a{alpha}",
        radius=radius,
        line_width=thickness,
        alpha=alpha,
        backend="opencv",
    )
    visualizer.set_dataset_meta(coco_dataset_meta(), skeleton_style="mmpose")
    return visualizer


def render_mmpose_skeleton(
    persons: Sequence[PersonPose],
    width: int,
    height: int,
    min_score: float,
    radius: int = 3,
    thickness: int = 1,
    alpha: float = DEMO_ALPHA,
) -> np.ndarray:
    """Draw every person's COCO-17 skeleton with MMPose's visualiser on black.

    Keypoints are in pixel coordinates of a ``width`` x ``height`` image; ``min_score`` is MMPose's
    ``kpt_thr`` (points scoring below it, and their links, are not drawn). ``radius``, ``thickness``
    and ``alpha`` are the demo's ``--radius``, ``--thickness`` and ``--alpha``.
    Returns (height, width, 3) uint8 RGB.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got width={width}, height={height}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    if not persons:
        return canvas
    instances = InstanceData()
    keypoints = np.stack([person.keypoints for person in persons])  # (N, 17, 3): x, y, score
    instances.keypoints = keypoints[:, :, :2]  # (N, 17, 2)
    instances.keypoints_visible = keypoints[:, :, 2]  # (N, 17)
    sample = PoseDataSample()
    sample.pred_instances = instances
    visualizer = _visualizer(int(radius), int(thickness), float(alpha))
    with _lock:
        drawn = visualizer.add_datasample(
            "skeleton", canvas, sample, draw_gt=False, draw_pred=True, draw_bbox=False,
            skeleton_style="mmpose", kpt_thr=min_score,
        )  # fmt: skip
        return np.array(drawn, dtype=np.uint8, copy=True)
