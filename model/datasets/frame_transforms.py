"""Resize-and-crop geometry shared by the image (stage 1) and video (stage 2) training samples."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image


def crop_box(width: int, height: int, resolution: int, rng: random.Random, center_crop: bool) -> tuple[int, int, int, int]:
    """Scale the shorter side to ``resolution``, then a ``resolution``-square crop: ``(new_w, new_h, x0, y0)``.

    One box for all frames of a clip (or for an image and its skeleton): draw it once, apply it to each.
    """
    scale = resolution / min(width, height)
    nw, nh = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    if center_crop:
        return nw, nh, (nw - resolution) // 2, (nh - resolution) // 2
    return nw, nh, rng.randint(0, nw - resolution), rng.randint(0, nh - resolution)


def apply_box(image: Image.Image, box: tuple[int, int, int, int], resolution: int, resample=Image.BICUBIC) -> Image.Image:
    nw, nh, x0, y0 = box
    return image.resize((nw, nh), resample).crop((x0, y0, x0 + resolution, y0 + resolution))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def cover_and_center_crop(image: Image.Image, width: int, height: int, resample=Image.NEAREST) -> Image.Image:
    """Scale ``image`` to cover ``width`` x ``height`` (keeping its aspect ratio), then cut out the centre.

    Skeletons use NEAREST, as stage 1 resizes its training skeletons: no blended colours at the limb edges.
    """
    scale = max(width / image.width, height / image.height)
    nw, nh = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return image.resize((nw, nh), resample).crop((x0, y0, x0 + width, y0 + height))
