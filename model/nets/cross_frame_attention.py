"""Cross-frame self-attention: the spatial self-attention (``attn1``) of an inflated UNet, as a diffusers processor.

Each frame's queries attend to keys and values taken from other frames of the same video, chosen by ``mode``:

- ``sparse_causal`` (Tune-A-Video's and the official Follow-Your-Pose choice; default): frame ``i`` attends to the
  tokens of frame 0 and of frame ``i-1`` (frame 0 attends to itself twice; the current frame ``i > 1`` is not among
  its keys). A frame never depends on later frames.
- ``first_frame``: every frame attends to frame 0.
- ``full``: every frame attends to all frames of its video.
- ``none``: every frame attends to itself, i.e. the image model.

The projections are the image model's ``to_q``, ``to_k``, ``to_v`` and ``to_out``: no new parameters. The attention
itself is ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.nets.frame_count import FrameCount

CROSS_FRAME_MODES = ("sparse_causal", "first_frame", "full", "none")


def check_mode(mode: str) -> str:
    if mode not in CROSS_FRAME_MODES:
        raise ValueError(f"cross-frame attention mode {mode!r} is not one of {', '.join(CROSS_FRAME_MODES)}")
    return mode


def cross_frame_tokens(x: torch.Tensor, mode: str, frames: FrameCount) -> torch.Tensor:
    """Keys or values ``(b·f, t, c)`` -> the tokens each frame attends to: ``(b·f, k·t, c)``.

    k = 2 for ``sparse_causal``, 1 for ``first_frame`` and ``none``, f for ``full``.
    """
    if mode == "none":
        return x
    per_video = frames.split(x, "cross-frame attention")  # (b, f, t, c)
    b, f, t, c = per_video.shape
    if mode == "first_frame":
        chosen = per_video[:, [0] * f]  # (b, f, t, c)
    elif mode == "sparse_causal":
        previous = [0] + list(range(f - 1))  # frame 0 -> 0, frame i -> i-1
        chosen = torch.cat([per_video[:, [0] * f], per_video[:, previous]], dim=2)  # (b, f, 2t, c)
    else:  # full: every frame sees all f frames' tokens
        chosen = per_video.reshape(b, 1, f * t, c).expand(b, f, f * t, c)  # (b, f, f·t, c)
    return chosen.reshape(b * f, -1, c)


class CrossFrameAttnProcessor:
    """Processor for an ``attn1`` (self-attention) of an inflated UNet; see the module doc for ``mode``."""

    def __init__(self, mode: str, frames: FrameCount) -> None:
        self.mode = check_mode(mode)
        self.frames = frames

    def __repr__(self) -> str:
        return f"CrossFrameAttnProcessor(mode={self.mode!r})"

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("cross-frame attention replaces a self-attention: it takes no encoder_hidden_states or mask")
        if attn.spatial_norm is not None or hidden_states.ndim != 3:
            raise ValueError("cross-frame attention expects (b·f, tokens, channels) hidden states and no spatial norm")
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        n = hidden_states.shape[0]
        query = attn.to_q(hidden_states)  # (b·f, t, inner)
        key = cross_frame_tokens(attn.to_k(hidden_states), self.mode, self.frames)  # (b·f, k·t, inner)
        value = cross_frame_tokens(attn.to_v(hidden_states), self.mode, self.frames)
        head_dim = query.shape[-1] // attn.heads
        # (b·f, tokens, heads·d) -> (b·f, heads, tokens, d)
        query = query.view(n, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(n, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(n, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(query.dtype)  # (b·f, t, inner)
        out = attn.to_out[1](attn.to_out[0](out))  # linear, dropout
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
