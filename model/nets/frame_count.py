"""How many frames one video has in the ``(b·f, ...)`` batch that flows through an inflated UNet.

The inflated UNet is diffusers' ``UNet2DConditionModel`` with video layers added in place. Its 2D layers see the
frames of all videos as one image batch, ``(b·f, c, h, w)`` with the ``f`` frames of a video contiguous; the video
layers (cross-frame attention, temporal layers, GroupNorm pooled over frames) must know ``f`` to regroup them. All of
those layers hold one shared :class:`FrameCount`, which :class:`model.nets.video_unet.VideoUNet` sets at every forward.

Why a shared object rather than a forward argument: diffusers' blocks give their resnets no extra arguments, and
``cross_attention_kwargs`` would also reach the text cross-attention's stock processor, which warns about unknown
keys at every call. Gradient checkpointing recomputes a block during the backward pass of the same step, when the
count still holds the value of that step's forward.
"""

from __future__ import annotations

import torch


class FrameCount:
    """The frame count of the batch in flight (set by ``VideoUNet.forward``)."""

    def __init__(self, num_frames: int = 1) -> None:
        self.num_frames = num_frames

    def videos(self, batch: int, where: str) -> tuple[int, int]:
        """``(b, f)`` for a ``(b·f, ...)`` batch; ValueError naming ``where`` when it does not divide."""
        f = self.num_frames
        if f < 1 or batch % f:
            raise ValueError(f"{where}: a batch of {batch} frames is not a whole number of videos of {f} frames")
        return batch // f, f

    def split(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """``(b·f, ...)`` -> ``(b, f, ...)``."""
        b, f = self.videos(x.shape[0], where)
        return x.reshape(b, f, *x.shape[1:])
