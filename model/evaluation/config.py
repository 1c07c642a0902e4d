"""Configuration of ``fyp-eval`` (generated videos -> CLIP score, frame consistency, pose accuracy): every default here.

Presets in ``model/configs/``: ``eval`` (CLIP ViT-L/14 as the papers use it, MMPose RTMDet + RTMPose) and
``eval-tiny`` (MediaPipe BlazePose, offline, CPU; a local ``--clip-model`` folder is still needed offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.evaluation.clip_metrics import DEFAULT_CLIP_MODEL
from pose_data.config import load_preset_or_file
from pose_data.pose.estimator import PoseModelConfig


@dataclass
class EvalConfig:
    clip_model: str = DEFAULT_CLIP_MODEL  # hub id or local folder of a transformers CLIPModel + its processor
    device: str | None = None  # CLIP's device; default cuda when available (the pose model has pose.device)
    batch_size: int = 16  # frames per CLIP call
    pose: PoseModelConfig = field(default_factory=PoseModelConfig)  # the pose backend run on the generated frames

    def validate(self) -> None:
        if not isinstance(self.clip_model, str) or not self.clip_model.strip():
            raise ValueError("clip_model must name a hub id or a folder")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        self.pose.validate()


PRESETS = ("eval", "eval-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``eval``, ``eval-tiny`` or ``tiny``) or a YAML path -> dict."""
    return load_preset_or_file("eval-tiny" if name_or_path == "tiny" else name_or_path, package="model", presets=PRESETS)
