"""The DDIM scheduler every sampler here uses (validation images and videos, fyp-generate), made from a base's noise
scheduler with its step count checked: a count the base's timesteps cannot take is a one-line ValueError before any
sampling, not an IndexError mid-way (SD's ``steps_offset`` 1 takes 1000 steps to timestep 1000, past 0..999)."""

from __future__ import annotations

from diffusers import DDIMScheduler


def _last_timestep(config, steps: int) -> int:
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(steps)
    return int(scheduler.timesteps.max())


def ddim_scheduler(config, steps: int, device=None) -> DDIMScheduler:
    """A :class:`DDIMScheduler` from the noise scheduler ``config`` set to ``steps`` inference steps on ``device``;
    ValueError when ``steps`` is below 1 or would reach past the last training timestep."""
    scheduler = DDIMScheduler.from_config(config)
    train_steps = scheduler.config.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= train_steps:
        raise ValueError(f"num_inference_steps must be in [1, {train_steps}] (the scheduler's training steps), got {steps!r}")
    scheduler.set_timesteps(steps, device=device)
    last = int(scheduler.timesteps.max())
    if last >= train_steps:
        usable = next(n for n in range(steps - 1, 0, -1) if _last_timestep(config, n) < train_steps)
        raise ValueError(f"num_inference_steps {steps} would reach timestep {last}, past the scheduler's {train_steps} "
                         f"training timesteps (its steps_offset); use at most {usable}")  # fmt: skip
    return scheduler
