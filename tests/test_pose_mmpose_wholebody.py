"""MMPose whole-body backend, run for real from MMPose's own COCO-WholeBody configs with random weights.

What random weights can show: the alias table against the installed package files, that every alias builds a
133-point model whose dataset meta puts body, face and hands where the mapping reads them, the mapping itself on a
known prediction (with the PART_MIN_SCORE boundary), the mapping on the real model's output for a photo (against
MMPose's own one-image API), the batching (real ``test_step`` calls counted), the settings checks and the one-line
load failure, and the backend inside the LAION-Pose Ray actor pool.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

pytest.importorskip("mmcv.ops", reason="mmcv with compiled ops is required by mmdet/mmpose")
pytest.importorskip("mmpose.apis")

from test_pose_mmpose import random_images  # noqa: E402

from conftest import REPO, Route  # noqa: E402
from pose_data.pose.backends import build_pose_estimator, check_model_settings, load_pose_estimator  # noqa: E402
from pose_data.pose.estimator import PoseModelConfig, PoseModelLoadError  # noqa: E402
from pose_data.pose.keypoints import COCO17_NAMES, PART_MIN_SCORE, PARTS, PersonPose  # noqa: E402
from pose_data.pose.mmpose_backend import POSE_MODELS  # noqa: E402
from pose_data.pose.mmpose_wholebody_backend import (  # noqa: E402
    BODY_INDICES,
    PART_INDICES,
    WHOLEBODY_POSE_MODELS,
    MMPoseWholeBodyEstimator,
)

BATCH = 2
SAMPLES = REPO / "pose_data" / "sample_data" / "laion"
PART_SIZES = {"face": 68, "hand_left": 21, "hand_right": 21}


def wholebody_config(**overrides) -> PoseModelConfig:
    settings = dict(backend="mmpose-wholebody", det_checkpoint=None, pose_checkpoint=None, batch_size=BATCH,
                    det_score_threshold=0.0, max_persons_per_image=2)  # fmt: skip
    return PoseModelConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def estimator() -> MMPoseWholeBodyEstimator:
    est = build_pose_estimator(wholebody_config())  # RTMDet-m (person only) + RTMPose-m COCO-WholeBody
    assert isinstance(est, MMPoseWholeBodyEstimator) and est.name == "mmpose-wholebody:rtmdet-m+rtmpose-m"
    return est


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / "astronaut.jpg").convert("RGB"))


class CallCounter:
    """Wraps a model's real bound ``test_step`` and records the batch size of every call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.original = model.test_step
        self.batch_sizes: list[int] = []
        model.test_step = self

    def __call__(self, data: dict):
        self.batch_sizes.append(len(data["inputs"]))
        return self.original(data)


@pytest.fixture()
def counters(estimator):
    det, pose = CallCounter(estimator.detector), CallCounter(estimator.pose_model)
    yield det, pose
    del estimator.detector.test_step, estimator.pose_model.test_step


def layout_from_meta(meta: dict) -> dict[str, list[int]]:
    """Where the body, face and hands are in a model's 133 points, read from its dataset meta's keypoint names."""
    id2name = meta["keypoint_id2name"]
    ids = sorted(id2name)

    def named(pattern: str) -> list[int]:
        return [i for i in ids if re.fullmatch(pattern, id2name[i])]

    face = sorted(named(r"face-\d+"), key=lambda i: int(id2name[i].split("-")[1]))
    return {
        "keypoints": [meta["keypoint_name2id"][name] for name in COCO17_NAMES],
        "face": face,
        "hand_left": named(r"left_(hand_root|thumb\d|\w*finger\d)"),
        "hand_right": named(r"right_(hand_root|thumb\d|\w*finger\d)"),
    }


def mapping_used() -> dict[str, list[int]]:
    return {"keypoints": BODY_INDICES.tolist(), **{part: idx.tolist() for part, idx in PART_INDICES.items()}}


def same_person(a: PersonPose, b: PersonPose) -> None:
    assert a.bbox == pytest.approx(b.bbox) and a.score == pytest.approx(b.score)
    np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=1e-4, atol=1e-2)
    for part in PARTS:
        pa, pb = getattr(a, part), getattr(b, part)
        assert (pa is None) == (pb is None), part
        if pa is not None:
            np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-2)


# ---------------------------------------------------------------------------------------------
# aliases and the 133-point layout


def test_aliases_match_the_installed_package_files():
    from mmengine.config import Config

    checked = set()
    for yml, aliases in (("rtmpose/coco-wholebody/rtmpose_coco-wholebody.yml", ("rtmpose-m", "rtmpose-l")),
                         ("rtmpose/cocktail14/rtmw_cocktail14.yml", ("rtmw-l",))):  # fmt: skip
        meta = WHOLEBODY_POSE_MODELS["rtmpose-m"].config_path().parents[2] / yml
        entries = {m["Config"]: m for m in yaml.safe_load(meta.read_text())["Models"]}
        for alias in aliases:
            source = WHOLEBODY_POSE_MODELS[alias]
            assert entries[source.config]["Weights"] == source.weights, alias
            assert entries[source.config]["Metadata"]["Training Data"] == "COCO-WholeBody", alias
            checked.add(alias)
        if "rtmpose-m" in aliases:  # MMPose's own "wholebody" model is our default
            assert entries[WHOLEBODY_POSE_MODELS["rtmpose-m"].config]["Alias"] == "wholebody"
    # DWPose-l: its distillation config under dwpose/ names our config as the student it trains
    dwpose = WHOLEBODY_POSE_MODELS["dwpose-l"]
    s2 = dwpose.config_path().parents[2] / "dwpose/ubody/s2_dis/dwpose_l-ll_coco-ubody-384x288.py"
    assert Config.fromfile(s2.resolve()).model.student_cfg == dwpose.config
    assert dwpose.weights.startswith("https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/rtmpose-l_simcc-ucoco_dw")
    assert checked | {"dwpose-l"} == set(WHOLEBODY_POSE_MODELS)
    assert all(source.config_path().is_file() for source in WHOLEBODY_POSE_MODELS.values())
    assert "rtmpose-m" in WHOLEBODY_POSE_MODELS and PoseModelConfig().pose_model == "rtmpose-m"  # the default exists


@pytest.mark.parametrize("alias", list(WHOLEBODY_POSE_MODELS))
def test_every_alias_builds_a_133_point_model_laid_out_as_mapped(alias):
    est = MMPoseWholeBodyEstimator(wholebody_config(det_model="rtmdet-tiny", pose_model=alias))
    meta = est.pose_model.dataset_meta
    assert meta["num_keypoints"] == 133 and len(meta["keypoint_id2name"]) == 133
    layout = layout_from_meta(meta)
    assert [len(layout[k]) for k in ("keypoints", "face", "hand_left", "hand_right")] == [17, 68, 21, 21]
    assert layout == mapping_used()
    # the feet are the only points left out
    assert sorted(set(range(133)) - {i for idx in layout.values() for i in idx}) == list(range(17, 23))
    # hands in OpenPose order (wrist, then thumb, fore, middle, ring, pinky from the palm out); "left" is the person's
    # left as for left_wrist: horizontal flips swap the hands exactly as they swap the wrists
    names = meta["keypoint_id2name"]
    assert [names[i] for i in layout["hand_left"][:6]] == ["left_hand_root", "left_thumb1", "left_thumb2", "left_thumb3",
                                                          "left_thumb4", "left_forefinger1"]  # fmt: skip
    assert names[layout["hand_right"][-1]] == "right_pinky_finger4"
    flip = dict(meta["flip_pairs"]) | {b: a for a, b in meta["flip_pairs"]}
    assert flip[meta["keypoint_name2id"]["left_wrist"]] == meta["keypoint_name2id"]["right_wrist"]
    assert [flip[i] for i in layout["hand_left"]] == layout["hand_right"]
    input_size = est.pose_model.cfg.codec["input_size"]
    assert input_size == ((288, 384) if alias == "dwpose-l" else (192, 256))


# ---------------------------------------------------------------------------------------------
# the per-person mapping


def known_prediction(scores: dict[str, float]) -> np.ndarray:
    """Point i at (i, 1000 + i); every body point scores 0.9, the feet 5.0; in each part, its first point scores
    ``scores[part]`` and the rest 0.1."""
    points = np.stack([np.arange(133), 1000 + np.arange(133), np.full(133, 5.0)], axis=1).astype(np.float32)
    points[BODY_INDICES, 2] = 0.9
    for part, idx in PART_INDICES.items():
        points[idx, 2] = 0.1
        points[idx[0], 2] = scores[part]
    return points


def test_mapping_puts_every_point_in_its_part_and_applies_the_part_min_score_boundary():
    assert PART_MIN_SCORE == 0.3
    layout = layout_from_meta(MMPoseWholeBodyEstimator(wholebody_config(det_model="rtmdet-tiny")).pose_model.dataset_meta)
    box = np.array([1, 2, 30, 40, 0.75], np.float32)

    person = MMPoseWholeBodyEstimator.person_from_points(known_prediction(
        {"face": 0.3, "hand_left": 0.2999, "hand_right": 1.0}), box)  # fmt: skip
    assert person.bbox == pytest.approx((1, 2, 30, 40)) and person.score == pytest.approx(0.75)
    assert person.keypoints[:, 0].tolist() == layout["keypoints"]
    assert np.all(person.keypoints[:, 1] == 1000 + person.keypoints[:, 0])
    assert np.all(person.keypoints[:, 2] == np.float32(0.9))
    assert person.hand_left is None  # best point 0.2999 < PART_MIN_SCORE: not found
    for part in ("face", "hand_right"):  # 0.3 exactly, and 1.0: found, every point kept with its score
        value = getattr(person, part)
        assert value.shape == (PART_SIZES[part], 3) and value[:, 0].tolist() == layout[part]
        assert np.all(value[:, 1] == 1000 + value[:, 0]) and np.all(value[1:, 2] == np.float32(0.1))
    assert person.face[0, 2] == np.float32(0.3) and person.hand_right[0, 2] == 1.0

    person = MMPoseWholeBodyEstimator.person_from_points(known_prediction(
        {"face": 0.2999, "hand_left": 0.3, "hand_right": 0.0}), box)  # fmt: skip
    assert person.face is None and person.hand_right is None
    assert person.hand_left[:, 0].tolist() == layout["hand_left"] and person.hand_left[0, 2] == np.float32(0.3)
    stored = {int(x) for p in (person.keypoints, person.hand_left) for x in p[:, 0]}
    assert not stored & set(range(17, 23))  # the feet went nowhere
    with pytest.raises(ValueError, match=r"\(133, 3\) whole-body points"):
        MMPoseWholeBodyEstimator.person_from_points(known_prediction({p: 1.0 for p in PARTS})[:17], box)


def test_astronaut_photo_gives_body_hands_and_face_as_mmpose_predicts_them(estimator, astronaut):
    from mmpose.apis import inference_topdown

    [people] = estimator([astronaut])
    assert 1 <= len(people) <= 2  # random detector: boxes anywhere, capped by max_persons_per_image
    height, width = astronaut.shape[:2]
    layout = layout_from_meta(estimator.pose_model.dataset_meta)
    boxes = np.array([p.bbox for p in people], np.float32)
    samples = inference_topdown(estimator.pose_model, astronaut[..., ::-1].copy(), boxes)  # MMPose's one-image API
    for person, sample in zip(people, samples):
        assert person.keypoints.shape == (17, 3) and np.all(np.isfinite(person.keypoints))
        xy, scores = sample.pred_instances.keypoints[0], sample.pred_instances.keypoint_scores[0]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
        raw = np.concatenate([xy, np.where(inside, scores, 0)[:, None]], axis=1)  # (133, 3)
        np.testing.assert_allclose(person.keypoints, raw[layout["keypoints"]], rtol=1e-4, atol=1e-2)
        for part in PARTS:
            value = getattr(person, part)
            expected = raw[layout[part]]
            assert (value is None) == (expected[:, 2].max() < PART_MIN_SCORE), part
            if value is not None:
                assert value.shape == (PART_SIZES[part], 3) and value.dtype == np.float32 and np.all(np.isfinite(value))
                np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-2)
    assert any(p.has_parts for p in people)  # random SimCC scores are large: the found-part path ran
    record = people[0].to_record()
    assert PersonPose.from_record(record).to_record() == record


# ---------------------------------------------------------------------------------------------
# batching


def test_call_batches_the_detector_and_the_keypoint_model(estimator, counters):
    det, pose = counters
    images = random_images([(120, 160), (200, 96), (80, 80)])
    results = estimator(images)
    assert det.batch_sizes == [2, 1]  # BATCH images per detector forward pass
    total = sum(len(people) for people in results)
    assert total >= 2 and all(len(people) <= 2 for people in results)
    assert pose.batch_sizes == [BATCH] * (total // BATCH) + [total % BATCH] * (total % BATCH > 0)  # boxes of all images
    assert len(pose.batch_sizes) == math.ceil(total / BATCH)

    det.batch_sizes.clear()
    [alone] = estimator(images[:1])  # image 0 shared its detector batch with image 1
    assert det.batch_sizes == [1] and len(alone) == len(results[0])
    for a, b in zip(alone, results[0]):
        same_person(a, b)


def test_keypoints_for_given_boxes_batched_equals_one_by_one(estimator, counters, astronaut):
    det, pose = counters
    images = [astronaut, *random_images([(90, 70)], seed=2), astronaut[:300, :200].copy()]
    boxes = [np.array([[150, 20, 400, 500, 0.8]], np.float32), np.zeros((0, 4), np.float32),
             np.array([[10, 10, 190, 290], [0, 0, 200, 300]], np.float32)]  # fmt: skip
    batched = estimator.estimate_keypoints(images, boxes)
    assert det.batch_sizes == [] and pose.batch_sizes == [2, 1]  # image 0's box and image 2's first in one batch
    assert [len(people) for people in batched] == [1, 0, 2] and [p.score for p in batched[2]] == [1.0, 1.0]
    for i, image in enumerate(images):
        for j, box in enumerate(boxes[i]):
            [[alone]] = estimator.estimate_keypoints([image], [box[None]])
            same_person(alone, batched[i][j])


# ---------------------------------------------------------------------------------------------
# settings and load failures


def test_check_model_settings(tmp_path, caplog):
    check_model_settings(wholebody_config())  # aliases, random weights: fine (and logged)
    assert "RANDOM weights" in caplog.text
    check_model_settings(wholebody_config(pose_model="dwpose-l", pose_checkpoint="auto"))
    with pytest.raises(ValueError, match=r"Unknown pose model 'rtmpose-x'.*rtmpose-m, rtmpose-l, dwpose-l, rtmw-l"):
        check_model_settings(wholebody_config(pose_model="rtmpose-x"))
    with pytest.raises(ValueError, match=r"Unknown det model 'yolo'"):
        check_model_settings(wholebody_config(det_model="yolo"))
    missing = tmp_path / "missing.pth"
    with pytest.raises(ValueError, match=rf"pose_checkpoint '{re.escape(str(missing))}' does not exist"):
        check_model_settings(wholebody_config(pose_checkpoint=str(missing)))
    with pytest.raises(ValueError, match=r"det_checkpoint .* does not exist"):
        check_model_settings(wholebody_config(det_checkpoint=str(missing)))
    config = str(WHOLEBODY_POSE_MODELS["rtmw-l"].config_path())
    with pytest.raises(ValueError, match="pose_checkpoint='auto' only works with an alias"):
        check_model_settings(wholebody_config(pose_model=config, pose_checkpoint="auto"))
    check_model_settings(wholebody_config(pose_model=config))  # a config path with random weights is fine
    wholebody_configs = WHOLEBODY_POSE_MODELS["rtmpose-m"].config_path().parents[2]
    distiller = wholebody_configs / "dwpose/coco-wholebody/s2_dis/dwpose_m-mm_coco-256x192.py"
    with pytest.raises(ValueError, match=r"DWPose distillation \(training\) config.*rtmpose-m_8xb64-270e_coco-wholebody-256x192"):
        check_model_settings(wholebody_config(pose_model=str(distiller.resolve())))


def test_a_body_only_model_is_refused_in_one_line():
    cfg = wholebody_config(det_model="rtmdet-tiny", pose_model=str(POSE_MODELS["rtmpose-t"].config_path()))
    with pytest.raises(PoseModelLoadError) as err:
        load_pose_estimator(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith("the pose model could not be loaded (mmpose-wholebody detector rtmdet-tiny")
    assert "ValueError: pose_model" in message and "predicts 17 keypoints, not the 133" in message
    assert "--pose-backend mediapipe" in message


def test_random_weights_are_the_same_whatever_the_process_drew_before():
    torch.manual_seed(7)
    a = MMPoseWholeBodyEstimator(wholebody_config(det_model="rtmdet-tiny"))
    torch.rand(1000)
    before = torch.get_rng_state()
    b = MMPoseWholeBodyEstimator(wholebody_config(det_model="rtmdet-tiny"))
    assert torch.equal(torch.get_rng_state(), before)
    state_a, state_b = a.pose_model.state_dict(), b.pose_model.state_dict()
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# ---------------------------------------------------------------------------------------------
# in the LAION-Pose Ray actor pool


def test_wholebody_backend_runs_in_the_actor_pool(ray_local, local_site, tmp_path):
    """RTMDet-m + RTMPose-m COCO-WholeBody, random weights, in a Ray actor. RTMDet-m rather than the faster
    rtmdet-tiny: random rtmdet-tiny finds no person even at threshold 0, and then the whole-body model would never
    run. At threshold 0 with one person per image, random weights give an ``ok`` row whose hands and face reach the
    parquet."""
    from test_laion_pose_pipeline import tiny_config

    from pipelines.laion_pose import build_laion_pose

    urls = [local_site.add("wb/astronaut.jpg", Route((SAMPLES / "astronaut.jpg").read_bytes())), local_site.url("wb/dead.jpg")]
    meta = tmp_path / "m.csv"
    pd.DataFrame({"URL": urls, "TEXT": ["astronaut", "dead"]}).to_csv(meta, index=False)
    cfg = tiny_config()
    cfg.pose.backend, cfg.pose.det_model = "mmpose-wholebody", "rtmdet-m"
    cfg.pose.det_checkpoint = cfg.pose.pose_checkpoint = None
    cfg.pose.det_score_threshold, cfg.pose.max_persons_per_image = 0.0, 1
    manifest = build_laion_pose([str(meta)], str(tmp_path / "out"), cfg, progress=False)
    rows = pd.read_parquet(tmp_path / "out" / "meta").set_index("caption")
    assert rows.loc["dead", "status"] == "download_failed" and "404" in rows.loc["dead", "error"]
    astronaut = rows.loc["astronaut"]
    assert astronaut["status"] == "ok" and astronaut["error"] is None and astronaut["num_persons"] == 1
    for part, size in PART_SIZES.items():
        [points] = astronaut[part]  # one person
        points = np.stack(points)
        assert points.shape == (size, 3) and np.all(np.isfinite(points)) and points[:, 2].max() >= PART_MIN_SCORE, part
        assert np.all((points[:, :2] >= 0) & (points[:, :2] <= 384)), part  # the stored (resized) image's pixels
    assert len(rows.loc["dead", "hand_left"]) == 0
    assert manifest["min_keypoint_score_used"] == 0.3 and manifest["counts"]["ok"] == 1


def test_a_whole_body_model_that_cannot_load_points_to_the_offline_whole_body_backend():
    from pose_data.pose.estimator import describe_load_failure

    line = describe_load_failure(PoseModelConfig(backend="mmpose-wholebody"), "Traceback ...\nOSError: no route to host")
    assert line.startswith("the pose model could not be loaded (mmpose-wholebody detector rtmdet-m (checkpoint auto)")
    assert "OSError: no route to host" in line and line.endswith("or use --pose-backend mediapipe-holistic (offline, hands and face)")
    assert describe_load_failure(PoseModelConfig(backend="mmpose"), "OSError: x").endswith("--pose-backend mediapipe (offline)")
