"""The ``openpose_full`` renderer against ControlNet 1.1's drawing as shipped in controlnet_aux 0.0.10.

The reference is ``controlnet_aux/dwpose/util.py`` read out of the wheel that ``scripts/setup.sh`` downloads to
``.cache/reference-wheels/`` and loaded by path: the ``controlnet_aux`` package itself is never imported (its
``__init__`` pulls in models) and never installed (the dev extra pins 0.0.1 for the classic ``openpose`` test).
"""

from __future__ import annotations

import importlib.util
import io
import pathlib
import zipfile

import matplotlib.colors
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pose_data.pose.keypoints import PART_FIELDS, PARTS, PersonPose, stored_values
from pose_data.skeleton.openpose_full_style import HAND_EDGE_COLORS, HAND_EDGES, render_openpose_full_skeleton
from pose_data.skeleton.openpose_style import coco17_to_openpose18, render_openpose_skeleton
from pose_data.skeleton.render import render_skeleton

ROOT = pathlib.Path(__file__).resolve().parents[1]
WHEEL = ROOT / ".cache" / "reference-wheels" / "controlnet_aux-0.0.10-py3-none-any.whl"
SAMPLES = ROOT / "pose_data" / "sample_data" / "laion"
# Power-of-two canvases: x / W * W == x exactly, so the reference's int() sees our numbers.
SIZES = ((512, 512), (256, 1024), (1024, 256), (128, 64))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``controlnet_aux/dwpose/util.py`` of controlnet_aux 0.0.10 (draw_bodypose, draw_handpose, draw_facepose)."""
    if not WHEEL.is_file():
        pytest.fail(f"reference wheel {WHEEL.relative_to(ROOT)} is missing: run `bash scripts/setup.sh`")
    path = tmp_path_factory.mktemp("controlnet_aux_0_0_10") / "dwpose_util.py"
    with zipfile.ZipFile(WHEEL) as wheel:
        path.write_bytes(wheel.read("controlnet_aux/dwpose/util.py"))
    spec = importlib.util.spec_from_file_location("controlnet_aux_0_0_10_dwpose_util", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _normalised_part(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """A stored hand or face as the reference gets it: (n, 2) x / W, y / H; -1 where the score is below 0.3."""
    values = np.asarray(stored_values(points), dtype=np.float64)
    out = values[:, :2] / np.array([float(width), float(height)])
    out[values[:, 2] < 0.3] = -1
    return out


def body_arrays(persons: list[PersonPose], width: int, height: int, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """The stored bodies as the reference's (candidate (K, 4), subset (N, 20)): normalised x / W, y / H, -1 absent."""
    candidate, subset = [], []
    for person in persons:
        row = []
        for x, y, score in coco17_to_openpose18(np.asarray(stored_values(person.keypoints)), min_score):
            if np.isnan(x):
                row.append(-1)
            else:
                row.append(len(candidate))
                candidate.append((x / width, y / height, score, len(candidate)))
        subset.append(row + [0.0, 0.0])  # total score, part count: unused by the drawing
    return np.array(candidate, dtype=np.float64).reshape(-1, 4), np.array(subset, dtype=np.float64).reshape(-1, 20)


def draw_reference(util, persons: list[PersonPose], width: int, height: int, min_score: float) -> np.ndarray:
    """dwpose's ``draw_pose``: body, then hands (per person: left, right), then faces, normalised coordinates."""
    candidate, subset = body_arrays(persons, width, height, min_score)
    hands = [_normalised_part(hand, width, height) for p in persons for hand in (p.hand_left, p.hand_right) if hand is not None]
    faces = [_normalised_part(p.face, width, height) for p in persons if p.face is not None]
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas = util.draw_bodypose(canvas, candidate, subset)
    canvas = util.draw_handpose(canvas, hands)
    return util.draw_facepose(canvas, faces)


def assert_same(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8, what
    assert np.array_equal(ours, theirs), f"{what}: {(ours != theirs).any(axis=2).sum()} pixels differ"


# ---------------------------------------------------------------- random persons


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores around the thresholds: exactly 0.3 and 0.2999 often, otherwise uniform in [0, 1]."""
    special = np.array([0.3, 0.2999, 0.30001, 0.0, 1.0])
    return np.where(rng.random(n) < 0.35, rng.choice(special, n), rng.uniform(0.0, 1.0, n))


def _coords(rng: np.random.Generator, n: int, centre: tuple[float, float], spread: float, size: tuple[int, int]) -> np.ndarray:
    """(n, 2) points around ``centre``; about a fifth snapped to values whose int() is 0 or 1 or that lie
    just outside the canvas, on either axis."""
    width, height = size
    points = np.asarray(centre) + rng.normal(0.0, spread, (n, 2))
    for axis, limit in ((0, width), (1, height)):
        edge = np.array([0.0, 0.5, 0.99, 1.0, 1.01, 1.99, -0.5, -1.0, -3.0, limit - 1.0, limit - 0.01, limit, limit + 2.5])
        snap = rng.random(n) < 0.2
        points[snap, axis] = rng.choice(edge, int(snap.sum()))
    return points


def random_persons(rng: np.random.Generator, width: int, height: int) -> list[PersonPose]:
    persons = []
    # Persons share a region of the canvas, so their limbs, hands and faces overlap.
    region = (rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height)
    spread = 0.2 * min(width, height)
    for _ in range(int(rng.integers(1, 5))):
        centre = tuple(np.asarray(region) + rng.normal(0.0, 0.1 * min(width, height), 2))
        keypoints = np.column_stack([_coords(rng, 17, centre, spread, (width, height)), _scores(rng, 17)])
        keypoints[rng.random(17) < 0.15, 2] = 0.0  # some body points absent outright
        parts = {}
        for part, n, part_spread in (("hand_left", 21, 0.08), ("hand_right", 21, 0.08), ("face", 68, 0.06)):
            if rng.random() < 0.75:
                part_centre = tuple(np.asarray(centre) + rng.normal(0.0, spread, 2))
                points = _coords(rng, n, part_centre, part_spread * min(width, height), (width, height))
                parts[part] = np.column_stack([points, _scores(rng, n)])
        persons.append(PersonPose(bbox=(0, 0, width, height), score=1.0, keypoints=keypoints, **parts))
    return persons


@pytest.mark.parametrize("seed", range(6))
def test_random_persons_are_pixel_identical_to_controlnet_1_1(reference, seed):
    rng = np.random.default_rng(seed)
    for trial in range(12):
        width, height = SIZES[(seed + trial) % len(SIZES)]
        persons = random_persons(rng, width, height)
        min_score = float(rng.choice([0.3, 0.2999, rng.uniform(0.0, 0.6)]))
        ours = render_openpose_full_skeleton(persons, width, height, min_score)
        theirs = draw_reference(reference, persons, width, height, min_score)
        assert_same(ours, theirs, f"seed {seed} trial {trial} ({width}x{height}, {len(persons)} persons)")


def test_persons_without_parts_get_controlnet_1_1_body_only(reference):
    rng = np.random.default_rng(99)
    for trial in range(8):
        width, height = SIZES[trial % len(SIZES)]
        persons = [PersonPose(p.bbox, p.score, p.keypoints) for p in random_persons(rng, width, height)]
        assert not any(p.has_parts for p in persons)
        ours = render_openpose_full_skeleton(persons, width, height, 0.3)
        body = reference.draw_bodypose(np.zeros((height, width, 3), np.uint8), *body_arrays(persons, width, height, 0.3))
        assert_same(ours, body, f"trial {trial}")
        assert ours.any()
    assert not render_openpose_full_skeleton([], 64, 32, 0.3).any()
    assert render_openpose_full_skeleton([], 64, 32, 0.3).shape == (32, 64, 3)
    with pytest.raises(ValueError, match="width"):
        render_openpose_full_skeleton([], 0, 32, 0.3)


def test_render_skeleton_dispatches_openpose_full():
    persons = random_persons(np.random.default_rng(5), 256, 256)
    assert np.array_equal(
        render_skeleton("openpose_full", persons, 256, 256, 0.3), render_openpose_full_skeleton(persons, 256, 256, 0.3)
    )


# ---------------------------------------------------------------- a real keypoint set (MediaPipe Holistic)

HOLISTIC_PHOTOS = pathlib.Path(__file__).parent / "data" / "holistic"


@pytest.fixture(scope="module")
def holistic():
    pytest.importorskip("mediapipe")
    from pose_data.pose.backends import build_pose_estimator
    from pose_data.pose.estimator import PoseModelConfig

    with build_pose_estimator(PoseModelConfig(backend="mediapipe-holistic")) as estimator:
        yield estimator


def _holistic_person(holistic, path: pathlib.Path, offset: tuple[float, float]) -> PersonPose:
    """The project's MediaPipe Holistic backend on a real photo, its person shifted by ``offset`` pixels."""
    [[person]] = holistic([np.asarray(Image.open(path).convert("RGB"))])
    shift = np.array([offset[0], offset[1], 0.0], dtype=np.float32)
    parts = {name: None if getattr(person, name) is None else getattr(person, name) + shift for name in ("hand_left", "hand_right", "face")}
    x0, y0, x1, y1 = person.bbox
    return PersonPose((x0 + offset[0], y0 + offset[1], x1 + offset[0], y1 + offset[1]), person.score, person.keypoints + shift, **parts)


def test_mediapipe_holistic_keypoints_are_pixel_identical_to_controlnet_1_1(reference, holistic):
    messi = _holistic_person(holistic, HOLISTIC_PHOTOS / "messi5.jpg", (0.0, 0.0))  # both hands and the face
    astronaut = _holistic_person(holistic, SAMPLES / "astronaut.jpg", (200.0, 100.0))  # overlaps messi
    hopper = _holistic_person(holistic, SAMPLES / "grace_hopper.jpg", (500.0, 250.0))
    assert messi.hand_left is not None and messi.hand_right is not None and messi.face is not None
    assert astronaut.face is not None and hopper.face is not None
    for persons in ([messi], [messi, astronaut, hopper], [hopper, astronaut, messi]):
        for width, height in ((1024, 1024), (2048, 1024)):
            ours = render_openpose_full_skeleton(persons, width, height, 0.3)
            theirs = draw_reference(reference, persons, width, height, 0.3)
            assert_same(ours, theirs, f"{len(persons)} persons on {width}x{height}")
            assert (ours == 255).all(axis=2).sum() > 200  # the face discs were drawn
            assert ((ours == (0, 0, 255)).all(axis=2)).sum() > 100  # and the hands' blue points


# ---------------------------------------------------------------- hand colours


def test_hand_edge_colours_are_opencvs_rounding_of_the_float_colours():
    exact = np.array([matplotlib.colors.hsv_to_rgb([ie / 20, 1.0, 1.0]) * 255 for ie in range(len(HAND_EDGES))])
    assert np.array_equal(np.array(HAND_EDGE_COLORS), np.rint(exact).astype(int))
    truncated = exact.astype(int)
    off = [ie for ie in range(len(HAND_EDGES)) if tuple(truncated[ie]) != HAND_EDGE_COLORS[ie]]
    assert len(off) >= 5 and 1 in off  # edge 1: 76.5000...01 draws as 77, int() gives 76
    # Why it matters: OpenCV rounds a float colour; the reference passes one to cv2.line.
    import cv2

    canvas = np.zeros((8, 8, 3), dtype=np.uint8)
    cv2.line(canvas, (1, 4), (6, 4), exact[1], thickness=2)
    assert tuple(int(v) for v in canvas[4, 3]) == HAND_EDGE_COLORS[1] != tuple(int(v) for v in truncated[1])


def test_hand_and_face_drawing_by_hand():
    """A few pixels checked by hand: edge colour, blue hand points over it, white face discs, edge rules."""
    hand = np.zeros((21, 3), dtype=np.float32)
    hand[:, 2] = 0.9
    hand[0, :2] = (20, 40)
    hand[1, :2] = (60, 40)  # edge 0 (red) from (20, 40) to (60, 40)
    hand[5, :2] = (20, 80)  # edge 4 (0 -> 5), (204, 255, 0)
    hand[9, :2] = (0.99, 100)  # int(x) == 0: neither the point nor edge 8 (0 -> 9)
    hand[13, :2] = (100, 100)
    hand[13, 2] = 0.2999  # below PART_MIN_SCORE
    hand[[2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16, 17, 18, 19, 20], 2] = 0.0
    face = np.zeros((68, 3), dtype=np.float32)
    face[0] = (100, 20, 0.3)  # exactly the threshold: drawn
    face[1] = (100, 60, 0.2999)
    person = PersonPose((0, 0, 1, 1), 1.0, np.zeros((17, 3)), hand_left=hand, face=face)
    image = render_openpose_full_skeleton([person], 128, 128, 0.3)
    assert tuple(image[40, 40]) == HAND_EDGE_COLORS[0] == (255, 0, 0)
    assert tuple(image[60, 20]) == HAND_EDGE_COLORS[4]
    assert tuple(image[40, 20]) == tuple(image[40, 60]) == tuple(image[80, 20]) == (0, 0, 255)
    assert not image[90:, :10].any() and not image[95:105, 95:105].any()
    assert tuple(image[20, 100]) == tuple(image[20, 103]) == (255, 255, 255) and not image[20, 104].any()
    assert not image[55:65, 95:105].any()


# ---------------------------------------------------------------- redrawn from the stored row


def _boundary_persons() -> list[PersonPose]:
    """Coordinates on 2-decimal rounding boundaries: the float32 value and its stored value have different
    int() or limb arithmetic (3.999 -> 4.0, 0.995 -> 1.0, 100.005, 99.995, ...)."""
    rng = np.random.default_rng(7)
    boundary = np.array([100.005, 99.995, 3.999, 0.995, 1.005, 200.125, 63.995, 64.005, 127.999, 12.345])
    persons = []
    for shift in (0.0, 60.0, 120.0):
        keypoints = np.column_stack([rng.choice(boundary, (17, 2)) + shift, np.full(17, 0.30004)])
        parts = {part: np.column_stack([rng.choice(boundary, (n, 2)) + shift, rng.choice([0.29996, 0.30004, 1.0], n)])
                 for part, n in (("hand_left", 21), ("hand_right", 21), ("face", 68))}  # fmt: skip
        persons.append(PersonPose((0, 0, 256, 256), 0.9, keypoints, **parts))
    return persons


def test_redrawn_from_record_and_parquet_row_is_bit_identical():
    persons = _boundary_persons()
    direct = render_openpose_full_skeleton(persons, 256, 256, 0.3)
    assert direct.any()
    from_records = [PersonPose.from_record(p.to_record()) for p in persons]
    assert_same(render_openpose_full_skeleton(from_records, 256, 256, 0.3), direct, "from_record(to_record())")

    records = [p.to_record() for p in persons]
    fields = [pa.field("keypoints", pa.list_(pa.list_(pa.list_(pa.float32())))), *PART_FIELDS]
    row = {"keypoints": [[r["keypoints"] for r in records]], **{part: [[r.get(part) for r in records]] for part in PARTS}}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(row, schema=pa.schema(fields)), buffer)
    stored = pq.read_table(io.BytesIO(buffer.getvalue())).to_pylist()[0]
    redrawn = [
        PersonPose.from_record({"bbox": p.bbox, "score": p.score, **{k: stored[k][i] for k in ("keypoints", *PARTS)}})
        for i, p in enumerate(persons)
    ]
    assert redrawn[0].keypoints.dtype == np.float32 and redrawn[0].hand_left is not None
    assert_same(render_openpose_full_skeleton(redrawn, 256, 256, 0.3), direct, "parquet float32 round trip")
    # The raw float32 values do differ from the stored ones in what int() makes of them.
    raw = persons[0].keypoints[:, :2].astype(np.float64)
    assert (np.trunc(raw) != np.trunc(np.asarray(stored_values(persons[0].keypoints))[:, :2])).any()


# ---------------------------------------------------------------- the other styles ignore the parts


def test_openpose_and_mmpose_styles_ignore_the_parts():
    rng = np.random.default_rng(11)
    persons = random_persons(rng, 512, 512) + random_persons(rng, 512, 512)
    assert any(p.has_parts for p in persons)
    bodies = [PersonPose(p.bbox, p.score, p.keypoints) for p in persons]
    with_parts = render_openpose_skeleton(persons, 512, 512, 0.3)
    assert with_parts.any() and np.array_equal(with_parts, render_openpose_skeleton(bodies, 512, 512, 0.3))
    full = render_openpose_full_skeleton(persons, 512, 512, 0.3)
    assert not np.array_equal(full, render_openpose_full_skeleton(bodies, 512, 512, 0.3))  # the parts count here
    pytest.importorskip("mmpose.visualization", reason="mmpose (with mmcv) is not installed")
    with_parts = render_skeleton("mmpose", persons, 512, 512, 0.3)
    assert with_parts.any() and np.array_equal(with_parts, render_skeleton("mmpose", bodies, 512, 512, 0.3))
