"""MediaPipe BlazePose backend: one person per image, no download, CPU only.

``mediapipe.solutions.pose.Pose(model_complexity=1)`` uses ``pose_landmark_full.tflite`` and
``pose_detection.tflite``, both shipped inside the mediapipe 0.10.21 wheel (complexities 0 and 2
would download their models). BlazePose finds at most one person per image.

Mapping to :class:`PersonPose`:

- keypoints: the 33 BlazePose landmarks reduced to COCO-17 by :data:`BLAZEPOSE_TO_COCO17`,
  in pixels (BlazePose gives coordinates normalised by the image width and height).
- keypoint score: the landmark's ``visibility`` (a probability in [0, 1]), set to 0 for a landmark
  that lies outside the image: BlazePose extrapolates hidden body parts beyond the frame (e.g. hips
  below a portrait crop), and COCO never labels a keypoint outside the image. The coordinates
  themselves are kept as predicted.
- bbox: the extent of all 33 landmarks (BlazePose's whole-body estimate, hands and feet included),
  clipped to the image: the part of the person that is in the picture.
- person score: the mean COCO-17 keypoint score, in [0, 1]. The solutions API exposes neither the
  person-detector score nor the landmark model's presence flag; the mean keypoint score is what a
  COCO-style person score measures (how much of a skeleton was reliably found).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from pose_data.pose.estimator import PoseEstimator, PoseModelConfig, check_images
from pose_data.pose.keypoints import PersonPose
from pose_data.quiet import native_stderr_filtered

log = logging.getLogger(__name__)

# BlazePose landmark index of each COCO-17 keypoint (nose, eyes, ears, shoulders, elbows, wrists,
# hips, knees, ankles): BlazePose's 2/5 are the eye centres, 7/8 the ears.
BLAZEPOSE_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


class BlazePoseBody(NamedTuple):
    """One BlazePose skeleton mapped to the :class:`PersonPose` body fields (module docstring), in pixels.

    keypoints: (17, 3) COCO-17 x, y, score; bbox: the 33 landmarks' extent clipped to the image; score: the mean
    COCO-17 keypoint score; landmarks: the 33 landmarks' (x, y) as predicted (possibly outside the image), for a
    backend that widens the box with more points (:mod:`pose_data.pose.mediapipe_holistic_backend`).
    """

    keypoints: np.ndarray
    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray


def inside_image(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n,) bool: which of the (n, 2) pixel points lie in the image (its border included)."""
    return (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)


def clipped_extent(xy: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the extent of the (n, 2) pixel points, clipped to the image."""
    x0, y0 = np.clip(xy.min(axis=0), 0, [width, height])
    x1, y1 = np.clip(xy.max(axis=0), 0, [width, height])
    return float(x0), float(y0), float(x1), float(y1)


def body_from_pose_landmarks(pose_landmarks, width: int, height: int) -> BlazePoseBody | None:
    """BlazePose's 33 ``pose_landmarks`` (a ``NormalizedLandmarkList``, or None when no person was found) of an image
    ``width`` x ``height`` as the body fields of a :class:`PersonPose`; None when there is no person or every landmark
    lies outside the picture. Shared by the BlazePose and the Holistic backends, so both map a body the same way."""
    if pose_landmarks is None:
        return None
    # (33, 3): x, y normalised to [0, 1] by width/height (may fall outside), visibility
    landmarks = np.array([(lm.x, lm.y, lm.visibility) for lm in pose_landmarks.landmark], dtype=np.float64)
    xy = landmarks[:, :2] * np.array([width, height])  # (33, 2) pixels
    inside = inside_image(xy, width, height)
    if not inside.any():  # the whole estimated body lies outside the picture
        return None
    scores = np.where(inside, np.clip(landmarks[:, 2], 0.0, 1.0), 0.0)  # (33,)

    coco = list(BLAZEPOSE_TO_COCO17)
    keypoints = np.concatenate([xy[coco], scores[coco, None]], axis=1)  # (17, 3)
    return BlazePoseBody(keypoints, clipped_extent(xy, width, height), float(keypoints[:, 2].mean()), xy)


def warm_up_photo() -> np.ndarray:
    """The bundled astronaut photo (public domain, a person from the waist up), RGB: the MediaPipe backends' warm-up."""
    from importlib import resources

    from PIL import Image

    with Image.open(resources.files("pose_data") / "sample_data" / "laion" / "astronaut.jpg") as image:
        return np.asarray(image.convert("RGB"))


class MediaPipePoseEstimator(PoseEstimator):
    """BlazePose full (``model_complexity=1``) in static-image mode; images run one by one."""

    name = "mediapipe-blazepose-full"

    def __init__(self, cfg: PoseModelConfig | None = None) -> None:
        import mediapipe as mp

        cfg = cfg or PoseModelConfig(backend="mediapipe")
        if cfg.device != "cpu":
            log.warning("mediapipe backend runs on the CPU; ignoring device=%r", cfg.device)
        # static_image_mode: every image is detected from scratch (no tracking between calls), so
        # the output for an image does not depend on the images processed before it.
        with native_stderr_filtered():  # TF Lite's and MediaPipe's start-up lines (pose_data.quiet)
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=False,
                min_detection_confidence=cfg.mediapipe_min_detection_confidence,
            )
            # MediaPipe starts its detector and its landmark model on their first use, in its own threads, logging as
            # they go: one call on a real photo of a person starts both inside the filter, so later calls run
            # unfiltered (static_image_mode keeps no state from it)
            self._pose.process(warm_up_photo())

    def __call__(self, images: list[np.ndarray]) -> list[list[PersonPose]]:
        check_images(images)
        return [self._estimate_one(image) for image in images]

    def _estimate_one(self, image: np.ndarray) -> list[PersonPose]:
        height, width = image.shape[:2]
        result = self._pose.process(np.ascontiguousarray(image))
        body = body_from_pose_landmarks(result.pose_landmarks, width, height)
        if body is None:
            return []
        return [PersonPose(bbox=body.bbox, score=body.score, keypoints=body.keypoints)]

    def close(self) -> None:
        self._pose.close()
