"""The layers stage 2 adds to every transformer block, and GroupNorm pooled over frames.

After the feed-forward of each ``BasicTransformerBlock`` (the official code's order):

1. ``norm_temp`` (LayerNorm) then ``attn_temp``: self-attention over the ``f`` frames at each spatial position, added
   as a residual. No positional embedding (as the official code). Its output projection starts at zero (weight and
   bias), so a fresh block returns its input exactly; the official code has that line commented out.
2. ``conv_temporal`` (optional; the official code's undocumented "LoRALinearLayer"): a residual pair of 1-D
   convolutions over frames at each position, ``c -> rank -> c``, kernel 3, padding 1, no bias; the down conv starts
   normal with std ``1/rank`` and the up conv at zero, so it too starts as the identity. As in the official code a
   rank larger than the channels is reduced to ``channels // 2``.

The names (``attn_temp``, ``norm_temp``, ``conv_temporal.down``, ``conv_temporal.up``) equal the official
checkpoint's, so its weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from torch import nn

from model.nets.frame_count import FrameCount


class TemporalConv(nn.Module):
    """``x + up(down(x))`` over ``(n, channels, frames)``; starts as the identity (``up`` is zero)."""

    def __init__(self, channels: int, rank: int = 160) -> None:
        super().__init__()
        if rank > channels:
            rank = channels // 2  # the official layer's rule
        self.down = nn.Conv1d(channels, rank, kernel_size=3, padding=1, bias=False)
        self.up = nn.Conv1d(rank, channels, kernel_size=3, padding=1, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        return self.up(self.down(x.to(self.down.weight.dtype))).to(dtype) + x


class VideoTransformerBlock(BasicTransformerBlock):
    """A diffusers ``BasicTransformerBlock`` followed by the temporal layers of the module doc.

    Made from an existing block by :func:`add_temporal_layers` (which changes the block's class in place, so every
    weight keeps its name and identity); ``super().forward`` is the image block, unchanged.
    """

    frames: FrameCount

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        hidden_states = super().forward(hidden_states, *args, **kwargs)  # (b·f, d, c), d = h·w tokens
        if self.attn_temp is None and self.conv_temporal is None:
            return hidden_states
        x = self.frames.split(hidden_states, "temporal attention")  # (b, f, d, c)
        b, f, d, c = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b * d, f, c)  # one sequence of f frames per position
        if self.attn_temp is not None:
            x = self.attn_temp(self.norm_temp(x)) + x
        if self.conv_temporal is not None:
            x = self.conv_temporal(x.transpose(1, 2)).transpose(1, 2)  # conv over frames: (b·d, c, f)
        return x.reshape(b, d, f, c).permute(0, 2, 1, 3).reshape(b * f, d, c)


def add_temporal_layers(block: BasicTransformerBlock, frames: FrameCount, *, attention: bool, conv_rank: int | None) -> None:
    """Turn ``block`` into a :class:`VideoTransformerBlock` in place, with fresh (identity) temporal layers."""
    if type(block) is not BasicTransformerBlock:
        raise ValueError(f"can only add temporal layers to a diffusers BasicTransformerBlock, got {type(block).__name__}")
    if block.norm_type != "layer_norm":
        raise ValueError(f"temporal layers support SD's layer_norm transformer blocks, got norm_type {block.norm_type!r}")
    dim, attn1 = block.norm1.normalized_shape[0], block.attn1
    param = block.attn1.to_q.weight
    block.__class__ = VideoTransformerBlock
    block.frames = frames
    block.norm_temp = block.attn_temp = block.conv_temporal = None
    if attention:
        block.norm_temp = nn.LayerNorm(dim).to(param.device, param.dtype)
        block.attn_temp = Attention(
            query_dim=dim, heads=attn1.heads, dim_head=dim // attn1.heads, bias=attn1.to_q.bias is not None,
            upcast_attention=attn1.upcast_attention,
        ).to(param.device, param.dtype)  # fmt: skip
        nn.init.zeros_(block.attn_temp.to_out[0].weight)
        nn.init.zeros_(block.attn_temp.to_out[0].bias)
    if conv_rank is not None:
        block.conv_temporal = TemporalConv(dim, conv_rank).to(param.device, param.dtype)


class FramePooledGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics pool all frames of a video (the official code normalises 5-D tensors so).

    Input and output ``(b·f, c, h, w)``; the statistics of each (video, group) cover ``c/g · f · h · w`` values, so a
    frame depends on every other frame of its video.
    """

    frames: FrameCount

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, frames: FrameCount) -> FramePooledGroupNorm:
        new = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        new.load_state_dict(norm.state_dict())
        new.frames = frames
        return new.to(norm.weight.device, norm.weight.dtype) if norm.affine else new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        video = self.frames.split(x, "GroupNorm across frames").transpose(1, 2)  # (b, c, f, h, w)
        out = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(x.shape)
