"""Stage-2 validation: the validation prompts -> a short video each, one GIF per step (rows: prompts) and the same
frames as an image in TensorBoard (rows: prompts, columns: frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.generation.sample_video import sample_video
from model.nets.base_model import BaseModel
from model.training.stage2_config import Stage2Config
from pose_data.media.video_writer import write_gif


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """(b, f, 3, H, W) in [0, 1] -> (f, b·H, W, 3) uint8: each frame stacks the videos vertically."""
    stacked = torch.cat(list(videos), dim=2)  # (f, 3, b·H, W)
    return (stacked.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)


class VideoValidator:
    def __init__(self, cfg: Stage2Config, base: BaseModel, out_dir: Path) -> None:
        self.cfg, self.base, self.out_dir = cfg, base, out_dir

    def run(self, accelerator, model, step: int) -> Path:
        v, d = self.cfg.validation, self.cfg.data
        was_training = model.training
        model.eval()
        videos = sample_video(
            model, self.base, list(v.prompts), num_frames=v.num_frames or d.num_frames, height=d.resolution,
            width=d.resolution, num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
            generator=torch.Generator().manual_seed(v.seed),
        )  # fmt: skip
        model.train(was_training)
        frames = to_uint8(videos)  # (f, b·H, W, 3)
        path = write_gif(frames, self.out_dir / "validation" / f"step-{step:07d}.gif", v.fps)
        tracker = accelerator.get_tracker("tensorboard", unwrap=True)
        if tracker is not None and hasattr(tracker, "add_image"):
            tracker.add_image("validation", np.concatenate(list(frames), axis=1), step, dataformats="HWC")
        return path
