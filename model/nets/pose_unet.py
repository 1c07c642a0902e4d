"""A Stable Diffusion UNet guided by pose features: the stage-1 model of Follow Your Pose.

The pose encoder's features (one per down block) go into diffusers' ``down_intrablock_additional_residuals``:
each is added to the hidden states after the block's last resnet/attention pair, before its downsampler, and so
also reaches that block's last skip connection, as the official code's ``features_adapter`` does. Mid and up blocks
get nothing. (For a ``DownBlock2D`` diffusers adds the residual to the block's output in place; that is the same thing
for Stable Diffusion 1.x, whose only ``DownBlock2D`` is the last block and has no downsampler. Unlike the official
code, the residuals are also added under gradient checkpointing.)
In stage 1 only the pose encoder trains; freeze the UNet with ``unet.requires_grad_(False)``.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from model.nets.pose_encoder import PoseEncoder


class PoseGuidedUNet(nn.Module):
    """``unet`` (a diffusers ``UNet2DConditionModel``) plus ``pose_encoder`` (a ``PoseEncoder`` with one level per
    down block, channels equal to the UNet's ``block_out_channels``; None for a model that takes no pose)."""

    def __init__(self, unet: UNet2DConditionModel, pose_encoder: PoseEncoder | None):
        super().__init__()
        self.unet = unet
        self.pose_encoder = pose_encoder
        if pose_encoder is None:
            return
        unet_channels = tuple(unet.config.block_out_channels)
        encoder_channels = tuple(pose_encoder.config.channels)
        if unet_channels != encoder_channels or len(unet.down_blocks) != len(encoder_channels):
            raise ValueError(
                f"pose encoder channels {encoder_channels} must equal the UNet's block_out_channels {unet_channels}, "
                f"one level per down block ({len(unet.down_blocks)}); build it with PoseEncoder.for_unet(unet)"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        pose: torch.Tensor | None = None,
        pose_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's noise prediction (same shape as ``sample``).

        Args:
            sample: noisy latents (n, c, h, w).
            timestep: diffusion timestep(s), as for the UNet.
            encoder_hidden_states: text embeddings (n, tokens, cross_attention_dim).
            pose: None for the plain UNet; else skeleton images (n, 3, 8h, 8w) in [0, 1], or a pose sequence
                (b, 3, f, 8h, 8w) with b * f = n whose frames match the latents in ``(b f)`` order.
            pose_scale: multiplies every pose residual (0 reproduces the plain UNet exactly).
        """
        if pose is None:
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]
        if self.pose_encoder is None:
            raise ValueError("this model has no pose encoder: pass pose=None, or build it with a PoseEncoder")
        residuals = self.pose_encoder(pose, pose_scale)
        expected = (sample.shape[0], sample.shape[-2], sample.shape[-1])
        got = (residuals[0].shape[0], residuals[0].shape[-2], residuals[0].shape[-1])
        if got != expected:
            raise ValueError(
                f"pose features (n, h, w) = {got} do not match the latents' {expected}: the pose must be the latent "
                f"size times the encoder's downscale_factor ({self.pose_encoder.config.downscale_factor}) with one "
                "pose frame per latent"
            )
        # A new list of tensors in the UNet's dtype: diffusers pops residuals from the list it is given.
        residuals = [feature.to(dtype=self.unet.dtype) for feature in residuals]
        return self.unet(
            sample, timestep, encoder_hidden_states, down_intrablock_additional_residuals=residuals, return_dict=False
        )[0]
