"""Stage-1 training samples from LAION-Pose WebDataset shards (written by ``pose-data build-laion-pose``).

Each sample gives the image in [-1, 1], its skeleton in [0, 1] (the same resize and crop applied
to both), and the caption (dropped to "" with probability ``caption_dropout`` for classifier-free
guidance). The stream (order, split by rank and DataLoader worker, exact resume, bad samples) is
:class:`model.datasets.shard_stream.ShardStream`'s.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from model.datasets.frame_transforms import apply_box, crop_box, to_tensor
from model.datasets.shard_stream import SampleError, ShardStream


def skeleton_style_of(shards: str) -> str | None:
    """The skeleton style a LAION-Pose output was rendered in (its manifest's config), None when unknown."""
    manifest = Path(shards) / "manifest.json"
    if not manifest.is_file():
        return None
    return (json.loads(manifest.read_text()).get("config") or {}).get("skeleton_style")


@dataclass
class Stage1Sample:
    key: str
    pixel_values: torch.Tensor  # (3, res, res) in [-1, 1]
    pose: torch.Tensor  # (3, res, res) in [0, 1]
    caption: str


def crop_pair(image: Image.Image, pose: Image.Image, resolution: int, rng: random.Random, center_crop: bool):
    """The same geometry for both; the skeleton is resized with nearest neighbour (keeps its colours)."""
    if pose.size != image.size:
        raise SampleError(f"skeleton size {pose.size} differs from image size {image.size}")
    box = crop_box(*image.size, resolution, rng, center_crop)
    return apply_box(image, box, resolution), apply_box(pose, box, resolution, Image.NEAREST)


class LaionPoseStream(ShardStream):
    """LAION-Pose shards -> :class:`Stage1Sample` (see the module doc)."""

    member = "shard"

    def __init__(self, shards: str, *, resolution: int, caption_dropout: float = 0.0, center_crop: bool = True, **stream) -> None:
        super().__init__(shards, **stream)
        self.resolution, self.caption_dropout, self.center_crop = resolution, caption_dropout, center_crop

    def decode(self, n: int, raw: dict) -> Stage1Sample:
        missing = [k for k in ("jpg", "pose.png", "txt") if k not in raw]
        if missing:
            raise SampleError(f"no {', '.join(missing)} in the sample (not a LAION-Pose shard?)")
        rng = self.rng(n)
        image = Image.open(io.BytesIO(raw["jpg"])).convert("RGB")
        pose = Image.open(io.BytesIO(raw["pose.png"])).convert("RGB")
        image, pose = crop_pair(image, pose, self.resolution, rng, self.center_crop)
        caption = raw["txt"].decode("utf-8")
        if rng.random() < self.caption_dropout:
            caption = ""
        return Stage1Sample(raw["__key__"], to_tensor(image) * 2.0 - 1.0, to_tensor(pose), caption)

    def collate(self, samples: list[Stage1Sample]) -> dict:
        return collate(samples)


def collate(samples: list[Stage1Sample]) -> dict:
    return {
        "keys": [s.key for s in samples],
        "pixel_values": torch.stack([s.pixel_values for s in samples]),
        "pose": torch.stack([s.pose for s in samples]),
        "captions": [s.caption for s in samples],
    }
