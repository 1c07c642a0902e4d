"""MediaPipe backend on real photos, plus the backend-independent config/factory checks.

Photos: scikit-image's ``astronaut`` (512x512, public domain: NASA portrait of Eileen Collins) and
matplotlib's ``grace_hopper.jpg`` (512 wide x 600 high, public domain: US Navy portrait). The
face boxes and shoulder regions below were measured by hand on the images with a 50 px grid.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from pose_data.pose.backends import build_pose_estimator
from pose_data.pose.estimator import (
    DEFAULT_MIN_KEYPOINT_SCORE,
    PoseEstimator,
    PoseModelConfig,
    check_images,
)
from pose_data.pose.keypoints import COCO17_NAMES, PersonPose

skimage_data = pytest.importorskip("skimage.data")

K = {name: i for i, name in enumerate(COCO17_NAMES)}


def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # (512, 512, 3) uint8 RGB


def grace_hopper() -> np.ndarray:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))  # (600, 512, 3)


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    est = build_pose_estimator(PoseModelConfig(backend="mediapipe"))
    yield est
    est.close()


def inside(point: np.ndarray, box: tuple[float, float, float, float], tol: float = 1e-3) -> bool:
    x0, y0, x1, y1 = box
    return bool(x0 - tol <= point[0] <= x1 + tol and y0 - tol <= point[1] <= y1 + tol)


def check_person(person: PersonPose, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
    scores = person.keypoints[:, 2]
    assert np.all((scores >= 0) & (scores <= 1))
    assert 0.0 <= person.score <= 1.0
    assert person.score == pytest.approx(float(scores.mean()), abs=1e-6)
    x0, y0, x1, y1 = person.bbox
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    # every keypoint with a non-zero score lies in the image (out-of-image ones are zeroed)
    scored = person.keypoints[scores > 0]
    assert np.all((scored[:, 0] >= 0) & (scored[:, 0] <= width) & (scored[:, 1] >= 0) & (scored[:, 1] <= height))
    # the bbox holds every in-image keypoint
    assert all(inside(kp, person.bbox) for kp in scored)


def test_astronaut_face_and_shoulders(estimator):
    image = astronaut()
    [people] = estimator([image])
    assert len(people) == 1
    person = people[0]
    check_person(person, image)
    kp = person.keypoints
    face_box = (175, 60, 275, 170)  # hand-measured: hairline to chin, ear to ear
    for name in ("nose", "left_eye", "right_eye"):
        assert inside(kp[K[name]], face_box), (name, kp[K[name]])
        assert kp[K[name], 2] > DEFAULT_MIN_KEYPOINT_SCORE["mediapipe"]
    # a person facing the camera: their left side is on the image's right
    assert kp[K["left_eye"], 0] > kp[K["nose"], 0] > kp[K["right_eye"], 0]
    assert kp[K["left_shoulder"], 0] > 256 > kp[K["right_shoulder"], 0]
    for name in ("left_shoulder", "right_shoulder"):
        assert 170 < kp[K[name], 1] < 340, (name, kp[K[name]])  # below the chin, above the chest patch
        assert kp[K[name], 2] > 0.9
    # the hips are below the bottom edge of this portrait: extrapolated, so they carry score 0
    assert kp[K["left_hip"], 1] > 512 or kp[K["left_hip"], 2] < 0.5
    # the person box covers face and shoulders
    x0, y0, x1, y1 = person.bbox
    assert x0 < 120 and x1 > 300 and y0 < 110 and y1 > 400


def test_grace_hopper_face_and_shoulders(estimator):
    image = grace_hopper()
    assert image.shape == (600, 512, 3)
    [people] = estimator([image])
    assert len(people) == 1
    person = people[0]
    check_person(person, image)
    kp = person.keypoints
    face_box = (180, 150, 350, 320)  # hand-measured: glasses to chin, inside the cap and hair
    for name in ("nose", "left_eye", "right_eye"):
        assert inside(kp[K[name]], face_box), (name, kp[K[name]])
        assert kp[K[name], 2] > DEFAULT_MIN_KEYPOINT_SCORE["mediapipe"]
    assert kp[K["left_eye"], 0] > kp[K["nose"], 0] > kp[K["right_eye"], 0]
    assert kp[K["left_shoulder"], 0] > 380 and kp[K["right_shoulder"], 0] < 140
    for name in ("left_shoulder", "right_shoulder"):
        assert 350 < kp[K[name], 1] < 500, (name, kp[K[name]])
        assert kp[K[name], 2] > 0.9


def test_mirrored_photo_mirrors_the_keypoints(estimator):
    image = astronaut()
    mirrored = image[:, ::-1]  # a non-contiguous view: the backend must cope
    [[person]] = estimator([mirrored])
    [[original]] = estimator([image])
    kp, orig = person.keypoints, original.keypoints
    # A mirrored frontal portrait is still a frontal portrait, so "left" stays on the image's
    # right; the points themselves move to x -> W - x (left and right swapping roles).
    assert kp[K["left_shoulder"], 0] > 256 > kp[K["right_shoulder"], 0]
    for name, mirror_name in (("nose", "nose"), ("left_shoulder", "right_shoulder"), ("right_shoulder", "left_shoulder")):
        assert abs(kp[K[name], 0] - (512 - orig[K[mirror_name], 0])) < 15, name
        assert abs(kp[K[name], 1] - orig[K[mirror_name], 1]) < 15, name


def test_no_person_gives_empty_list_and_order_is_kept(estimator):
    coffee = skimage_data.coffee()  # (400, 600, 3): a cup of coffee, nobody
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)
    results = estimator([coffee, astronaut(), grey, grace_hopper()])
    assert [len(r) for r in results] == [0, 1, 0, 1]
    assert estimator([]) == []
    # static-image mode: a batch gives what the images give one by one
    [[alone]] = estimator([grace_hopper()])
    np.testing.assert_allclose(results[3][0].keypoints, alone.keypoints, atol=1e-3)


def test_person_record_round_trip(estimator):
    [[person]] = estimator([astronaut()])
    back = PersonPose.from_record(person.to_record())
    np.testing.assert_allclose(back.keypoints, person.keypoints, atol=0.01)


def test_bad_images_raise(estimator):
    with pytest.raises(ValueError, match="uint8"):
        estimator([astronaut().astype(np.float32)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        estimator([astronaut()[..., 0]])
    with pytest.raises(ValueError, match="list"):
        check_images(astronaut())


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="openpose.*mmpose.*mediapipe"):
        build_pose_estimator(PoseModelConfig(backend="openpose"))


def test_config_validation_and_defaults():
    cfg = PoseModelConfig()
    assert (cfg.backend, cfg.det_model, cfg.pose_model, cfg.det_checkpoint) == ("mmpose", "rtmdet-m", "rtmpose-m", "auto")
    assert DEFAULT_MIN_KEYPOINT_SCORE == {"mediapipe": 0.5, "mmpose": 0.3, "mediapipe-holistic": 0.5, "mmpose-wholebody": 0.3}
    with pytest.raises(ValueError, match="batch_size"):
        PoseModelConfig(batch_size=0)
    with pytest.raises(ValueError, match="det_score_threshold"):
        PoseModelConfig(det_score_threshold=1.5)
    with pytest.raises(ValueError, match="max_persons_per_image"):
        PoseModelConfig(max_persons_per_image=0)
