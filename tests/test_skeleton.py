"""Skeleton renderers: hand-checked pixels, the real ControlNet drawing as a reference, PNG round trip."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from pose_data.pose.keypoints import COCO17_NAMES, PersonPose
from pose_data.skeleton.openpose_style import (
    OPENPOSE18_NAMES,
    OPENPOSE_COLORS,
    coco17_to_openpose18,
    render_openpose_skeleton,
)
from pose_data.skeleton.render import SKELETON_STYLES, encode_png, render_skeleton

COCO = {name: index for index, name in enumerate(COCO17_NAMES)}
BLACK = (0, 0, 0)


def person(
    points: dict[str, tuple[float, float]], score: float = 0.9, low: dict[str, float] | None = None
) -> PersonPose:
    """A person with only ``points`` present (score ``score``); every other point scores 0.
    ``low`` gives chosen points another score."""
    keypoints = np.zeros((17, 3), dtype=np.float32)
    for name, (x, y) in points.items():
        keypoints[COCO[name]] = (x, y, score)
    for name, value in (low or {}).items():
        keypoints[COCO[name], 2] = value
    return PersonPose(bbox=(0, 0, 1, 1), score=1.0, keypoints=keypoints)


def pixel(image: np.ndarray, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image[y, x])


def blend(under: tuple[int, ...], over: tuple[int, ...]) -> tuple[int, ...]:
    """The annotator's limb blend of one pixel: 0.4 * what is there + 0.6 * the limb colour, rounded."""
    return tuple(int(np.floor(0.4 * u + 0.6 * o + 0.5)) for u, o in zip(under, over))


# ---------------------------------------------------------------- COCO-17 -> OpenPose-18


def test_coco17_to_openpose18_order_and_neck():
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, 0] = np.arange(17) * 10  # x encodes the COCO index
    keypoints[:, 1] = 100 + np.arange(17)
    keypoints[:, 2] = 0.5
    points = coco17_to_openpose18(keypoints, min_score=0.3)
    assert points.shape == (18, 3)
    for index, name in enumerate(OPENPOSE18_NAMES):
        if name != "neck":
            assert points[index, 0] == COCO[name] * 10, name
            assert points[index, 1] == 100 + COCO[name], name
    neck = points[OPENPOSE18_NAMES.index("neck")]
    np.testing.assert_allclose(neck, [(50 + 60) / 2, (105 + 106) / 2, 0.5])


def test_coco17_to_openpose18_missing_points_and_neck_rule():
    keypoints = np.zeros((17, 3), dtype=np.float32)
    keypoints[:, :2] = 50.0
    keypoints[:, 2] = 0.9
    keypoints[COCO["left_shoulder"], 2] = 0.1  # below min_score
    keypoints[COCO["nose"], 2] = 0.3  # exactly min_score: present
    points = coco17_to_openpose18(keypoints, min_score=0.3)
    left_shoulder = OPENPOSE18_NAMES.index("left_shoulder")
    neck = OPENPOSE18_NAMES.index("neck")
    for index in (left_shoulder, neck):  # missing: (nan, nan, 0)
        assert np.isnan(points[index, :2]).all() and points[index, 2] == 0.0
    assert not np.isnan(points[OPENPOSE18_NAMES.index("nose"), :2]).any()
    assert np.isnan(points[:, 0]).sum() == 2
    # Non-finite coordinates are missing whatever their score.
    keypoints[COCO["nose"], 0] = np.nan
    nose = coco17_to_openpose18(keypoints, 0.3)[OPENPOSE18_NAMES.index("nose")]
    assert np.isnan(nose[:2]).all() and nose[2] == 0.0
    with pytest.raises(ValueError, match=r"\(17, 3\)"):
        coco17_to_openpose18(np.zeros((18, 3)), 0.3)


# ---------------------------------------------------------------- OpenPose renderer, hand-checked pixels

# Right shoulder at (40, 50), left shoulder at (80, 50): neck (60, 50); limb 0 (neck-right shoulder,
# red) spans x 40..60, limb 1 (neck-left shoulder, (255, 85, 0)) spans x 60..80.
SHOULDERS = {"right_shoulder": (40, 50), "left_shoulder": (80, 50)}


def test_openpose_image_size_and_empty_canvas():
    image = render_openpose_skeleton([], width=64, height=48, min_score=0.3)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert not image.any()
    image = render_openpose_skeleton([person(SHOULDERS)], width=120, height=90, min_score=0.3)
    assert image.shape == (90, 120, 3)
    with pytest.raises(ValueError, match="width"):
        render_openpose_skeleton([], width=0, height=10, min_score=0.3)


def test_openpose_limb_colour_is_table_colour_times_0_6_in_rgb():
    image = render_openpose_skeleton([person(SHOULDERS)], width=120, height=100, min_score=0.3)
    assert pixel(image, 50, 50) == (153, 0, 0)  # limb 0 midpoint: 0.6 * (255, 0, 0), red in channel 0
    assert pixel(image, 70, 50) == (153, 51, 0)  # limb 1 midpoint: 0.6 * (255, 85, 0)
    assert pixel(image, 50, 53) == (153, 0, 0)  # inside the stick (half width 4)
    assert pixel(image, 50, 56) == BLACK  # outside it
    # Black far from the skeleton, and nothing drawn outside the skeleton's neighbourhood.
    assert pixel(image, 5, 5) == BLACK and pixel(image, 110, 90) == BLACK
    ys, xs = np.nonzero(image.any(axis=2))
    assert xs.min() >= 40 - 4 and xs.max() <= 80 + 4 and ys.min() >= 50 - 4 and ys.max() <= 50 + 4


def test_openpose_joints_drawn_first_then_limbs_blended_over_them():
    image = render_openpose_skeleton([person(SHOULDERS)], width=120, height=100, min_score=0.3)
    right_shoulder = OPENPOSE_COLORS[OPENPOSE18_NAMES.index("right_shoulder")]  # (255, 170, 0)
    neck = OPENPOSE_COLORS[OPENPOSE18_NAMES.index("neck")]  # (255, 85, 0)
    assert right_shoulder == (255, 170, 0) and neck == (255, 85, 0)
    # Joint circle (radius 4) outside the stick keeps its exact colour.
    assert pixel(image, 40, 46) == right_shoulder
    assert pixel(image, 40, 45) == BLACK
    # Joint centre under limb 0: 0.4 * joint + 0.6 * limb.
    assert pixel(image, 40, 50) == blend(right_shoulder, (255, 0, 0)) == (255, 68, 0)
    # The neck lies under both limbs: limb 0 then limb 1 are blended over it.
    assert pixel(image, 60, 50) == blend(blend(neck, (255, 0, 0)), (255, 85, 0)) == (255, 65, 0)


def test_openpose_isolated_joint_keeps_exact_colour_at_centre():
    image = render_openpose_skeleton([person({"right_hip": (30, 70)})], width=64, height=96, min_score=0.3)
    colour = OPENPOSE_COLORS[OPENPOSE18_NAMES.index("right_hip")]
    assert colour == (0, 255, 170)
    assert pixel(image, 30, 70) == colour
    ys, xs = np.nonzero(image.any(axis=2))
    assert ((xs - 30) ** 2 + (ys - 70) ** 2 <= 16).all()  # only the radius-4 disc
    assert len(xs) >= 45  # a filled disc, not a ring


def test_openpose_missing_points_draw_nothing():
    hidden = person(SHOULDERS, score=0.2)
    assert not render_openpose_skeleton([hidden], 120, 100, min_score=0.3).any()
    # Right shoulder below threshold: no neck, no limbs, only the left shoulder's disc.
    image = render_openpose_skeleton([person(SHOULDERS, low={"right_shoulder": 0.1})], 120, 100, min_score=0.3)
    ys, xs = np.nonzero(image.any(axis=2))
    assert ((xs - 80) ** 2 + (ys - 50) ** 2 <= 16).all()
    assert pixel(image, 80, 50) == OPENPOSE_COLORS[OPENPOSE18_NAMES.index("left_shoulder")]


def test_openpose_neck_synthesised_only_with_both_shoulders():
    points = {**SHOULDERS, "nose": (60, 10)}  # nose-neck limb 12, (0, 0, 255), midpoint (60, 30)
    both = render_openpose_skeleton([person(points)], 120, 100, min_score=0.3)
    assert pixel(both, 60, 30) == (0, 0, 153)
    one = render_openpose_skeleton([person(points, low={"left_shoulder": 0.0})], 120, 100, min_score=0.3)
    assert pixel(one, 60, 30) == BLACK and pixel(one, 60, 50) == BLACK


def test_openpose_all_people_are_drawn():
    left = person({"right_hip": (20, 20)})
    right = person({"right_hip": (100, 70)})
    image = render_openpose_skeleton([left, right], 128, 96, min_score=0.3)
    assert pixel(image, 20, 20) == pixel(image, 100, 70) == (0, 255, 170)


# ---------------------------------------------------------------- OpenPose renderer vs the real annotator


def _classic_controlnet_util():
    """``open_pose/util.py`` of controlnet_aux 0.0.1, whose ``draw_bodypose(canvas, candidate, subset)``
    is ControlNet v1.0's (pixel coordinates, joints then 0.6-blended limbs). Loaded by path so that
    the package's ``__init__`` (models, downloads) never runs. Later controlnet_aux releases draw
    differently and are not a reference for the classic annotator."""
    spec = importlib.util.find_spec("controlnet_aux")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("controlnet_aux==0.0.1 (dev dependency) is not installed")
    version = importlib.metadata.version("controlnet_aux")
    if version != "0.0.1":
        pytest.skip(f"controlnet_aux {version} is installed; the classic draw_bodypose is in 0.0.1")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "open_pose" / "util.py"
    module_spec = importlib.util.spec_from_file_location("controlnet_aux_0_0_1_open_pose_util", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _candidate_subset(people: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """OpenPose-18 points per person -> the estimator's (candidate (K, 4), subset (N, 20)) arrays."""
    candidate, subset = [], []
    for points in people:
        row = []
        for x, y, score in points:
            if np.isnan(x):
                row.append(-1)
            else:
                row.append(len(candidate))
                candidate.append((x, y, score, len(candidate)))
        subset.append(row + [0.0, 0.0])  # total score, part count: unused by the drawing
    return np.array(candidate, dtype=np.float64).reshape(-1, 4), np.array(subset, dtype=np.float64).reshape(-1, 20)


def test_openpose_is_pixel_identical_to_controlnet_draw_bodypose():
    reference = _classic_controlnet_util()
    rng = np.random.default_rng(1234)
    for trial in range(150):
        width, height = int(rng.integers(16, 320)), int(rng.integers(16, 320))
        persons = []
        for _ in range(int(rng.integers(0, 4))):
            keypoints = np.empty((17, 3), dtype=np.float32)
            keypoints[:, 0] = rng.uniform(-0.2 * width, 1.2 * width, 17)  # some points off the canvas
            keypoints[:, 1] = rng.uniform(-0.2 * height, 1.2 * height, 17)
            keypoints[:, 2] = rng.uniform(0.0, 1.0, 17)
            persons.append(PersonPose(bbox=(0, 0, width, height), score=1.0, keypoints=keypoints))
        min_score = float(rng.uniform(0.0, 0.5))
        ours = render_openpose_skeleton(persons, width, height, min_score)
        candidate, subset = _candidate_subset([coco17_to_openpose18(p.keypoints, min_score) for p in persons])
        theirs = reference.draw_bodypose(np.zeros((height, width, 3), dtype=np.uint8), candidate, subset)
        assert np.array_equal(ours, theirs), f"trial {trial}: {(ours != theirs).any(axis=2).sum()} pixels differ"


# ---------------------------------------------------------------- MMPose renderer


@pytest.fixture(scope="module")
def mmpose_skeleton():
    pytest.importorskip("mmpose.visualization", reason="mmpose (with mmcv) is not installed")
    from pose_data.skeleton import mmpose_style as skeleton_mmpose

    return skeleton_mmpose


GREEN, ORANGE, BLUE = (0, 255, 0), (255, 128, 0), (51, 153, 255)
# A side-on arm pair and the shoulder line, far enough apart that discs (radius 3) do not touch midpoints.
ARMS = {"left_shoulder": (40, 40), "left_elbow": (40, 100), "right_shoulder": (100, 40), "right_elbow": (100, 100)}


def test_mmpose_meta_colours_are_the_coco_ones(mmpose_skeleton):
    meta = mmpose_skeleton.coco_dataset_meta()
    colours = meta["keypoint_colors"]
    assert tuple(colours[COCO["left_elbow"]]) == GREEN
    assert tuple(colours[COCO["right_elbow"]]) == ORANGE
    assert tuple(colours[COCO["nose"]]) == BLUE
    links = [tuple(link) for link in meta["skeleton_links"]]
    assert len(links) == 19
    assert tuple(meta["skeleton_link_colors"][links.index((COCO["left_shoulder"], COCO["left_elbow"]))]) == GREEN


def test_mmpose_link_midpoints_and_keypoints(mmpose_skeleton):
    image = mmpose_skeleton.render_mmpose_skeleton([person(ARMS)], width=140, height=130, min_score=0.3)
    assert image.shape == (130, 140, 3) and image.dtype == np.uint8
    assert pixel(image, 40, 70) == GREEN  # left shoulder - left elbow link, opaque cv2.line
    assert pixel(image, 100, 70) == ORANGE  # right arm
    assert pixel(image, 70, 40) == BLUE  # shoulder line
    assert pixel(image, 41, 70) == BLACK  # thickness 1
    # Keypoints, after the links: filled discs blended with the demo's alpha 0.8 (over black off the
    # link; at the centre over the link's own colour, which the blend leaves unchanged).
    assert pixel(image, 42, 100) == (0, 204, 0)
    assert pixel(image, 102, 100) == (204, 102, 0)
    assert pixel(image, 40, 100) == GREEN and pixel(image, 100, 100) == ORANGE
    assert pixel(image, 43, 100) == (0, 204, 0) and pixel(image, 44, 100) == BLACK  # radius 3
    assert pixel(image, 5, 5) == BLACK and pixel(image, 130, 125) == BLACK
    opaque = mmpose_skeleton.render_mmpose_skeleton([person(ARMS)], 140, 130, 0.3, alpha=1.0)
    assert pixel(opaque, 42, 100) == GREEN and pixel(opaque, 102, 100) == ORANGE


def test_mmpose_radius_and_thickness(mmpose_skeleton):
    image = mmpose_skeleton.render_mmpose_skeleton([person(ARMS)], 140, 130, 0.3, radius=6, thickness=3)
    assert pixel(image, 46, 100) == (0, 204, 0) and pixel(image, 47, 100) == BLACK
    assert pixel(image, 41, 70) == GREEN and pixel(image, 43, 70) == BLACK


def test_mmpose_below_threshold_points_and_links_are_not_drawn(mmpose_skeleton):
    image = mmpose_skeleton.render_mmpose_skeleton(
        [person(ARMS, low={"left_elbow": 0.2})], width=140, height=130, min_score=0.3
    )
    assert pixel(image, 40, 70) == BLACK and pixel(image, 40, 100) == BLACK
    assert pixel(image, 100, 70) == ORANGE  # the rest is still drawn
    assert not mmpose_skeleton.render_mmpose_skeleton([person(ARMS, score=0.1)], 140, 130, 0.3).any()
    assert not mmpose_skeleton.render_mmpose_skeleton([], 140, 130, 0.3).any()


def test_mmpose_skips_links_touching_the_image_border(mmpose_skeleton):
    # MMPose's own rule: a link is drawn only if both ends are strictly inside (0 < x < w, 0 < y < h).
    image = mmpose_skeleton.render_mmpose_skeleton(
        [person({"left_shoulder": (0, 40), "left_elbow": (0, 100)})], 140, 130, 0.3
    )
    assert pixel(image, 0, 70) == BLACK and pixel(image, 0, 40) == (0, 204, 0)


# ---------------------------------------------------------------- dispatcher and PNG


def test_render_skeleton_dispatches_and_rejects_unknown_styles():
    assert SKELETON_STYLES == ("openpose", "mmpose", "openpose_full")
    persons = [person(SHOULDERS)]
    assert np.array_equal(
        render_skeleton("openpose", persons, 120, 100, 0.3), render_openpose_skeleton(persons, 120, 100, 0.3)
    )
    with pytest.raises(ValueError, match="openpose, mmpose, openpose_full"):
        render_skeleton("dwpose", persons, 120, 100, 0.3)


def test_render_skeleton_mmpose(mmpose_skeleton):
    persons = [person(ARMS)]
    image = render_skeleton("mmpose", persons, 140, 130, 0.3)
    assert np.array_equal(image, mmpose_skeleton.render_mmpose_skeleton(persons, 140, 130, 0.3))
    assert pixel(image, 40, 70) == GREEN


def test_encode_png_round_trip_keeps_rgb_order():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    data = encode_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "RGB"
        assert np.array_equal(np.asarray(decoded), rgb)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(bgr[:, :, ::-1], rgb) and tuple(bgr[0, 0]) == (0, 0, 255)
    skeleton = render_openpose_skeleton([person(SHOULDERS)], 120, 100, 0.3)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(skeleton)))), skeleton)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_png(rgb[:, :, 0])
