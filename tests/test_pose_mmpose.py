"""MMPose backend, run for real from the packages' own config files with random weights.

No OpenMMLab weights can be downloaded here, so these tests check what random weights can show:
the alias table against the installed package files, the output plumbing, that the detector and
the keypoint model really run batched (their real ``test_step`` is wrapped to count calls), that a
batch gives what one-at-a-time gives, and that real-looking mmengine checkpoints load with
``torch.load(weights_only=True)`` while unsafe pickles are still refused.
"""

from __future__ import annotations

import math
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("mmcv.ops", reason="mmcv with compiled ops is required by mmdet/mmpose")
pytest.importorskip("mmpose.apis")

from pose_data.pose.backends import build_pose_estimator
from pose_data.pose.estimator import PoseModelConfig  # noqa: E402
from pose_data.pose.keypoints import PersonPose  # noqa: E402
from pose_data.pose.mmpose_backend import (  # noqa: E402
    DET_MODELS,
    POSE_MODELS,
    MMPosePoseEstimator,
    allow_openmmlab_checkpoint_globals,
    resolve_model,
)

BATCH = 2


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[np.ndarray]:
    """Blocky random colour images (8 px blocks), uint8 (H, W, 3), of the given (H, W) sizes."""
    rng = np.random.default_rng(seed)
    images = []
    for h, w in sizes:
        coarse = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
        images.append(np.kron(coarse, np.ones((8, 8, 1)))[:h, :w].astype(np.uint8))
    return images


class CallCounter:
    """Wraps a model's real bound ``test_step`` and records the batch size of every call."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.original = model.test_step
        self.batch_sizes: list[int] = []
        model.test_step = self  # instance attribute shadows the class method

    def __call__(self, data: dict):
        self.batch_sizes.append(len(data["inputs"]))
        return self.original(data)


@pytest.fixture(scope="module")
def estimator() -> MMPosePoseEstimator:
    torch.manual_seed(0)
    cfg = PoseModelConfig(
        backend="mmpose",
        det_checkpoint=None,
        pose_checkpoint=None,
        batch_size=BATCH,
        det_score_threshold=0.0,  # random weights: keep whatever the detector finds...
        max_persons_per_image=2,  # ...but at most two boxes per image
    )
    est = build_pose_estimator(cfg)
    assert isinstance(est, MMPosePoseEstimator)
    return est


@pytest.fixture()
def counters(estimator):
    det, pose = CallCounter(estimator.detector), CallCounter(estimator.pose_model)
    yield det, pose
    del estimator.detector.test_step, estimator.pose_model.test_step  # back to the class method


def check_people(people: list[PersonPose], image: np.ndarray) -> None:
    height, width = image.shape[:2]
    for person in people:
        assert person.keypoints.shape == (17, 3) and person.keypoints.dtype == np.float32
        assert np.all(np.isfinite(person.keypoints))
        x0, y0, x1, y1 = person.bbox
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        scored = person.keypoints[person.keypoints[:, 2] > 0]
        assert np.all((scored[:, 0] >= 0) & (scored[:, 0] <= width) & (scored[:, 1] >= 0) & (scored[:, 1] <= height))
        assert np.all(person.keypoints[:, 2] >= 0)


# ---------------------------------------------------------------------------------------------
# aliases


def test_aliases_match_the_installed_package_files():
    from mmpose.apis.inferencers.utils import default_det_models

    human = default_det_models["human"]  # what MMPoseInferencer('human') detects people with
    assert human["model"] == str(DET_MODELS["rtmdet-m"].config_path())
    assert human["weights"] == DET_MODELS["rtmdet-m"].weights and human["cat_ids"] == (0,)

    pose_meta = POSE_MODELS["rtmpose-m"].config_path().parent / "rtmpose_body8-coco.yml"
    entries = {m["Name"]: m for m in yaml.safe_load(pose_meta.read_text())["Models"]}
    for alias, source in POSE_MODELS.items():
        entry = entries[source.config_path().stem]
        assert source.config == entry["Config"] and source.weights == entry["Weights"], alias
    assert "human" in entries[POSE_MODELS["rtmpose-m"].config_path().stem]["Alias"]

    tiny = DET_MODELS["rtmdet-tiny"]
    det_meta = tiny.config_path().parent / "metafile.yml"
    [entry] = [m for m in yaml.safe_load(det_meta.read_text())["Models"] if "rtmdet-t" in m.get("Alias", [])]
    assert tiny.config == entry["Config"] and tiny.weights == entry["Weights"]
    for source in [*DET_MODELS.values(), *POSE_MODELS.values()]:
        assert source.config_path().is_file()


def test_resolve_model_checkpoint_settings(caplog, tmp_path):
    config, ckpt = resolve_model("rtmpose-m", "auto", POSE_MODELS, "pose")
    assert config.endswith("rtmpose-m_8xb256-420e_body8-256x192.py") and ckpt == POSE_MODELS["rtmpose-m"].weights
    local = tmp_path / "local.pth"
    local.write_bytes(b"weights")
    assert resolve_model(config, str(local), POSE_MODELS, "pose") == (config, str(local))
    assert resolve_model(config, "https://example.org/w.pth", POSE_MODELS, "pose")[1] == "https://example.org/w.pth"  # fetched later
    with pytest.raises(ValueError, match=r"pose_checkpoint '/some/local.pth' does not exist.*--pose-backend mediapipe"):
        resolve_model(config, "/some/local.pth", POSE_MODELS, "pose")
    with caplog.at_level("WARNING"):
        assert resolve_model("rtmdet-m", "None", DET_MODELS, "det")[1] is None
    assert "RANDOM weights" in caplog.text
    with pytest.raises(ValueError, match="rtmpose-s.*rtmpose-m"):
        resolve_model("hrnet-w32", "auto", POSE_MODELS, "pose")
    with pytest.raises(ValueError, match="only works with an alias"):
        resolve_model(config, "auto", POSE_MODELS, "pose")


# ---------------------------------------------------------------------------------------------
# running the models


def test_call_batches_the_detector_and_the_keypoint_model(estimator, counters):
    det, pose = counters
    images = random_images([(120, 160), (200, 96)])  # BATCH images of different sizes
    results = estimator(images)

    assert len(results) == len(images)
    assert det.batch_sizes == [2]  # both images in one detector forward pass
    total = sum(len(people) for people in results)
    assert total >= 1, "random detector found nothing: the keypoint stage was not exercised"
    assert all(len(people) <= 2 for people in results)  # max_persons_per_image
    assert len(pose.batch_sizes) == math.ceil(total / BATCH)  # boxes of all images pooled
    assert sum(pose.batch_sizes) == total and max(pose.batch_sizes) <= BATCH
    for people, image in zip(results, images):
        check_people(people, image)
        scores = [p.score for p in people]
        assert scores == sorted(scores, reverse=True)  # best box first


def test_detector_chunks_images_and_matches_mmdet_inference(estimator, counters):
    from mmdet.apis import inference_detector
    from mmengine.registry import DefaultScope

    det, pose = counters
    images = random_images([(120, 160), (200, 96), (80, 80)], seed=1)
    batched = estimator.detect_people(images)
    assert det.batch_sizes == [2, 1] and pose.batch_sizes == []  # BATCH images per forward pass
    assert len(batched) == 3 and all(b.dtype == np.float32 and b.shape[1] == 5 and len(b) >= 1 for b in batched)
    # image 0 ran in a batch of two; mmdet's own one-image API (cv2 BGR input, in mmdet's registry
    # scope) followed by the same person filter gives the same boxes
    with DefaultScope.overwrite_default_scope("mmdet"):
        sample = inference_detector(estimator.detector, images[0][..., ::-1].copy())
    np.testing.assert_allclose(estimator._person_boxes(sample, images[0].shape[:2]), batched[0], rtol=1e-4, atol=1e-2)


def test_keypoints_for_given_boxes_batched_equals_one_by_one(estimator, counters):
    det, pose = counters
    images = random_images([(120, 160), (90, 70), (200, 96)], seed=2)
    boxes = [
        np.array([[10, 20, 80, 110], [60, 5, 150, 115]], np.float32),
        np.zeros((0, 4), np.float32),  # an image without people
        np.array([[0, 0, 96, 200, 0.9], [20, 30, 70, 150, 0.8], [40, 100, 90, 190, 0.7]], np.float32),
    ]
    batched = estimator.estimate_keypoints(images, boxes)
    assert det.batch_sizes == [] and pose.batch_sizes == [2, 2, 1]  # 5 boxes across 3 images
    assert [len(people) for people in batched] == [2, 0, 3]
    assert [p.score for p in batched[2]] == pytest.approx([0.9, 0.8, 0.7])
    assert [p.score for p in batched[0]] == [1.0, 1.0]
    for people, image, image_boxes in zip(batched, images, boxes):
        check_people(people, image)
        for person, box in zip(people, image_boxes):
            assert person.bbox == pytest.approx(tuple(box[:4]))

    for i, image in enumerate(images):
        for j, box in enumerate(boxes[i]):
            [[alone]] = estimator.estimate_keypoints([image], [box[None]])
            np.testing.assert_allclose(alone.keypoints, batched[i][j].keypoints, rtol=1e-4, atol=1e-2)

    # MMPose's own API (one image per call, cv2 BGR input) gives the same keypoints
    from mmpose.apis import inference_topdown

    samples = inference_topdown(estimator.pose_model, images[2][..., ::-1].copy(), boxes[2][:, :4])
    for sample, person in zip(samples, batched[2]):
        np.testing.assert_allclose(sample.pred_instances.keypoints[0], person.keypoints[:, :2], rtol=1e-4, atol=1e-2)


def test_empty_inputs(estimator, counters):
    det, pose = counters
    assert estimator([]) == []
    assert estimator.estimate_keypoints([np.zeros((32, 32, 3), np.uint8)], [np.zeros((0, 4))]) == [[]]
    assert det.batch_sizes == [] and pose.batch_sizes == []
    with pytest.raises(ValueError, match=r"\(n, 4\) or \(n, 5\)"):
        estimator.estimate_keypoints([np.zeros((32, 32, 3), np.uint8)], [np.zeros((1, 3))])
    with pytest.raises(ValueError, match="box arrays for 1 images"):
        estimator.estimate_keypoints([np.zeros((32, 32, 3), np.uint8)], [])


# ---------------------------------------------------------------------------------------------
# checkpoints under torch.load(weights_only=True)


def mmengine_like_checkpoint(state_dict: dict, dataset_meta: dict) -> dict:
    """The layout mmengine's Runner.save_checkpoint writes: meta, state_dict, message_hub."""
    from mmengine.logging import MessageHub

    hub = MessageHub("fake_training_run")  # a fresh hub, as a 3-iteration training run leaves it
    for step in range(3):
        hub.update_scalar("train/loss", 1.0 / (step + 1))
        hub.update_scalar("train/lr", np.float32(4e-3))
    hub.update_info("iter", 3)
    hub.update_info("best_ap", np.float64(0.749))
    meta = {"epoch": 420, "iter": 3, "seed": 21, "mmengine_version": "0.10.7", "dataset_meta": dataset_meta}
    return {"meta": meta, "state_dict": state_dict, "message_hub": hub.state_dict()}


def pickled_globals(path) -> set[str]:
    """Every global a torch.save file's pickle names ("module.name"; protocol 2 spells builtins
    "__builtin__")."""
    with zipfile.ZipFile(path) as archive:
        [data] = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        ops = pickletools.genops(archive.read(data))
        names = {arg.replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
    return {name.replace("__builtin__.", "builtins.") for name in names}


def test_real_style_checkpoint_loads_with_weights_only(estimator, tmp_path):
    state = {k: v.clone() for k, v in estimator.pose_model.state_dict().items()}
    marker = next(k for k in state if k.endswith("final_layer.weight"))
    state[marker] += 0.25  # so that loading these weights is visible
    path = tmp_path / "rtmpose-m.pth"
    torch.save(mmengine_like_checkpoint(state, estimator.pose_model.dataset_meta), path)

    assert {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray.scalar",
            "mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr"} <= pickled_globals(path)  # fmt: skip
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") is None
    # in a fresh process (no allowlist), torch.load as mmengine calls it refuses this file
    load = "import sys, torch; torch.load(sys.argv[1], map_location='cpu')"
    fresh = subprocess.run([sys.executable, "-c", load, str(path)], capture_output=True, text=True)
    assert fresh.returncode != 0 and "Unsupported global" in fresh.stderr

    cfg = PoseModelConfig(det_model="rtmdet-tiny", det_checkpoint="none", pose_checkpoint=str(path), batch_size=BATCH)
    loaded = MMPosePoseEstimator(cfg)  # mmengine -> torch.load(path) with weights_only defaulting to True
    torch.testing.assert_close(loaded.pose_model.state_dict()[marker], state[marker])
    np.testing.assert_array_equal(loaded.pose_model.dataset_meta["sigmas"], estimator.pose_model.dataset_meta["sigmas"])
    checkpoint = torch.load(path, weights_only=True)
    buffer = checkpoint["message_hub"]["log_scalars"]["train/loss"]
    assert buffer.current() == pytest.approx(1 / 3) and buffer.mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert checkpoint["message_hub"]["runtime_info"]["best_ap"] == pytest.approx(0.749)

    [people] = loaded.estimate_keypoints(random_images([(100, 80)]), [np.array([[5, 5, 75, 95]])])
    assert len(people) == 1 and people[0].keypoints.shape == (17, 3)


class _GetattrElsewhere:
    def __reduce__(self):
        return (getattr, (np.ndarray, "tofile"))


class _RunsAShellCommand:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("payload", [_GetattrElsewhere(), _RunsAShellCommand()], ids=["getattr", "os.system"])
def test_unsafe_pickles_are_still_refused(tmp_path, payload):
    allow_openmmlab_checkpoint_globals()
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "x": payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_random_weights_are_the_same_whatever_the_process_drew_before():
    """A reused Ray worker has drawn from torch's RNG before the estimator is built: random weights must not
    depend on that (a pipeline test's statuses once flipped on it), and building must not move the caller's RNG."""
    cfg = PoseModelConfig(backend="mmpose", det_checkpoint=None, pose_checkpoint=None)
    torch.manual_seed(123)
    a = build_pose_estimator(cfg)
    torch.rand(1000)  # a different RNG state before the second build
    before = torch.get_rng_state()
    b = build_pose_estimator(cfg)
    assert torch.equal(torch.get_rng_state(), before)
    for model_a, model_b in ((a.detector, b.detector), (a.pose_model, b.pose_model)):
        state_a, state_b = model_a.state_dict(), model_b.state_dict()
        assert state_a.keys() == state_b.keys() and len(state_a) > 100
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
