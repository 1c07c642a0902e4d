"""Text (and a pose sequence) -> video of any length with the stage-2 model: DDIM with classifier-free guidance,
windows of T frames advancing by T/2 whose predictions are averaged where they overlap.

What the code does, exactly (``sample_video``):

1. One initial noise for the whole video, ``(b, N, c, h, w)``, drawn on the CPU from ``generator`` (scaled by
   the scheduler's ``init_noise_sigma``). A window is a slice of it, so window k+1 starts, for its first T/2
   frames, from the very noise of window k's last T/2 frames: the paper's noise reuse (Sec. 3.4: the noise of
   the last T/2 frames of one clip is the prior of the next), which the official code does not have.
2. Windows start at 0, T/2, T, ... (hop ``T // 2``); the last one is moved back to end at the last frame, so
   every window has T frames and every frame is in one or two windows (three where the moved-back last window
   overlaps more). ``N <= T`` is one window of N frames: exactly the single-window sampler.
3. At every DDIM step each window goes through the UNet on its own (conditional and unconditional halves in one
   batched call, its slice of the pose in both halves, as the official pipeline), and its guided noise
   prediction is added into a video-sized buffer. Each frame's prediction is the mean over the windows that
   hold it, and one DDIM step moves the whole video's latents.

Why: a frame in an overlap has one latent, never two versions to reconcile, so the overlapping frames are
consistent at every step, and every window sees, through cross-frame and temporal attention, frames that its
neighbour is denoising too, which ties consecutive windows together (MultiDiffusion-style co-denoising). With
DDIM (eta 0) a step is linear in the noise prediction, so averaging the predictions equals averaging the
windows' own DDIM steps. The cost is that of ``2N/T - 1`` windows per step, about twice one pass over N frames.
Memory: the UNet only ever sees one window (2T frames with guidance) at a time and the VAE decodes
``decode_chunk`` frames at a time onto the CPU, so beyond the latents of the whole video (and its pose frames,
kept on the CPU) memory does not grow with N.
"""

from __future__ import annotations

import torch

from model.generation.ddim_schedule import ddim_scheduler
from model.nets.base_model import BaseModel, encode_prompts
from model.nets.video_unet import VideoUNet


def window_starts(num_frames: int, window: int) -> list[int]:
    """First frame of each window (module doc, point 2). ``window >= 2``; ``[0]`` when ``num_frames <= window``."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if window < 2:
        raise ValueError(f"the window must hold at least 2 frames (it advances by window // 2), got {window}")
    if num_frames <= window:
        return [0]
    hop = window // 2
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


@torch.no_grad()
def decode_latents(base: BaseModel, latents: torch.Tensor, chunk: int = 8, output_type: str = "float") -> torch.Tensor:
    """Latents ``(n, 4, h, w)`` -> images on the CPU, ``chunk`` frames per VAE call (device memory stays that of
    ``chunk`` frames whatever ``n``): ``(n, 3, 8h, 8w)`` in [0, 1] (``output_type="float"``), or ``(n, 8h, 8w, 3)``
    uint8 (``"uint8"``, converted chunk by chunk: a quarter of the float frames' memory)."""
    if output_type not in ("float", "uint8"):
        raise ValueError(f"output_type must be float or uint8, got {output_type!r}")
    vae = base.vae
    out = []
    for part in latents.split(chunk):
        images = ((vae.decode(part.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
        out.append(images if output_type == "float" else (images.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8))
    return torch.cat(out)


def _pose_window(poses: torch.Tensor, start: int, length: int, device, dtype) -> torch.Tensor:
    """(b, 3, N, H, W) on the CPU (uint8 0-255 or float in [0, 1]) -> the window's frames in [0, 1], twice (cond, uncond)."""
    part = poses[:, :, start : start + length].to(device)
    part = part.to(dtype) / 255.0 if part.dtype == torch.uint8 else part.to(dtype)
    return torch.cat([part, part])


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
    window: int | None = None,
    negative_prompts: list[str] | None = None,
    progress=None,
    decode_chunk: int = 8,
    output_type: str = "float",
) -> torch.Tensor:
    """``len(prompts)`` videos on the CPU (module doc): ``(b, N, 3, H, W)`` in [0, 1], or ``(b, N, H, W, 3)`` uint8
    with ``output_type="uint8"``.

    ``poses``: (b, 3, N, H, W), uint8 or in [0, 1], best left on the CPU (each window's slice is moved to the
    device when used). ``window``: T (default: all N frames in one window). ``negative_prompts``: the
    unconditional text (default ""). ``progress``: anything with ``update(n)`` (a tqdm bar), advanced once per
    window and step.
    """
    model.check_processors()
    device, dtype = model.unet.device, model.unet.dtype
    b, n = len(prompts), num_frames
    negative_prompts = [""] * b if negative_prompts is None else list(negative_prompts)
    if len(negative_prompts) != b:
        raise ValueError(f"{b} prompts but {len(negative_prompts)} negative prompts")
    if poses is not None and (poses.ndim != 5 or poses.shape[0] != b or poses.shape[2] < n):
        raise ValueError(f"poses must be (b, 3, N, H, W) = ({b}, 3, {n}, {height}, {width}), got {tuple(poses.shape)}")
    starts = window_starts(n, window or n)
    length = min(window or n, n)
    scheduler = ddim_scheduler(base.noise_scheduler.config, num_inference_steps, device)
    factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    shape = (b, n, model.unet.config.in_channels, height // factor, width // factor)
    latents = (torch.randn(shape, generator=generator) * scheduler.init_noise_sigma).to(device)  # fp32 throughout
    text = encode_prompts(base, [*prompts, *negative_prompts]).to(dtype)  # cond videos, then uncond
    coverage = torch.zeros(n, device=device)
    for s in starts:
        coverage[s : s + length] += 1
    coverage = coverage.view(1, n, 1, 1, 1)
    for t in scheduler.timesteps:
        prediction = torch.zeros_like(latents)
        for s in starts:
            x = latents[:, s : s + length].reshape(b * length, *shape[2:])
            x = scheduler.scale_model_input(torch.cat([x, x]), t).to(dtype)
            pose = None if poses is None else _pose_window(poses, s, length, device, dtype)
            cond, uncond = model(x, t, text, num_frames=length, pose=pose, pose_scale=pose_scale).float().chunk(2)
            prediction[:, s : s + length] += (uncond + guidance_scale * (cond - uncond)).reshape(b, length, *shape[2:])
            if progress is not None:
                progress.update(1)
        prediction /= coverage
        latents = scheduler.step(prediction.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample.view(shape)
    images = decode_latents(base, latents.flatten(0, 1), chunk=decode_chunk, output_type=output_type)
    return images.reshape(b, n, *images.shape[1:])
