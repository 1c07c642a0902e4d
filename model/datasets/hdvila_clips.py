"""Stage-2 training samples from the clip shards of ``pose-data index-hdvila --write-clips``.

Both layouts of those shards are read: ``<key>.mp4`` (an H.264 clip) or ``<key>.000.jpg, <key>.001.jpg, ...``
(sampled frames, ``--frames``), each with ``<key>.txt`` (the caption, empty without ``--captions``) and ``<key>.json``.

A sample is ``num_frames`` frames taken ``frame_stride`` apart from the clip's frame sequence (the mp4's decoded
frames, or the JPEGs in order: for frame shards written with ``--stride s`` the step in source frames is
``s * frame_stride``), starting at a random offset; all frames get one resize-and-crop to ``resolution``. The pixels
are in [-1, 1] as ``(f, 3, R, R)``; the caption is dropped to "" with probability ``caption_dropout``. A clip with too
few frames, or one that fails to decode, is a failed sample with its reason (see :mod:`model.datasets.shard_stream`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import torch
from PIL import Image

from model.datasets.frame_transforms import apply_box, crop_box, to_tensor
from model.datasets.shard_stream import SampleError, ShardStream

_FRAME_KEY = re.compile(r"^(\d+)\.jpg$")


@dataclass
class ClipSample:
    key: str
    pixel_values: torch.Tensor  # (f, 3, res, res) in [-1, 1]
    caption: str


def _mp4_frames(data: bytes, wanted: list[int] | None = None):
    """Decode an mp4: the frame count (``wanted`` None), or the PIL images at the sorted indices ``wanted``."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            if wanted is None and stream.frames:
                return stream.frames
            images, count, targets = [], 0, set(wanted or [])
            for frame in container.decode(stream):
                if count in targets:
                    images.append(frame.to_image())
                count += 1
                if wanted is not None and len(images) == len(targets):
                    break
            return count if wanted is None else images
    except (av.error.FFmpegError, IndexError) as err:
        raise SampleError(f"the clip does not decode: {err}") from None


class HdvilaClipStream(ShardStream):
    """HD-VILA clip shards -> :class:`ClipSample` (see the module doc)."""

    member = "clips"

    def __init__(
        self,
        shards: str,
        *,
        num_frames: int,
        frame_stride: int = 1,
        resolution: int,
        caption_dropout: float = 0.0,
        center_crop: bool = True,
        **stream,
    ) -> None:
        super().__init__(shards, **stream)
        if num_frames < 1 or frame_stride < 1:
            raise ValueError(f"num_frames and frame_stride must be >= 1, got {num_frames}, {frame_stride}")
        self.num_frames, self.frame_stride, self.resolution = num_frames, frame_stride, resolution
        self.caption_dropout, self.center_crop = caption_dropout, center_crop

    @property
    def span(self) -> int:
        """Frames of the clip one sample covers."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def decode(self, n: int, raw: dict) -> ClipSample:
        rng = self.rng(n)
        jpgs = sorted((int(m.group(1)), k) for k in raw if (m := _FRAME_KEY.match(k)))
        total = len(jpgs) if jpgs else (_mp4_frames(raw["mp4"]) if "mp4" in raw else 0)
        if not total:
            raise SampleError("no mp4 and no numbered jpg frames in the sample (not an index-hdvila clip shard?)")
        if total < self.span:
            raise SampleError(
                f"clip has {total} frames, a sample needs {self.span} (num_frames {self.num_frames}, frame_stride {self.frame_stride})"
            )
        offset = rng.randint(0, total - self.span)
        indices = [offset + k * self.frame_stride for k in range(self.num_frames)]
        if jpgs:
            images = [Image.open(io.BytesIO(raw[jpgs[i][1]])).convert("RGB") for i in indices]
        else:
            images = [im.convert("RGB") for im in _mp4_frames(raw["mp4"], indices)]
            if len(images) != len(indices):
                raise SampleError(f"the clip decoded to fewer frames than its header says ({total})")
        box = crop_box(*images[0].size, self.resolution, rng, self.center_crop)
        frames = torch.stack([to_tensor(apply_box(im, box, self.resolution)) for im in images]) * 2.0 - 1.0
        caption = raw.get("txt", b"").decode("utf-8")
        if rng.random() < self.caption_dropout:
            caption = ""
        return ClipSample(raw["__key__"], frames, caption)

    def collate(self, samples: list[ClipSample]) -> dict:
        return {
            "keys": [s.key for s in samples],
            "pixel_values": torch.stack([s.pixel_values for s in samples]),  # (b, f, 3, R, R)
            "captions": [s.caption for s in samples],
        }
