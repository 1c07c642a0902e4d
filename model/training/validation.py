"""Stage-1 validation: fixed skeletons x fixed prompts -> a PNG grid and a TensorBoard image."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.datasets.laion_pose import LaionPoseStream
from model.generation.sample_image import sample_images
from model.nets.base_model import BaseModel
from model.training.stage1_config import Stage1Config
from pose_data.files.atomic import atomic_path


def image_grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """Rows of (3, H, W) tensors in [0, 1] -> one (rows*H, cols*W, 3) uint8 image."""
    lines = [torch.cat(row, dim=2) for row in rows]  # each (3, H, cols*W)
    grid = torch.cat(lines, dim=1)  # (3, rows*H, cols*W)
    return (grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)


class Stage1Validator:
    """Rows: the first ``num_poses`` skeletons of the shards; columns: the skeleton, then one image
    per validation prompt. Same seed at every step, and its own RNG (training's RNG is untouched)."""

    def __init__(self, cfg: Stage1Config, base: BaseModel, out_dir: Path) -> None:
        self.cfg, self.base, self.out_dir = cfg, base, out_dir
        stream = LaionPoseStream(cfg.data.shards, resolution=cfg.data.resolution, seed=cfg.seed, num_streams=cfg.data.num_streams, epochs=1)
        samples = list(itertools.islice(stream.samples(), cfg.validation.num_poses))
        if not samples:
            raise ValueError(f"validation: no sample in {cfg.data.shards}")
        self.poses = torch.stack([s.pose for s in samples])  # (n, 3, H, W) in [0, 1]

    def run(self, accelerator, encoder, step: int) -> Path:
        v = self.cfg.validation
        was_training = encoder.training
        encoder.eval()
        generator = torch.Generator().manual_seed(v.seed)
        rows = []
        for pose in self.poses:
            images = sample_images(
                self.base, encoder, list(v.prompts), pose.unsqueeze(0).repeat(len(v.prompts), 1, 1, 1),
                num_inference_steps=v.num_inference_steps, guidance_scale=v.guidance_scale,
                pose_scale=self.cfg.model.pose_scale, generator=generator,
            )  # fmt: skip
            rows.append([pose, *images.cpu()])
        encoder.train(was_training)
        grid = image_grid(rows)
        path = self.out_dir / "validation" / f"step-{step:07d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(grid).save(tmp, format="PNG")
        tracker = accelerator.get_tracker("tensorboard", unwrap=True)
        if tracker is not None and hasattr(tracker, "add_image"):
            tracker.add_image("validation", grid, step, dataformats="HWC")
        return path
