"""The training objective both stages share: the UNet's prediction against the scheduler's target (epsilon or v),
optionally min-SNR weighted."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def snr(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def noise_prediction_loss(scheduler, pred, latents, noise, timesteps, min_snr_gamma: float | None) -> torch.Tensor:
    """MSE of the UNet's prediction against the scheduler's target (epsilon or v), optionally min-SNR weighted per
    sample (``timesteps`` has one entry per row of ``latents``)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"scheduler prediction_type {prediction_type!r} is not epsilon or v_prediction")
    if min_snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    s = snr(scheduler, timesteps)
    weight = torch.clamp(s, max=min_snr_gamma) / (s + 1.0 if prediction_type == "v_prediction" else s)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_sample * weight).mean()
