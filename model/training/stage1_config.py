"""Configuration of ``fyp-train stage1``: every default in one place; presets in ``model/configs/``."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.training.config import (
    TrainConfig,
    check_data_and_validation,
    check_int,
    check_number,
    check_resolution,
)
from pose_data.config import load_preset_or_file


@dataclass
class Stage1DataConfig:
    shards: str = ""  # a LAION-Pose DIR, a folder of .tar shards, or a {00000..00009} pattern
    resolution: int = 512
    center_crop: bool = True  # False: random crop (same crop for image and skeleton)
    caption_dropout: float = 0.05  # captions replaced by "" for classifier-free guidance
    num_streams: int = 64  # virtual streams of whole shards (fixed for a run): see model/datasets/shard_stream.py
    shuffle_buffer: int = 100  # samples per stream (a process holds up to num_streams / processes of these buffers)
    num_workers: int = 0  # DataLoader workers; any number gives the same batches in the same order


@dataclass
class Stage1ModelConfig:
    base: str = "CompVis/stable-diffusion-v1-4"  # diffusers-layout SD 1.x: local path or hub id
    revision: str | None = None
    init_pose_encoder: str | None = None  # a diffusers T2IAdapter dir, a PoseEncoder dir, or the official pose_encoder.pth
    pose_scale: float = 1.0
    gradient_checkpointing: bool = False


@dataclass
class Stage1ValidationConfig:
    every: int = 1000  # steps; 0: never
    prompts: list[str] = field(default_factory=lambda: ["a person dancing on a stage", "an astronaut standing in a field"])
    num_poses: int = 2  # skeletons taken from the first samples of the shards (fixed, stream start)
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 1234


@dataclass
class Stage1Config(TrainConfig):
    output_dir: str = "runs/stage1"
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    validation: Stage1ValidationConfig = field(default_factory=Stage1ValidationConfig)

    def validate(self) -> None:
        if not self.data.shards:
            raise ValueError("data.shards is required: a LAION-Pose output folder (pose-data build-laion-pose --output DIR)")
        super().validate()
        d, m, v = self.data, self.model, self.validation
        check_resolution("data.resolution", d.resolution, "VAE factor 8 x pose-encoder levels")
        check_data_and_validation(d, v)
        check_number("model.pose_scale", m.pose_scale)
        check_int("validation.num_poses", v.num_poses, 1)


PRESETS = ("stage1", "stage1-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``stage1``, ``stage1-tiny``) or a YAML path -> dict."""
    return load_preset_or_file(name_or_path, package="model", presets=PRESETS)
