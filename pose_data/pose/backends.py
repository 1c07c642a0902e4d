"""Which backend a :class:`~pose_data.pose.estimator.PoseModelConfig` names, built: the one module that imports the
backends (:mod:`pose_data.pose.mmpose_backend`, :mod:`pose_data.pose.mediapipe_backend`), so that they can import the
interface in :mod:`pose_data.pose.estimator` without a cycle.

Backend modules are imported only when built: both pull in heavy stacks (TFLite / mmcv + mmdet + mmpose) and a
process normally needs only one of them.
"""

from __future__ import annotations

from pose_data.pose.estimator import BACKENDS, PoseEstimator, PoseModelConfig, PoseModelLoadError, describe_load_failure


def build_pose_estimator(cfg: PoseModelConfig) -> PoseEstimator:
    """Build the backend named by ``cfg.backend`` (imported only now: both are heavy)."""
    if cfg.backend == "mmpose":
        from pose_data.pose.mmpose_backend import MMPosePoseEstimator

        return MMPosePoseEstimator(cfg)
    if cfg.backend == "mediapipe":
        from pose_data.pose.mediapipe_backend import MediaPipePoseEstimator

        return MediaPipePoseEstimator(cfg)
    if cfg.backend == "mmpose-wholebody":
        from pose_data.pose.mmpose_wholebody_backend import MMPoseWholeBodyEstimator

        return MMPoseWholeBodyEstimator(cfg)
    if cfg.backend == "mediapipe-holistic":
        from pose_data.pose.mediapipe_holistic_backend import MediaPipeHolisticEstimator

        return MediaPipeHolisticEstimator(cfg)
    raise ValueError(f"Unknown pose backend {cfg.backend!r}; choose one of {', '.join(BACKENDS)}")


def check_model_settings(cfg: PoseModelConfig) -> None:
    """For the mmpose backends: the model aliases or config files and local checkpoint paths the config names, checked
    before any work (ValueError naming the setting); nothing to check for the others."""
    if cfg.backend == "mmpose":
        from pose_data.pose.mmpose_backend import check_model_settings as check
    elif cfg.backend == "mmpose-wholebody":
        from pose_data.pose.mmpose_wholebody_backend import check_model_settings as check
    else:
        return
    check(cfg)


def load_pose_estimator(cfg: PoseModelConfig, *, way_out: str | None = None) -> PoseEstimator:
    """:func:`build_pose_estimator`, with any failure (weights that cannot be downloaded or read, a missing GPU, a
    broken install) raised as :class:`PoseModelLoadError` in one line instead of the backend's traceback."""
    try:
        return build_pose_estimator(cfg)
    except Exception as err:  # noqa: BLE001 - every cause becomes the one line; the original stays as __cause__
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        kind = f"{type(err).__module__}.{type(err).__name__}".removeprefix("builtins.")
        raise PoseModelLoadError(describe_load_failure(cfg, f"{kind}: {first}", way_out)) from err
