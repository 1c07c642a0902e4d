"""Stage-1 training samples from LAION-Pose WebDataset shards (written by ``pose-data build-laion-pose``).

Each sample gives the image in [-1, 1], its skeleton in [0, 1] (the same resize and crop applied
to both), and the caption (dropped to "" with probability ``caption_dropout`` for classifier-free
guidance). The stream is deterministic for a seed: shard order and the shuffle buffer are seeded
per epoch, and the crop and caption dropout of sample ``n`` come from an RNG seeded by
``(seed, n)``. That makes the data position part of the training state: ``start`` skips the first
samples of the stream *before* decoding, so an exact resume costs a read of the skipped bytes,
not their decoding. With several processes, sample ``n`` goes to process ``n % world_size``.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def resolve_shards(shards: str) -> list[str]:
    """A LAION-Pose DIR (its manifest's shard list), a folder of .tar files, or a brace pattern."""
    path = Path(shards)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            listed = [str(path / s["shard"]) for s in json.loads(manifest.read_text())["shards"]]
        else:
            folder = path / "shards" if (path / "shards").is_dir() else path
            listed = sorted(str(p) for p in folder.glob("*.tar"))
        if not listed:
            raise FileNotFoundError(f"no .tar shards under {shards}")
        return listed
    import braceexpand

    listed = list(braceexpand.braceexpand(shards))
    missing = [s for s in listed if "://" not in s and not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"shard(s) not found: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return listed


@dataclass
class Stage1Sample:
    key: str
    pixel_values: torch.Tensor  # (3, res, res) in [-1, 1]
    pose: torch.Tensor  # (3, res, res) in [0, 1]
    caption: str


def resize_and_crop(image: Image.Image, resolution: int, rng: random.Random, center_crop: bool) -> tuple[Image.Image, tuple[int, int]]:
    """Resize the shorter side to ``resolution`` then crop a square; returns the crop origin too."""
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if center_crop:
        x0, y0 = (nw - resolution) // 2, (nh - resolution) // 2
    else:
        x0, y0 = rng.randint(0, nw - resolution), rng.randint(0, nh - resolution)
    return image.resize((nw, nh), Image.BICUBIC).crop((x0, y0, x0 + resolution, y0 + resolution)), (x0, y0)


def crop_pair(image: Image.Image, pose: Image.Image, resolution: int, rng: random.Random, center_crop: bool):
    """The same geometry for both; the skeleton is resized with nearest neighbour (keeps its colours)."""
    if pose.size != image.size:
        raise ValueError(f"skeleton size {pose.size} differs from image size {image.size}")
    cropped, (x0, y0) = resize_and_crop(image, resolution, rng, center_crop)
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    pose_c = pose.resize((nw, nh), Image.NEAREST).crop((x0, y0, x0 + resolution, y0 + resolution))
    return cropped, pose_c


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


class LaionPoseStream(torch.utils.data.IterableDataset):
    def __init__(
        self,
        shards: str,
        *,
        resolution: int,
        seed: int = 0,
        caption_dropout: float = 0.0,
        center_crop: bool = True,
        shuffle_buffer: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.urls = resolve_shards(shards)
        self.resolution, self.seed, self.caption_dropout = resolution, seed, caption_dropout
        self.center_crop, self.shuffle_buffer = center_crop, shuffle_buffer
        self.start, self.rank, self.world_size, self.epochs = start, rank, world_size, epochs

    def _raw(self, epoch: int) -> Iterator[dict]:
        """Undecoded samples of one epoch in the seeded order."""
        import webdataset as wds

        urls = list(self.urls)
        random.Random(self.seed * 1_000_003 + epoch).shuffle(urls)
        stream = wds.tarfile_to_samples()(iter([{"url": u} for u in urls]))
        if self.shuffle_buffer > 1:
            shuffle = wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=random.Random(self.seed + epoch))
            stream = shuffle(stream)
        yield from stream

    def raw_samples(self) -> Iterator[tuple[int, dict]]:
        """(global sample index, raw sample) over epochs, from ``start``."""
        n, epoch = 0, 0
        while self.epochs is None or epoch < self.epochs:
            got = False
            for raw in self._raw(epoch):
                got = True
                if n >= self.start and n % self.world_size == self.rank:
                    yield n, raw
                n += 1
            if not got:
                raise RuntimeError(f"the shards hold no sample: {self.urls[:3]}")
            epoch += 1

    def decode(self, n: int, raw: dict) -> Stage1Sample:
        rng = random.Random(hash((self.seed, n)))
        image = Image.open(io.BytesIO(raw["jpg"])).convert("RGB")
        pose = Image.open(io.BytesIO(raw["pose.png"])).convert("RGB")
        image, pose = crop_pair(image, pose, self.resolution, rng, self.center_crop)
        caption = raw["txt"].decode("utf-8")
        if rng.random() < self.caption_dropout:
            caption = ""
        return Stage1Sample(raw["__key__"], to_tensor(image) * 2.0 - 1.0, to_tensor(pose), caption)

    def __iter__(self) -> Iterator[Stage1Sample]:
        for n, raw in self.raw_samples():
            yield self.decode(n, raw)


def collate(samples: list[Stage1Sample]) -> dict:
    return {
        "keys": [s.key for s in samples],
        "pixel_values": torch.stack([s.pixel_values for s in samples]),
        "pose": torch.stack([s.pose for s in samples]),
        "captions": [s.caption for s in samples],
    }
