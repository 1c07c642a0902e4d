"""Text (and optionally a pose sequence) -> one window of video with the stage-2 model: DDIM with classifier-free
guidance in one batched UNet call, the VAE decoding a few frames at a time. Used by stage-2 validation."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from model.base_model import BaseModel, encode_prompts
from model.video_unet import VideoUNet


@torch.no_grad()
def decode_latents(base: BaseModel, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Latents ``(n, 4, h, w)`` -> images ``(n, 3, 8h, 8w)`` in [0, 1], ``chunk`` frames per VAE call (memory stays
    that of ``chunk`` frames whatever ``n``)."""
    vae = base.vae
    out = [vae.decode(part.to(vae.dtype) / vae.config.scaling_factor).sample.float() for part in latents.split(chunk)]
    return ((torch.cat(out) + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def sample_video(
    model: VideoUNet,
    base: BaseModel,
    prompts: list[str],
    *,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 12.5,
    generator: torch.Generator | None = None,
    poses: torch.Tensor | None = None,
    pose_scale: float = 1.0,
) -> torch.Tensor:
    """``len(prompts)`` videos ``(b, f, 3, H, W)`` in [0, 1]. ``poses`` (b, 3, f, H, W) in [0, 1] go to both guidance
    halves (as the official pipeline); the initial noise is drawn on the CPU from ``generator``."""
    model.check_processors()
    device, dtype = model.unet.device, model.unet.dtype
    b, f = len(prompts), num_frames
    scheduler = DDIMScheduler.from_config(base.noise_scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device=device)
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    latents = torch.randn((b * f, model.unet.config.in_channels, height // factor, width // factor), generator=generator)
    latents = (latents * scheduler.init_noise_sigma).to(device, dtype)
    text = encode_prompts(base, [*prompts, *([""] * b)]).to(dtype)  # cond videos, then uncond
    if poses is not None:
        poses = torch.cat([poses, poses]).to(device, dtype)
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        noise = model(model_in, t, text, num_frames=f, pose=poses, pose_scale=pose_scale)
        cond, uncond = noise.chunk(2)
        # under accelerate's mixed precision the prediction comes back fp32: keep the latents in the UNet's dtype
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample.to(dtype)
    images = decode_latents(base, latents)
    return images.reshape(b, f, *images.shape[1:])
