"""Configuration of ``fyp-train stage1``: every default in one place; presets in ``model/configs/``."""

from __future__ import annotations

from dataclasses import dataclass, field

from pose_data.config import load_preset_or_file

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class Stage1DataConfig:
    shards: str = ""  # a LAION-Pose DIR, a folder of .tar shards, or a {00000..00009} pattern
    resolution: int = 512
    center_crop: bool = True  # False: random crop (same crop for image and skeleton)
    caption_dropout: float = 0.05  # captions replaced by "" for classifier-free guidance
    shuffle_buffer: int = 1000
    num_workers: int = 0  # DataLoader workers (0: in the training process; keeps resume exact)


@dataclass
class Stage1ModelConfig:
    base: str = "CompVis/stable-diffusion-v1-4"  # diffusers-layout SD 1.x: local path or hub id
    revision: str | None = None
    init_pose_encoder: str | None = None  # a diffusers T2IAdapter dir, a PoseEncoder dir, or the official pose_encoder.pth
    pose_scale: float = 1.0
    gradient_checkpointing: bool = False


@dataclass
class Stage1OptimConfig:
    learning_rate: float = 3e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    lr_schedule: str = "constant_with_warmup"
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    min_snr_gamma: float | None = None  # min-SNR loss weighting (5.0 is the usual value); None: plain loss


@dataclass
class Stage1ValidationConfig:
    every: int = 1000  # steps; 0: never
    prompts: list[str] = field(default_factory=lambda: ["a person dancing on a stage", "an astronaut standing in a field"])
    num_poses: int = 2  # skeletons taken from the first samples of the shards (fixed, stream start)
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 1234


@dataclass
class Stage1Config:
    output_dir: str = "runs/stage1"
    seed: int = 0
    max_steps: int = 100_000
    batch_size: int = 8  # per process
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    checkpoint_every: int = 1000  # steps; 0: only at the end
    checkpoints_total_limit: int | None = 3
    log_every: int = 10
    resume: str | None = None  # "latest" or a checkpoint folder
    data: Stage1DataConfig = field(default_factory=Stage1DataConfig)
    model: Stage1ModelConfig = field(default_factory=Stage1ModelConfig)
    optim: Stage1OptimConfig = field(default_factory=Stage1OptimConfig)
    validation: Stage1ValidationConfig = field(default_factory=Stage1ValidationConfig)

    def validate(self) -> None:
        if not self.data.shards:
            raise ValueError("data.shards is required: a LAION-Pose output folder (pose-data build-laion-pose --output DIR)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}")
        if self.optim.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"optim.lr_schedule {self.optim.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
        for name, value in (("max_steps", self.max_steps), ("batch_size", self.batch_size),
                            ("gradient_accumulation_steps", self.gradient_accumulation_steps),
                            ("data.resolution", self.data.resolution)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.data.resolution % 64:
            raise ValueError(f"data.resolution must be a multiple of 64 (VAE factor 8 x pose-encoder levels), got {self.data.resolution}")
        if not 0.0 <= self.data.caption_dropout <= 1.0:
            raise ValueError(f"data.caption_dropout must lie in [0, 1], got {self.data.caption_dropout}")


PRESETS = ("stage1", "stage1-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``stage1``, ``stage1-tiny``) or a YAML path -> dict."""
    return load_preset_or_file(name_or_path, package="model", presets=PRESETS)
