"""Configuration of ``fyp-train stage2``: every default in one place; presets in ``model/configs/``."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.nets.video_unet import DEFAULT_TRAINABLE, VideoLayersConfig
from model.training.config import (
    TrainConfig,
    check_data_and_validation,
    check_int,
    check_number,
    check_resolution,
)
from pose_data.config import load_preset_or_file

#: The most frames of a training or validation clip, and the largest frame stride (the clips are seconds long).
MAX_FRAMES = 1024
MAX_FRAME_STRIDE = 1000


@dataclass
class Stage2DataConfig:
    clips: str = ""  # an index-hdvila output DIR (written with --write-clips), a folder of .tar, or a {..} pattern
    num_frames: int = 8  # frames per training sample (paper 8, official code 12)
    frame_stride: int = 4  # take every k-th frame of the clip (official 4); for --frames shards, of the stored frames
    resolution: int = 512
    center_crop: bool = True  # False: random crop (one crop for all frames of a clip)
    caption_dropout: float = 0.0  # captions replaced by "" (the official code drops none)
    num_streams: int = 64  # virtual streams of whole shards (fixed for a run): see model/datasets/shard_stream.py
    shuffle_buffer: int = 10  # clips per stream (a process holds up to num_streams / processes of these buffers)
    num_workers: int = 0  # DataLoader workers; any number gives the same batches in the same order


@dataclass
class Stage2ModelConfig:
    base: str = "CompVis/stable-diffusion-v1-4"  # diffusers-layout SD 1.x: local path or hub id
    revision: str | None = None
    attention: str = "sparse_causal"  # cross-frame attention: sparse_causal, first_frame, full, none
    group_norm: str = "per_frame"  # or across_frames (the official code's)
    temporal_attention: bool = True
    conv_temporal: bool = False  # the official code's temporal Conv1d pair
    conv_temporal_rank: int = 160
    trainable: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))  # parameter-name patterns
    init_video_layers: str | None = None  # continue from a video_layers/ folder or the official stage-2 release
    gradient_checkpointing: bool = False

    def video_layers(self) -> VideoLayersConfig:
        return VideoLayersConfig(
            attention=self.attention, group_norm=self.group_norm, temporal_attention=self.temporal_attention,
            conv_temporal=self.conv_temporal, conv_temporal_rank=self.conv_temporal_rank, trainable=list(self.trainable),
        )  # fmt: skip


@dataclass
class Stage2ValidationConfig:
    every: int = 1000  # steps; 0: never
    prompts: list[str] = field(default_factory=lambda: ["a person dancing on a stage"])
    num_frames: int | None = None  # None: data.num_frames
    num_inference_steps: int = 50
    guidance_scale: float = 12.5
    seed: int = 1234
    fps: float = 8.0  # of the gif


@dataclass
class Stage2Config(TrainConfig):
    output_dir: str = "runs/stage2"
    batch_size: int = 1
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    model: Stage2ModelConfig = field(default_factory=Stage2ModelConfig)
    validation: Stage2ValidationConfig = field(default_factory=Stage2ValidationConfig)

    def validate(self) -> None:
        if not self.data.clips:
            raise ValueError("data.clips is required: an index-hdvila output folder written with --write-clips")
        super().validate()
        self.model.video_layers().validate("model")
        d, v = self.data, self.validation
        check_resolution("data.resolution", d.resolution, "VAE factor 8 x UNet levels")
        check_int("data.num_frames", d.num_frames, 1, MAX_FRAMES)
        check_int("data.frame_stride", d.frame_stride, 1, MAX_FRAME_STRIDE)
        check_data_and_validation(d, v)
        if v.num_frames is not None:
            check_int("validation.num_frames", v.num_frames, 1, MAX_FRAMES)
        check_number("validation.fps", v.fps, above=0, maximum=100)  # a GIF frame lasts at least 10 ms


PRESETS = ("stage2", "stage2-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``stage2``, ``stage2-tiny``) or a YAML path -> dict."""
    return load_preset_or_file(name_or_path, package="model", presets=PRESETS)
