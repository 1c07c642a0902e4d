"""MMPose whole-body backend: the body backend's RTMDet person boxes, then a COCO-WholeBody (133-point) top-down model.

Everything but the keypoint model and the per-person mapping is :class:`~pose_data.pose.mmpose_backend.
MMPosePoseEstimator`: the same detector aliases and checkpoints, person-box thresholds, NMS and cap, the batching
(images ``batch_size`` at a time through the detector, the boxes of all images of a call ``batch_size`` at a time
through the keypoint model), the checkpoint allow-list and the random-weight construction under a fixed seed.

The keypoint models are built from the config files shipped in mmpose 1.3.2's ``.mim/configs/wholebody_2d_keypoint``;
every one has the COCO-WholeBody layout (``configs/_base_/datasets/coco_wholebody.py``, what ``CocoWholeBodyDataset``
reads: ``keypoints + foot_kpts + face_kpts + lefthand_kpts + righthand_kpts`` of each annotation):

=========  =====================================================  ==========================================
indices    names in the dataset meta                              stored as
=========  =====================================================  ==========================================
0-16       nose ... right_ankle (COCO-17)                         ``keypoints`` (17, 3)
17-22      left_big_toe ... right_heel                            dropped: no field for feet in PersonPose
23-90      face-0 ... face-67 (iBUG-68)                           ``face`` (68, 3)
91-111     left_hand_root, left_thumb1-4, left_forefinger1-4,     ``hand_left`` (21, 3): OpenPose hand order
           left_middle_finger1-4, left_ring_finger1-4,
           left_pinky_finger1-4
112-132    the same for right_                                    ``hand_right`` (21, 3)
=========  =====================================================  ==========================================

"left" is the person's own left, as for COCO's ``left_wrist``: the annotations' ``lefthand_kpts`` and the meta's
flip pairs swap ``left_hand_*`` with ``right_hand_*`` exactly as they swap ``left_wrist`` with ``right_wrist``.
Every point keeps its score (0 outside the image, as in the body backend); a hand or the face is None ("not found")
when none of its points scores at least :data:`~pose_data.pose.keypoints.PART_MIN_SCORE`, else all its points are
stored (renderers draw only the points at or above it). A model whose dataset meta has another layout is refused.

Keypoint model aliases (:data:`WHOLEBODY_POSE_MODELS`), configs and weights as MMPose lists them:

- "rtmpose-m" (default), "rtmpose-l": RTMPose COCO-WholeBody 256x192, ``rtmpose/coco-wholebody/rtmpose_coco-
  wholebody.yml`` ("rtmpose-m" is its entry with alias "wholebody").
- "rtmw-l": RTMW-l 256x192 (Cocktail14 training data), ``rtmpose/cocktail14/rtmw_cocktail14.yml``.
- "dwpose-l": DWPose-l 384x288, the distilled RTMPose-l that DWPose/ControlNet use. MMPose's ``dwpose/`` configs are
  distillation (training) configs: they build a ``DWPoseDistiller`` (teacher + student, the teacher's weights read
  from a local ``work_dirs`` path), not a model to run. MMPose's ``configs/wholebody_2d_keypoint/dwpose/README.md``
  (in the mmpose repository, not in the wheel) lists, for its row "DWPose-l 384x288" (S2 config ``dwpose/ubody/
  s2_dis/dwpose_l-ll_coco-ubody-384x288.py``), the student config ``rtmpose/ubody/rtmpose-l_8xb32-270e_coco-ubody-
  wholebody-384x288.py`` and the released (already transferred to plain RTMPose) weights used here.
"""

from __future__ import annotations

import numpy as np

from pose_data.pose.estimator import PoseModelConfig
from pose_data.pose.keypoints import COCO17_NAMES, NUM_FACE_POINTS, NUM_HAND_POINTS, PART_MIN_SCORE, PersonPose
from pose_data.pose.mmpose_backend import MMPosePoseEstimator, ModelSource

_WHOLEBODY = "configs/wholebody_2d_keypoint"
_RTMPOSE_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1"

# Sources (mmpose 1.3.2 package files; the test checks the .yml ones against these files):
# - "rtmpose-m", "rtmpose-l": .mim/configs/wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose_coco-wholebody.yml
# - "rtmw-l": .mim/configs/wholebody_2d_keypoint/rtmpose/cocktail14/rtmw_cocktail14.yml
# - "dwpose-l": mmpose repository, configs/wholebody_2d_keypoint/dwpose/README.md, row "DWPose-l" 384x288.
WHOLEBODY_POSE_MODELS: dict[str, ModelSource] = {
    "rtmpose-m": ModelSource(
        "mmpose",
        f"{_WHOLEBODY}/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-m_simcc-coco-wholebody_pt-aic-coco_270e-256x192-cd5e845c_20230123.pth",
    ),
    "rtmpose-l": ModelSource(
        "mmpose",
        f"{_WHOLEBODY}/rtmpose/coco-wholebody/rtmpose-l_8xb64-270e_coco-wholebody-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-l_simcc-coco-wholebody_pt-aic-coco_270e-256x192-6f206314_20230124.pth",
    ),
    "dwpose-l": ModelSource(
        "mmpose",
        f"{_WHOLEBODY}/rtmpose/ubody/rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288.py",
        f"{_RTMPOSE_URL}/rtmpose-l_simcc-ucoco_dw-ucoco_270e-384x288-2438fd99_20230728.pth",
    ),
    "rtmw-l": ModelSource(
        "mmpose",
        f"{_WHOLEBODY}/rtmpose/cocktail14/rtmw-l_8xb1024-270e_cocktail14-256x192.py",
        "https://download.openmmlab.com/mmpose/v1/projects/rtmw/rtmw-dw-x-l_simcc-cocktail14_270e-256x192-20231122.pth",
    ),
}

NUM_WHOLEBODY_POINTS = 133
#: Where each PersonPose field comes from in the 133 points (feet, 17-22, are dropped).
BODY_INDICES = np.arange(0, 17)
PART_INDICES: dict[str, np.ndarray] = {
    "face": np.arange(23, 23 + NUM_FACE_POINTS),
    "hand_left": np.arange(91, 91 + NUM_HAND_POINTS),
    "hand_right": np.arange(112, 112 + NUM_HAND_POINTS),
}

_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")


def expected_keypoint_names() -> dict[str, list[str]]:
    """The COCO-WholeBody names :data:`BODY_INDICES` / :data:`PART_INDICES` must point at in a model's dataset meta
    (body in COCO17_NAMES order, face in iBUG-68 order, hands in OpenPose order), for the check at load time."""
    names = {"keypoints": list(COCO17_NAMES), "face": [f"face-{i}" for i in range(NUM_FACE_POINTS)]}
    for side in ("left", "right"):
        fingers = [f"{side}_{finger}{joint}" for finger in _FINGERS for joint in range(1, 5)]
        names[f"hand_{side}"] = [f"{side}_hand_root", *fingers]
    return names


def check_keypoint_layout(dataset_meta: dict, pose_model: str) -> None:
    """ValueError naming ``pose_model`` unless its dataset meta has the 133 COCO-WholeBody points this mapping reads."""
    count = dataset_meta.get("num_keypoints")
    if count != NUM_WHOLEBODY_POINTS:
        raise ValueError(f"pose_model {pose_model!r} predicts {count} keypoints, not the {NUM_WHOLEBODY_POINTS} of "
                         "COCO-WholeBody that --pose-backend mmpose-wholebody needs (body-only models: --pose-backend mmpose)")  # fmt: skip
    id2name, expected = dataset_meta.get("keypoint_id2name"), expected_keypoint_names()
    if not id2name:  # a meta without names (not what MMPose writes): the count is all there is to check
        return
    for field, indices in {"keypoints": BODY_INDICES, **PART_INDICES}.items():
        found = [id2name.get(int(i)) for i in indices]
        if found != expected[field]:
            raise ValueError(f"pose_model {pose_model!r}: keypoints {indices[0]}-{indices[-1]} are {found[:3]}..., not the "
                             f"COCO-WholeBody {field} layout this backend maps")  # fmt: skip


def _part_or_none(points: np.ndarray) -> np.ndarray | None:
    """All the part's points, or None when not one of them scores at least PART_MIN_SCORE."""
    return points.copy() if bool((points[:, 2] >= PART_MIN_SCORE).any()) else None


def _refuse_distiller_config(pose_config: str, pose_model: str) -> None:
    """A DWPose ``dwpose/`` config builds a distiller (teacher + student) that cannot run alone: name the way out."""
    from mmengine.config import Config

    model = Config.fromfile(pose_config).get("model", {})
    if model.get("type") == "DWPoseDistiller":
        raise ValueError(f"pose_model {pose_model!r} is a DWPose distillation (training) config; give its student's "
                         f"config ({model.get('student_cfg')}, under mmpose's .mim folder) or the alias dwpose-l")  # fmt: skip


class MMPoseWholeBodyEstimator(MMPosePoseEstimator):
    """RTMDet person boxes + a COCO-WholeBody keypoint model: body, hands and face per person (module docstring)."""

    backend_name = "mmpose-wholebody"
    pose_models = WHOLEBODY_POSE_MODELS

    @classmethod
    def resolve_models(cls, cfg: PoseModelConfig) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
        det, pose = super().resolve_models(cfg)
        if cfg.pose_model not in cls.pose_models:
            _refuse_distiller_config(pose[0], cfg.pose_model)
        return det, pose

    def __init__(self, cfg: PoseModelConfig) -> None:
        super().__init__(cfg)
        check_keypoint_layout(self.pose_model.dataset_meta, cfg.pose_model)

    @staticmethod
    def person_from_points(points: np.ndarray, box: np.ndarray) -> PersonPose:
        """One person from the 133 COCO-WholeBody (x, y, score) in image pixels and its box (x0, y0, x1, y1, score)."""
        points = np.asarray(points, dtype=np.float32)
        if points.shape != (NUM_WHOLEBODY_POINTS, 3):
            raise ValueError(f"expected ({NUM_WHOLEBODY_POINTS}, 3) whole-body points, got {points.shape}")
        parts = {part: _part_or_none(points[indices]) for part, indices in PART_INDICES.items()}
        return PersonPose(bbox=tuple(box[:4]), score=float(box[4]), keypoints=points[BODY_INDICES], **parts)


def check_model_settings(cfg: PoseModelConfig) -> None:
    """The checks :class:`MMPoseWholeBodyEstimator` makes before loading anything (aliases, config files, local
    checkpoint paths, no distillation config), for a driver that wants them before any work; ValueError naming the
    setting. (The 133-point layout is checked once the model is built.)"""
    MMPoseWholeBodyEstimator.resolve_models(cfg)
