"""The pose-estimation interface every command sees: one config, one callable, the one-line load error.

The pipeline only ever sees :class:`PoseEstimator`: a callable that takes a list of RGB uint8
images (any sizes) and returns, per image, the people found in it as :class:`PersonPose` in that
image's pixel coordinates (COCO-17 order). Backends:

- ``"mmpose"`` (:mod:`pose_data.pose.mmpose_backend`): RTMDet person detector + RTMPose top-down, the
  pair MMPose's ``MMPoseInferencer('human')`` uses, batched across images.
- ``"mediapipe"`` (:mod:`pose_data.pose.mediapipe_backend`): BlazePose (at most one person per image),
  whose model ships inside the mediapipe wheel, so it runs with no download at all.
- ``"mmpose-wholebody"`` (:mod:`pose_data.pose.mmpose_wholebody_backend`): the same detector, then a
  COCO-WholeBody (133-point) top-down model from MMPose's configs: body, hands and face.
- ``"mediapipe-holistic"`` (:mod:`pose_data.pose.mediapipe_holistic_backend`): MediaPipe Holistic,
  BlazePose plus its hand and face models, all inside the wheel (offline, one person per image).

The whole-body backends (:data:`WHOLE_BODY_BACKENDS`) also fill each person's hands and face.

The backends implement this interface and import it; :mod:`pose_data.pose.backends` builds the one a config names.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

import numpy as np

from pose_data.pose.keypoints import PersonPose

BACKENDS: tuple[str, ...] = ("mmpose", "mediapipe", "mmpose-wholebody", "mediapipe-holistic")
#: Backends that find hands and faces besides the body.
WHOLE_BODY_BACKENDS: tuple[str, ...] = ("mmpose-wholebody", "mediapipe-holistic")
#: Backends built on MMDetection + MMPose (torch models: a device, a batch size, checkpoints).
MMPOSE_BACKENDS: tuple[str, ...] = ("mmpose", "mmpose-wholebody")

# Default per-keypoint score threshold for "this keypoint is confidently located", per backend.
# - mediapipe: the score is BlazePose's landmark visibility, a sigmoid probability in [0, 1];
#   0.5 is the natural decision point (and MediaPipe's own default confidence thresholds).
# - mmpose: RTMPose's SimCC score is the peak of a per-axis 1-D classification distribution
#   (averaged over x and y), not a probability: its scale depends on the label-smoothing sigma and
#   it often exceeds 1 for clear joints, so 0.5 would mean nothing in particular. MMPose itself
#   treats a keypoint as visible above 0.3 everywhere it draws one (mmpose 1.3.2:
#   `topdown_demo_with_mmdet.py --kpt-thr` default 0.3, `MMPoseInferencer(..., kpt_thr=0.3)`,
#   `PoseLocalVisualizer.add_datasample(kpt_thr=0.3)`), so we use the same value.
# The whole-body variants score their body points the same way as their body-only siblings.
DEFAULT_MIN_KEYPOINT_SCORE: dict[str, float] = {"mediapipe": 0.5, "mmpose": 0.3, "mediapipe-holistic": 0.5,
                                                "mmpose-wholebody": 0.3}  # fmt: skip


@dataclass
class PoseModelConfig:
    """Which pose model to build and how to run it (plain values: embedded in the pipeline's YAML).

    backend: one of :data:`BACKENDS`.
    device: torch device for the mmpose backends ("cpu", "cuda", "cuda:1"); mediapipe always runs on the CPU.
    batch_size: mmpose backends only. The detector runs all images of one call as one batch; the keypoint
        model runs the person boxes of all images of the call together, ``batch_size`` at a time.
    det_model / pose_model: mmpose backends only; an alias ("rtmdet-m", "rtmdet-tiny"; for "mmpose"
        "rtmpose-m", "rtmpose-s"; for "mmpose-wholebody" the COCO-WholeBody models "rtmpose-m",
        "rtmpose-l", "dwpose-l", "rtmw-l") or a path to an MMDetection / MMPose config file.
    det_checkpoint / pose_checkpoint: "auto" = the official OpenMMLab weights of the alias
        (downloaded once by mmengine into its cache: needs internet the first time); a local path
        or URL; None or "none" = random initialisation (tests and benchmarks only; logs a WARNING).
    det_score_threshold: keep person boxes with detector score > this (MMPose demo's --bbox-thr 0.3).
    det_nms_threshold: IoU threshold of the extra person-box NMS MMPose's demo runs (--nms-thr 0.3).
    max_persons_per_image: keep at most this many boxes per image (highest scores); None = all.
    mediapipe_min_detection_confidence: the mediapipe backends only; BlazePose person-detector threshold.
    """

    backend: str = "mmpose"
    device: str = "cpu"
    batch_size: int = 16
    det_model: str = "rtmdet-m"
    det_checkpoint: str | None = "auto"
    pose_model: str = "rtmpose-m"
    pose_checkpoint: str | None = "auto"
    det_score_threshold: float = 0.3
    det_nms_threshold: float = 0.3
    max_persons_per_image: int | None = None
    mediapipe_min_detection_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_persons_per_image is not None and self.max_persons_per_image < 1:
            raise ValueError(f"max_persons_per_image must be None or >= 1, got {self.max_persons_per_image}")
        for name in ("det_score_threshold", "det_nms_threshold", "mediapipe_min_detection_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")

    def validate(self) -> None:
        """The checks a pipeline makes before any work (the backend is also checked when it is built)."""
        if self.backend not in BACKENDS:
            raise ValueError(f"pose.backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"pose.device {self.device!r} must be cpu or cuda[:N]")


class PoseEstimator(abc.ABC):
    """Images in, people out. Models are loaded once in ``__init__``; ``__call__`` is inference only.

    ``__call__(images)``: ``images`` is a list of RGB uint8 arrays (H, W, 3), sizes may differ;
    returns one list of :class:`PersonPose` per image (empty when nobody was found), coordinates
    in that image's pixels. Safe to call under ``torch.inference_mode()``.
    """

    name: str

    @abc.abstractmethod
    def __call__(self, images: list[np.ndarray]) -> list[list[PersonPose]]: ...

    def close(self) -> None:
        """Release native resources (default: nothing to release)."""

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_images(images: list[np.ndarray]) -> None:
    """Raise ValueError unless every image is an RGB uint8 array of shape (H, W, 3) with H, W > 0."""
    if isinstance(images, np.ndarray):
        raise ValueError("images must be a list of (H, W, 3) arrays, got a single array")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError(f"image {i} must be a uint8 numpy array, got {type(image).__name__} "
                             f"{getattr(image, 'dtype', '')}")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image {i} must have shape (H, W, 3) (RGB), got {image.shape}")


def checkpoint_or_none(checkpoint: str | None) -> str | None:
    """Normalise the config's checkpoint: None and "none" (any case) both mean random init."""
    if checkpoint is None or checkpoint.strip().lower() == "none":
        return None
    return checkpoint


class PoseModelLoadError(RuntimeError):
    """The pose model could not be built. The message is one line: the model, where its weights come from, why it
    failed, and the way out."""


MMPOSE_WAY_OUT = ("give local weights with --det-checkpoint PATH and --pose-checkpoint PATH ('auto' downloads the "
                  "official ones, which needs internet), or use --pose-backend mediapipe (offline)")  # fmt: skip


def describe_load_failure(cfg: PoseModelConfig, error: str, way_out: str | None = None) -> str:
    """One line for a model that did not load, from ``error`` (any text: its last ``SomeError: ...`` line is the
    cause). ``way_out``: what to do instead, for a command whose flags differ from ``pose-data``'s."""
    if cfg.backend in MMPOSE_BACKENDS:
        what = (f"{cfg.backend} detector {cfg.det_model} (checkpoint {cfg.det_checkpoint}) and keypoint model {cfg.pose_model} "
                f"(checkpoint {cfg.pose_checkpoint}) on {cfg.device}")  # fmt: skip
        if way_out is None:  # the offline backend that finds what this one would have found
            offline = "mediapipe (offline)" if cfg.backend == "mmpose" else "mediapipe-holistic (offline, hands and face)"
            way_out = MMPOSE_WAY_OUT.replace("mediapipe (offline)", offline)
    else:
        what, way_out = f"{cfg.backend} on {cfg.device}", way_out or "check the backend's install (scripts/setup.sh)"
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line)]
    cause = (causes or lines or ["unknown error"])[-1]
    return f"the pose model could not be loaded ({what}): {cause[:300]}; {way_out}"
