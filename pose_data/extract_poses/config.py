"""Configuration of ``pose-data extract-poses`` (driving video -> poses + skeleton video): every default here.

Presets in ``pose_data/configs/``: ``extract_poses`` (MMPose RTMDet + RTMPose, GPU or CPU) and
``extract_poses-tiny`` (MediaPipe, offline, CPU). The person filter is the LAION-Pose builder's, with
defaults for driving videos rather than for training images: a person needs 4 confident keypoints (an upper
body or a face still drives a video), up to 20 people are drawn, and the image-size check does not apply. Frames
are sampled at 8 fps, ``fyp-generate``'s rate, so its output feeds ``fyp-generate`` frame for frame at the
defaults (``sampling.fps: 0`` or ``--all-frames`` keeps every frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pose_data.config import load_preset_or_file
from pose_data.extract_poses.sequence import DEFAULT_POSE_FPS, SamplingConfig
from pose_data.pose.estimator import DEFAULT_MIN_KEYPOINT_SCORE, PoseModelConfig
from pose_data.pose.filtering import FilterConfig, check_whole_body_options
from pose_data.skeleton.render import SKELETON_STYLES


def _video_filter() -> FilterConfig:
    return FilterConfig(min_keypoints=4, max_persons=20, min_image_size=0)


def _pose_rate() -> SamplingConfig:
    return SamplingConfig(fps=DEFAULT_POSE_FPS)


@dataclass
class ExtractPosesConfig:
    pose: PoseModelConfig = field(default_factory=PoseModelConfig)
    filter: FilterConfig = field(default_factory=_video_filter)
    sampling: SamplingConfig = field(default_factory=_pose_rate)  # fyp-generate's rate; fps 0 / null: every frame
    skeleton_style: str = "openpose"
    crf: int = 18  # libx264 quality of skeleton.mp4 (lower is better; skeletons have hard edges)

    def validate(self) -> None:
        if self.skeleton_style not in SKELETON_STYLES:
            raise ValueError(f"skeleton_style {self.skeleton_style!r} is not one of {', '.join(SKELETON_STYLES)}")
        check_whole_body_options(self.pose.backend, self.filter, self.skeleton_style)
        self.pose.validate()
        if not (isinstance(self.crf, int) and 0 <= self.crf <= 51):
            raise ValueError(f"crf must be an integer in 0..51, got {self.crf!r}")
        self.filter.validate()
        self.sampling.validate()

    @property
    def min_keypoint_score(self) -> float:
        """The filter's threshold, or the backend's default (scores are backend-specific)."""
        if self.filter.min_keypoint_score is not None:
            return self.filter.min_keypoint_score
        return DEFAULT_MIN_KEYPOINT_SCORE[self.pose.backend]


PRESETS = ("extract_poses", "extract_poses-tiny")


def preset_or_file(name_or_path: str) -> dict:
    return load_preset_or_file("extract_poses-tiny" if name_or_path == "tiny" else name_or_path, package="pose_data", presets=PRESETS)
