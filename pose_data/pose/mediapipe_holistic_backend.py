"""MediaPipe Holistic backend: body, both hands and face of one person per image, no download, CPU only.

``mediapipe.solutions.holistic.Holistic(model_complexity=1)`` runs BlazePose full (``pose_landmark_full.tflite``),
then the hand models (``hand_recrop.tflite``, ``hand_landmark_full.tflite``) and the face model
(``face_landmark.tflite``) on crops that it places from the pose landmarks; all ship inside the mediapipe 0.10.21
wheel (complexities 0 and 2 would download their pose models). Holistic finds at most one person per image.

Mapping to :class:`PersonPose`:

- body (keypoints, keypoint scores, person score): exactly as the BlazePose backend maps it, by the same code
  (:func:`pose_data.pose.mediapipe_backend.body_from_pose_landmarks`). Holistic's pose landmarks are BlazePose's:
  on the test photos they equal the ``mediapipe`` backend's to the last bit.
- ``hand_left`` / ``hand_right``: Holistic's 21 hand landmarks, in pixels; their order (wrist, then thumb, index,
  middle, ring and little finger from the palm out) is :data:`~pose_data.pose.keypoints.HAND_NAMES`'. None where
  Holistic found no hand.
- ``face``: the 468-point face mesh reduced to iBUG-68 by :data:`~pose_data.pose.face_mesh_68.FACE_MESH_TO_IBUG68`,
  in pixels; None where Holistic found no face.
- part scores: Holistic gives none (its hand and face landmarks carry no visibility or presence: both read 0), so a
  point of a found part scores 1.0, and 0.0 where it lies outside the image, as the body does (COCO-WholeBody labels
  no point outside the image); the coordinates are kept as predicted. A part whose points all lie outside the image
  is not in the picture and is None.
- bbox: the extent of every landmark found (the 33 body landmarks, and of each part kept the hand's 21 or the face
  mesh's 468: so the box holds the forehead, which no body or iBUG point reaches), clipped to the image, as the
  BlazePose backend does with the body alone.

Whose hand is ``left_hand_landmarks``: the person's own left hand. MediaPipe's Hands solution labels handedness as
if the image were a mirrored selfie, so its "Left" is the person's right on an ordinary photo; Holistic instead
places each hand crop from the body's wrist of that side, so its ``left_hand_landmarks`` follows BlazePose's left
wrist (landmark 15, COCO ``left_wrist``). Evidence, on OpenCV's ``messi5.jpg`` (548 x 342, the player faces the
camera, his left arm stretched to the image's right: left shoulder landmark 11 at x 271, right shoulder 12 at x 202):
BlazePose's left wrist (15) lies at (348.6, 166.4), its right wrist (16) at (103.4, 101.9); the wrist of
``left_hand_landmarks`` at (345.2, 164.6) is 3.7 px from landmark 15 and 250 px from 16, that of
``right_hand_landmarks`` at (102.7, 101.3) 1.0 px from 16 and 254 px from 15. On the mirrored photo, where BlazePose
reads the other arm as the left one, ``left_hand_landmarks`` again lies at landmark 15 (2.6 px). So ``hand_left``
takes ``left_hand_landmarks`` unswapped; ``tests/test_pose_holistic.py`` checks it on the photo and its mirror image.

Static-image mode is not stateless for the parts: Holistic keeps the last image's hand and face landmarks and lets
them steer the next image's hand and face crops (``static_image_mode`` only turns off the pose's tracking), so the
same photo can give other hands after another photo of a person (seen on OpenCV's ``basketball2.png``: a hand
found or lost, a wrist 8 px away). Each image is therefore preceded by a small blank one, on which nobody is found,
which empties that memory: every image gives what a freshly built Holistic gives on it (checked to the last bit),
whatever came before it. The blank costs about 25 ms per image on one CPU core.
"""

from __future__ import annotations

import logging

import numpy as np

from pose_data.pose.estimator import PoseEstimator, PoseModelConfig, check_images
from pose_data.pose.face_mesh_68 import FACE_MESH_TO_IBUG68
from pose_data.pose.keypoints import PersonPose
from pose_data.pose.mediapipe_backend import body_from_pose_landmarks, clipped_extent, inside_image, warm_up_photo
from pose_data.quiet import native_stderr_filtered

log = logging.getLogger(__name__)

#: The score of a found hand or face point inside the image (Holistic gives no part scores; module docstring).
FOUND_PART_SCORE = 1.0


def part_points(landmarks, width: int, height: int) -> np.ndarray | None:
    """A hand's or the face mesh's landmarks (a ``NormalizedLandmarkList``, or None) as (n, 2) pixels."""
    if landmarks is None:
        return None
    return np.array([(lm.x, lm.y) for lm in landmarks.landmark], dtype=np.float64) * np.array([width, height])


def scored(xy: np.ndarray | None, width: int, height: int) -> np.ndarray | None:
    """(n, 3) x, y, score of a found part's (n, 2) pixel points: 1.0 inside the image, 0.0 outside; None when the part
    was not found or lies wholly outside the image."""
    if xy is None:
        return None
    inside = inside_image(xy, width, height)
    if not inside.any():
        return None
    return np.concatenate([xy, np.where(inside, FOUND_PART_SCORE, 0.0)[:, None]], axis=1)


class MediaPipeHolisticEstimator(PoseEstimator):
    """MediaPipe Holistic (``model_complexity=1``) in static-image mode; images run one by one."""

    name = "mediapipe-holistic"

    def __init__(self, cfg: PoseModelConfig | None = None) -> None:
        import mediapipe as mp

        cfg = cfg or PoseModelConfig(backend="mediapipe-holistic")
        if cfg.device != "cpu":
            log.warning("mediapipe-holistic backend runs on the CPU; ignoring device=%r", cfg.device)
        self._blank = np.zeros((64, 64, 3), dtype=np.uint8)  # nobody on it: empties Holistic's memory (module doc)
        with native_stderr_filtered():  # TF Lite's and MediaPipe's start-up lines (pose_data.quiet)
            self._holistic = mp.solutions.holistic.Holistic(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=False,
                refine_face_landmarks=False,
                min_detection_confidence=cfg.mediapipe_min_detection_confidence,
            )
            # every model starts on its first use, in MediaPipe's threads, logging as it goes: the astronaut photo
            # (body and face, no hands found) runs the pose, hand and face models inside the filter
            self._holistic.process(warm_up_photo())

    def __call__(self, images: list[np.ndarray]) -> list[list[PersonPose]]:
        check_images(images)
        return [self._estimate_one(image) for image in images]

    def _estimate_one(self, image: np.ndarray) -> list[PersonPose]:
        height, width = image.shape[:2]
        self._holistic.process(self._blank)
        result = self._holistic.process(np.ascontiguousarray(image))
        body = body_from_pose_landmarks(result.pose_landmarks, width, height)
        if body is None:
            return []
        # every landmark of each part as found: a hand's 21, the face mesh's 468 (of which the face keeps 68)
        landmarks = {
            "hand_left": part_points(result.left_hand_landmarks, width, height),  # the person's own left (module doc)
            "hand_right": part_points(result.right_hand_landmarks, width, height),
            "face": part_points(result.face_landmarks, width, height),
        }
        parts = {
            "hand_left": scored(landmarks["hand_left"], width, height),
            "hand_right": scored(landmarks["hand_right"], width, height),
            "face": None if landmarks["face"] is None else scored(landmarks["face"][list(FACE_MESH_TO_IBUG68)], width, height),
        }
        found = [body.landmarks] + [landmarks[name] for name, part in parts.items() if part is not None]
        bbox = clipped_extent(np.concatenate(found), width, height)
        return [PersonPose(bbox=bbox, score=body.score, keypoints=body.keypoints, **parts)]

    def close(self) -> None:
        self._holistic.close()
