"""MMPose backend: RTMDet person detector + RTMPose top-down COCO-17, batched across images.

The models are the pair ``MMPoseInferencer('human')`` uses in mmpose 1.3.2 (person-only RTMDet-m
from ``mmpose/apis/inferencers/utils/default_det_models.py`` and ``rtmpose-m_8xb256-420e_body8-
256x192``, alias "human" in ``rtmpose_body8-coco.yml``), built from the config files shipped in the
packages' ``.mim`` folders with ``mmdet.apis.init_detector`` / ``mmpose.apis.init_model``.

Unlike the inferencer (one image per forward pass, and per image one forward for its boxes) this
backend batches for real:

1. detector: the images of a call, ``batch_size`` at a time, go through the detector's own test
   pipeline, ``pseudo_collate`` and ONE ``test_step`` (all RTMDet inputs are resized and padded to
   640x640, so they stack);
2. person boxes: label 0 (person), score > ``det_score_threshold``, clipped to the image, then
   MMPose's demo NMS (``mmpose.evaluation.functional.nms``, IoU ``det_nms_threshold``), optionally
   capped at ``max_persons_per_image`` (highest scores first);
3. keypoints: the boxes of ALL images of the call, ``batch_size`` at a time, go through the pose
   model's test pipeline (box -> 256x192 affine crop), ``pseudo_collate`` and one ``test_step``.

Output per person: bbox = the (clipped) detector box, score = the detector score, keypoints = the
RTMPose (x, y) in image pixels and its SimCC score, set to 0 for keypoints outside the image (a
top-down crop of a box at the border extends beyond the image; COCO never labels such points and
MMPose's visualiser never draws them).

Checkpoints: torch >= 2.6 loads with ``weights_only=True`` by default, which rejects real OpenMMLab
checkpoints; :func:`allow_openmmlab_checkpoint_globals` allowlists exactly what they contain.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from pose_data.pose.estimator import PoseEstimator, PoseModelConfig, check_images, checkpoint_or_none
from pose_data.pose.keypoints import PersonPose

# The OpenMMLab stack's import-time noise, printed before every run otherwise: albumentations asks PyPI for a newer
# release (a network call), and mmengine imports the deprecated pkg_resources.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

log = logging.getLogger(__name__)

PERSON_LABEL = 0  # "person" in COCO's 80 classes and the only class of MMPose's person detectors


@dataclass(frozen=True)
class ModelSource:
    """A config file inside an installed package's ``.mim`` folder and its official weights URL."""

    package: str  # "mmdet" or "mmpose"
    config: str  # path relative to ``<package>/.mim``
    weights: str

    def config_path(self) -> Path:
        spec = find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ValueError(f"package {self.package!r} is not installed; it holds the config {self.config}")
        return Path(spec.origin).parent / ".mim" / self.config


_RTMPOSE_BODY8 = "configs/body_2d_keypoint/rtmpose/body8"
_RTMPOSE_URL = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1"

# Sources (mmpose 1.3.2 / mmdet 3.3.0 package files; tests check them against these files):
# - "rtmdet-m": mmpose/apis/inferencers/utils/default_det_models.py, entry "human" (person only).
# - "rtmdet-tiny": mmdet/.mim/configs/rtmdet/metafile.yml, alias "rtmdet-t" (COCO 80 classes).
# - "rtmpose-*": mmpose/.mim/configs/body_2d_keypoint/rtmpose/body8/rtmpose_body8-coco.yml
#   ("rtmpose-m" is the entry with alias "human").
DET_MODELS: dict[str, ModelSource] = {
    "rtmdet-m": ModelSource(
        "mmpose",
        "demo/mmdetection_cfg/rtmdet_m_640-8xb32_coco-person.py",
        f"{_RTMPOSE_URL}/rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
    ),
    "rtmdet-tiny": ModelSource(
        "mmdet",
        "configs/rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
        "https://download.openmmlab.com/mmdetection/v3.0/rtmdet/rtmdet_tiny_8xb32-300e_coco/"
        "rtmdet_tiny_8xb32-300e_coco_20220902_112414-78e30dcc.pth",
    ),
}
POSE_MODELS: dict[str, ModelSource] = {
    "rtmpose-t": ModelSource(
        "mmpose",
        f"{_RTMPOSE_BODY8}/rtmpose-t_8xb256-420e_body8-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-t_simcc-body7_pt-body7_420e-256x192-026a1439_20230504.pth",
    ),
    "rtmpose-s": ModelSource(
        "mmpose",
        f"{_RTMPOSE_BODY8}/rtmpose-s_8xb256-420e_body8-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-s_simcc-body7_pt-body7_420e-256x192-acd4a1ef_20230504.pth",
    ),
    "rtmpose-m": ModelSource(
        "mmpose",
        f"{_RTMPOSE_BODY8}/rtmpose-m_8xb256-420e_body8-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.pth",
    ),
    "rtmpose-l": ModelSource(
        "mmpose",
        f"{_RTMPOSE_BODY8}/rtmpose-l_8xb256-420e_body8-256x192.py",
        f"{_RTMPOSE_URL}/rtmpose-l_simcc-body7_pt-body7_420e-256x192-4dba18fc_20230504.pth",
    ),
}


def resolve_model(spec: str, checkpoint: str | None, aliases: dict[str, ModelSource], what: str) -> tuple[str, str | None]:
    """Turn (alias or config path, checkpoint setting) into (config file, checkpoint or None).

    ``checkpoint``: "auto" = the alias's official URL; None/"none" = random init (WARNING);
    anything else is passed to mmengine as is (local path or URL).
    """
    checkpoint = checkpoint_or_none(checkpoint)
    if spec in aliases:
        config = aliases[spec].config_path()
        if checkpoint == "auto":
            checkpoint = aliases[spec].weights
    elif Path(spec).is_file():
        config = Path(spec)
        if checkpoint == "auto":
            raise ValueError(
                f"{what}_checkpoint='auto' only works with an alias ({', '.join(aliases)}); "
                f"for the config file {spec} give a checkpoint path/URL, or None for random weights"
            )
    else:
        raise ValueError(f"Unknown {what} model {spec!r}: not a config file and not one of {', '.join(aliases)}")
    if not config.is_file():
        raise ValueError(f"{what} config {config} does not exist (is the package's .mim folder installed?)")
    if checkpoint is not None and "://" not in checkpoint and not Path(checkpoint).is_file():
        raise ValueError(
            f"{what}_checkpoint {checkpoint!r} does not exist: give the weights' local path (--{what}-checkpoint PATH), "
            "'auto' for the official download, or use --pose-backend mediapipe (offline)"
        )
    if checkpoint is None:
        log.warning("%s model %s runs with RANDOM weights (checkpoint=None): for tests and benchmarks only", what, spec)
    return str(config), checkpoint


def check_model_settings(cfg: PoseModelConfig) -> None:
    """The checks :class:`MMPosePoseEstimator` makes before loading anything (aliases, config files, local
    checkpoint paths), for a driver that wants them before starting any work; ValueError naming the setting."""
    MMPosePoseEstimator.resolve_models(cfg)


# --------------------------------------------------------------------------------------------
# Checkpoint loading under torch.load(weights_only=True)
# --------------------------------------------------------------------------------------------

# numpy dtype classes whose instances a checkpoint's arrays may carry (bool, ints, floats, complex,
# fixed-width str/bytes); object arrays ("O") stay forbidden: they hold arbitrary pickled objects.
_NUMPY_DTYPE_CHARS = "?bBhHiIlLqQefdgFDGUS"


_HISTORY_BUFFER_STATISTICS = ("min", "max", "current", "mean")  # HistoryBuffer._set_default_statistics


def _history_buffer_method(owner: object, name: str) -> object:
    """Stand-in for ``getattr`` when unpickling: only ``HistoryBuffer.<statistic method>``.

    ``HistoryBuffer.__getstate__`` stores its ``statistics_methods`` dict ({"min": HistoryBuffer.min,
    ...}); pickle writes each of these functions as ``getattr(HistoryBuffer, "min")``. Allowlisting
    the real ``getattr`` would let a checkpoint fetch any attribute of any allowed object; this
    returns only functions defined on HistoryBuffer under a statistic's name.
    """
    from mmengine.logging import HistoryBuffer

    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed and callable(vars(HistoryBuffer).get(name)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics are allowed"
    )


def allow_openmmlab_checkpoint_globals() -> None:
    """Let ``torch.load(weights_only=True)`` read OpenMMLab (mmengine) checkpoints, and nothing more.

    Besides tensors, mmengine checkpoints hold ``meta`` (``dataset_meta`` with numpy arrays, numpy
    scalars) and ``message_hub`` (``mmengine.logging.HistoryBuffer`` objects holding numpy arrays
    and a dict of its statistic methods). Their pickles name exactly these globals:
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` (its BUILD needs the
    concrete ``numpy.dtypes.*DType`` classes), ``numpy.core.multiarray.scalar``,
    ``mmengine.logging.history_buffer.HistoryBuffer`` and ``builtins.getattr`` (for which we register
    :func:`_history_buffer_method`, a getattr that only returns HistoryBuffer statistics).
    Both module spellings of numpy's helpers are registered (``numpy.core`` written by numpy 1,
    ``numpy._core`` by numpy 2). Idempotent. Never sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.
    """
    from mmengine.logging import HistoryBuffer

    try:  # numpy >= 2 (numpy 1.26 has this path too, as an alias)
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    safe: list = [np.ndarray, np.dtype, HistoryBuffer]
    safe += sorted({type(np.dtype(c)) for c in _NUMPY_DTYPE_CHARS}, key=lambda t: t.__name__)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        safe += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    safe.append((_history_buffer_method, "builtins.getattr"))
    torch.serialization.add_safe_globals(safe)


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_bgr(images: list[np.ndarray]) -> list[np.ndarray]:
    """Both OpenMMLab models expect cv2's BGR order (RTMDet consumes BGR; RTMPose's preprocessor
    swaps BGR to RGB itself)."""
    return [np.ascontiguousarray(image[..., ::-1]) for image in images]


class MMPosePoseEstimator(PoseEstimator):
    """RTMDet person boxes + RTMPose keypoints; see the module docstring for the batching.

    A subclass with another keypoint model (:mod:`pose_data.pose.mmpose_wholebody_backend`) sets
    ``backend_name`` and ``pose_models`` and overrides :meth:`person_from_points`.
    """

    backend_name = "mmpose"
    pose_models: dict[str, ModelSource] = POSE_MODELS

    @classmethod
    def resolve_models(cls, cfg: PoseModelConfig) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
        """(detector config, checkpoint) and (pose config, checkpoint), see :func:`resolve_model`."""
        return (resolve_model(cfg.det_model, cfg.det_checkpoint, DET_MODELS, "det"),
                resolve_model(cfg.pose_model, cfg.pose_checkpoint, cls.pose_models, "pose"))  # fmt: skip

    def __init__(self, cfg: PoseModelConfig) -> None:
        from mmdet.apis import init_detector
        from mmengine.dataset import Compose, pseudo_collate
        from mmengine.registry import DefaultScope
        from mmpose.apis import init_model
        from mmpose.evaluation.functional import nms

        self.cfg = cfg
        self.name = f"{self.backend_name}:{Path(cfg.det_model).stem}+{Path(cfg.pose_model).stem}"
        self._collate = pseudo_collate
        self._nms = nms
        allow_openmmlab_checkpoint_globals()

        (det_config, det_checkpoint), (pose_config, pose_checkpoint) = self.resolve_models(cfg)
        # Built under a fixed seed, on a forked RNG: random weights (no checkpoint) are then the same in every
        # process, whatever that process drew before (a reused Ray worker), and the caller's RNG is untouched.
        # Loaded weights overwrite them.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            # palette="random": skip building the COCO dataset object only to read its colour palette
            self.detector = init_detector(det_config, det_checkpoint, palette="random", device=cfg.device)
            self.pose_model = init_model(pose_config, pose_checkpoint, device=cfg.device)

        # Test pipelines, built in each package's registry scope; images arrive as arrays.
        det_pipeline = [dict(t) for t in self.detector.cfg.test_dataloader.dataset.pipeline]
        det_pipeline[0] = dict(type="mmdet.LoadImageFromNDArray")
        with DefaultScope.overwrite_default_scope("mmdet"):
            self._det_pipeline = Compose(det_pipeline)
        with DefaultScope.overwrite_default_scope("mmpose"):
            self._pose_pipeline = Compose(self.pose_model.cfg.test_dataloader.dataset.pipeline)

    # -- public API ------------------------------------------------------------------------

    def __call__(self, images: list[np.ndarray]) -> list[list[PersonPose]]:
        check_images(images)
        bgr = _to_bgr(images)
        with torch.inference_mode():
            return self._keypoints(bgr, self._detect(bgr))

    def detect_people(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Person boxes per image: float32 (n_i, 5) of x0, y0, x1, y1, score, best first."""
        check_images(images)
        with torch.inference_mode():
            return self._detect(_to_bgr(images))

    def estimate_keypoints(self, images: list[np.ndarray], boxes_per_image: list[np.ndarray]) -> list[list[PersonPose]]:
        """Keypoints for given person boxes: ``boxes_per_image[i]`` is (n_i, 4) x0, y0, x1, y1 or
        (n_i, 5) with a score (else 1.0) in image i's pixels. ``__call__`` uses this same stage."""
        check_images(images)
        if len(boxes_per_image) != len(images):
            raise ValueError(f"got {len(boxes_per_image)} box arrays for {len(images)} images")
        boxes = []
        for i, b in enumerate(boxes_per_image):
            b = np.asarray(b, dtype=np.float32)
            if b.size == 0:
                b = np.zeros((0, 5), np.float32)
            if b.ndim != 2 or b.shape[1] not in (4, 5):
                raise ValueError(f"boxes of image {i} must have shape (n, 4) or (n, 5), got {b.shape}")
            if b.shape[1] == 4:
                b = np.concatenate([b, np.ones((len(b), 1), np.float32)], axis=1)  # (n, 5), score 1
            boxes.append(b)
        with torch.inference_mode():
            return self._keypoints(_to_bgr(images), boxes)

    # -- stages ----------------------------------------------------------------------------

    def _detect(self, bgr_images: list[np.ndarray]) -> list[np.ndarray]:
        samples = []
        for chunk in _chunks(bgr_images, self.cfg.batch_size):
            batch = self._collate([self._det_pipeline(dict(img=img, img_id=i)) for i, img in enumerate(chunk)])
            samples += self.detector.test_step(batch)  # one forward pass for the whole chunk
        return [self._person_boxes(s, img.shape[:2]) for s, img in zip(samples, bgr_images)]

    def _person_boxes(self, sample, image_hw: tuple[int, int]) -> np.ndarray:
        pred = sample.pred_instances.cpu().numpy()  # rescaled to the original image already
        keep = (pred.labels == PERSON_LABEL) & (pred.scores > self.cfg.det_score_threshold)
        dets = np.concatenate([pred.bboxes[keep], pred.scores[keep, None]], axis=1).astype(np.float32)  # (n, 5)
        height, width = image_hw
        dets[:, [0, 2]] = dets[:, [0, 2]].clip(0, width)
        dets[:, [1, 3]] = dets[:, [1, 3]].clip(0, height)
        dets = dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]
        dets = dets[self._nms(dets, self.cfg.det_nms_threshold)].reshape(-1, 5)  # best score first
        if self.cfg.max_persons_per_image is not None:
            dets = dets[: self.cfg.max_persons_per_image]
        return dets

    def _keypoints(self, bgr_images: list[np.ndarray], boxes: list[np.ndarray]) -> list[list[PersonPose]]:
        jobs = [(i, box) for i, image_boxes in enumerate(boxes) for box in image_boxes]
        people: list[list[PersonPose]] = [[] for _ in bgr_images]
        meta = self.pose_model.dataset_meta
        for chunk in _chunks(jobs, self.cfg.batch_size):
            data = [
                self._pose_pipeline(dict(img=bgr_images[i], bbox=box[None, :4], bbox_score=box[4:5], **meta))
                for i, box in chunk
            ]
            samples = self.pose_model.test_step(self._collate(data))  # one forward pass (plus flip) per chunk
            for (i, box), sample in zip(chunk, samples):
                people[i].append(self._person(sample, box, bgr_images[i].shape[:2]))
        return people

    def _person(self, sample, box: np.ndarray, image_hw: tuple[int, int]) -> PersonPose:
        pred = sample.pred_instances
        xy = np.asarray(pred.keypoints, dtype=np.float32)[0]  # (1, K, 2) -> (K, 2), image pixels
        scores = np.asarray(pred.keypoint_scores, dtype=np.float32)[0]  # (1, K) -> (K,)
        height, width = image_hw
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width) & (xy[:, 1] >= 0) & (xy[:, 1] <= height)
        points = np.concatenate([xy, np.where(inside, scores, 0.0)[:, None]], axis=1)  # (K, 3)
        return self.person_from_points(points, box)

    @staticmethod
    def person_from_points(points: np.ndarray, box: np.ndarray) -> PersonPose:
        """One person from the keypoint model's (K, 3) x, y, score in image pixels (score 0 outside the image) and
        its box (x0, y0, x1, y1, score): here K = 17, COCO-17 already."""
        return PersonPose(bbox=tuple(box[:4]), score=float(box[4]), keypoints=points)

