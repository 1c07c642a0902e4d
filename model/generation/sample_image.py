"""Pose + text -> image with the stage-1 model (DDIM, classifier-free guidance): the validation sampler."""

from __future__ import annotations

import torch

from model.generation.ddim_schedule import ddim_scheduler
from model.nets.base_model import BaseModel, encode_prompts


@torch.no_grad()
def sample_images(
    base: BaseModel,
    pose_encoder,
    prompts: list[str],
    poses: torch.Tensor,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    pose_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``poses`` (n, 3, H, W) in [0, 1], one per prompt -> images (n, 3, H, W) in [0, 1].

    The pose residuals go to both halves of the guidance batch, as T2I-Adapter sampling does.
    """
    if len(prompts) != len(poses):
        raise ValueError(f"{len(prompts)} prompts but {len(poses)} poses")
    unet, vae = base.unet, base.vae
    device, dtype = unet.device, unet.dtype
    scheduler = ddim_scheduler(base.noise_scheduler.config, num_inference_steps, device)
    n, _, height, width = poses.shape
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.randn((n, unet.config.in_channels, height // factor, width // factor), generator=generator, device="cpu")
    latents = (latents * scheduler.init_noise_sigma).to(device, dtype)
    text = encode_prompts(base, [*prompts, *([""] * n)]).to(dtype)  # cond then uncond
    residuals = [r.to(dtype) for r in pose_encoder(poses.to(device, dtype), pose_scale=pose_scale)]
    residuals = [torch.cat([r, r]) for r in residuals]
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        noise = unet(model_in, t, text, down_intrablock_additional_residuals=list(residuals)).sample
        cond, uncond = noise.chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
    images = vae.decode(latents / vae.config.scaling_factor).sample
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
