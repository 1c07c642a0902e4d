"""``fyp-train stage1``: train the pose encoder on LAION-Pose over a frozen Stable Diffusion 1.x.

Only the pose encoder trains, with the plain noise-prediction loss (epsilon or v, from the
scheduler's config; optional min-SNR weighting). accelerate runs the loop: mixed precision,
gradient accumulation, several GPUs with ``accelerate launch``; checkpoints hold the encoder,
optimizer, LR schedule, RNG states, the step and the data position, so ``resume=latest``
continues exactly where the run stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from model.base_model import BaseModel, encode_images, encode_prompts, load_base_model
from model.checkpointing import TrainingState, checkpoint_dir, prune_checkpoints, resolve_resume
from model.laion_pose_dataset import LaionPoseStream, collate
from model.pose_encoder import PoseEncoder
from model.stage1_config import Stage1Config
from pose_data.config import to_dict

log = logging.getLogger(__name__)


def load_pose_encoder(init: str | None, unet) -> PoseEncoder:
    """A fresh encoder sized for ``unet`` (zero-initialised outputs: the UNet starts unchanged), or
    weights from a PoseEncoder / diffusers T2IAdapter folder or the official ``pose_encoder.pth``."""
    if init is None:
        return PoseEncoder.for_unet(unet)
    path = Path(init)
    if path.is_file():
        return PoseEncoder.from_official_state_dict(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"--init-pose-encoder {init}: neither a .pth state dict nor a folder with config.json")
    if json.loads(config.read_text()).get("_class_name") == "T2IAdapter":
        return PoseEncoder.from_t2i_adapter(path)
    return PoseEncoder.from_pretrained(path)


def snr(noise_scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def diffusion_loss(base: BaseModel, encoder, batch: dict, *, pose_scale: float, min_snr_gamma: float | None) -> torch.Tensor:
    """The stage-1 objective on one batch: noise (or v) prediction of the frozen UNet with pose residuals."""
    unet, scheduler = base.unet, base.noise_scheduler
    dtype = unet.dtype
    with torch.no_grad():
        latents = encode_images(base, batch["pixel_values"].to(unet.device, dtype))
        text = encode_prompts(base, batch["captions"]).to(dtype)
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    residuals = [r.to(dtype) for r in encoder(batch["pose"].to(unet.device), pose_scale=pose_scale)]
    pred = unet(noisy, timesteps, text, down_intrablock_additional_residuals=residuals).sample
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
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


class Stage1Trainer:
    """Builds everything in ``__init__`` (resuming when asked); ``train()`` runs the loop.

    Attributes a caller (or a test) may inspect: ``base`` (frozen), ``encoder`` (trained),
    ``optimizer``, ``state`` (step and data position), ``accelerator``.
    """

    def __init__(self, cfg: Stage1Config) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed
        from diffusers.optimization import get_scheduler

        cfg.validate()
        self.cfg = cfg
        self.out = out = Path(cfg.output_dir).resolve()
        self.accelerator = accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        )
        set_seed(cfg.seed)
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        self.base = load_base_model(cfg.model.base, dtype=weight_dtype, device=accelerator.device, revision=cfg.model.revision)
        if cfg.model.gradient_checkpointing:
            self.base.unet.enable_gradient_checkpointing()
        encoder = load_pose_encoder(cfg.model.init_pose_encoder, self.base.unet).to(accelerator.device)
        encoder.train()
        o = cfg.optim
        optimizer = torch.optim.AdamW(
            encoder.parameters(), lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_epsilon, weight_decay=o.weight_decay
        )
        lr_schedule = get_scheduler(  # accelerate steps a prepared schedule once per process
            o.lr_schedule,
            optimizer,
            num_warmup_steps=o.warmup_steps * accelerator.num_processes,
            num_training_steps=cfg.max_steps * accelerator.num_processes,
        )
        self.encoder, self.optimizer, self.lr_schedule = accelerator.prepare(encoder, optimizer, lr_schedule)
        self.state = TrainingState()
        accelerator.register_for_checkpointing(self.state)
        resume_from = resolve_resume(out, cfg.resume)
        if resume_from is not None:
            accelerator.load_state(str(resume_from))
            log.info("resumed from %s at step %d (%d samples seen)", resume_from, self.state.step, self.state.samples)
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
            accelerator.init_trackers("stage1", config=_flat(to_dict(cfg)))
        from model.validation import Stage1Validator

        self.validator = Stage1Validator(cfg, self.base, out) if cfg.validation.every and accelerator.is_main_process else None
        stream = LaionPoseStream(
            cfg.data.shards,
            resolution=cfg.data.resolution,
            seed=cfg.seed,
            caption_dropout=cfg.data.caption_dropout,
            center_crop=cfg.data.center_crop,
            shuffle_buffer=cfg.data.shuffle_buffer,
            start=self.state.samples,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        # its own generator: creating the iterator must not draw from the global RNG, which the
        # checkpoint restores (the noise and timesteps of a resumed run come from it)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=cfg.batch_size, collate_fn=collate, num_workers=cfg.data.num_workers, generator=torch.Generator()
        )
        self.batches = iter(loader)

    def step(self) -> float:
        """One optimizer step (``gradient_accumulation_steps`` micro-batches); returns the mean loss."""
        cfg, accelerator = self.cfg, self.accelerator
        losses = []
        while True:
            batch = next(self.batches)
            with accelerator.accumulate(self.encoder):
                loss = diffusion_loss(self.base, self.encoder, batch, pose_scale=cfg.model.pose_scale, min_snr_gamma=cfg.optim.min_snr_gamma)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(self.encoder.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.lr_schedule.step()
                self.optimizer.zero_grad()
            self.state.samples += cfg.batch_size * accelerator.num_processes
            losses.append(float(accelerator.gather(loss.detach()).mean()))
            if accelerator.sync_gradients:
                self.state.step += 1
                return sum(losses) / len(losses)

    def train(self, until_step: int | None = None) -> dict:
        """Train to ``max_steps`` (or stop after ``until_step``, as a killed run would, for tests)."""
        cfg, accelerator, state = self.cfg, self.accelerator, self.state
        last = min(cfg.max_steps, until_step or cfg.max_steps)
        started, losses = time.time(), []
        while state.step < last:
            losses.append(self.step())
            if state.step % cfg.log_every == 0 or state.step == cfg.max_steps:
                accelerator.log({"loss": sum(losses) / len(losses), "lr": self.lr_schedule.get_last_lr()[0]}, step=state.step)
                log.info("step %d/%d loss %.4f", state.step, cfg.max_steps, sum(losses) / len(losses))
                losses = []
            if (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0) or state.step == cfg.max_steps:
                accelerator.save_state(str(checkpoint_dir(self.out, state.step)))
                if accelerator.is_main_process:
                    prune_checkpoints(self.out, cfg.checkpoints_total_limit)
            if self.validator is not None and (state.step % cfg.validation.every == 0 or state.step == cfg.max_steps):
                self.validator.run(accelerator, accelerator.unwrap_model(self.encoder), state.step)
        accelerator.wait_for_everyone()
        summary = {"steps": state.step, "samples": state.samples, "seconds": round(time.time() - started, 2)}
        if state.step >= cfg.max_steps and accelerator.is_main_process:
            accelerator.unwrap_model(self.encoder).save_pretrained(self.out / "pose_encoder")
            summary["pose_encoder"] = str(self.out / "pose_encoder")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        accelerator.end_training()
        return summary


def train_stage1(cfg: Stage1Config) -> dict:
    """Run (or resume) stage 1; returns a summary (also written to ``output_dir/summary.json``)."""
    return Stage1Trainer(cfg).train()


def _flat(d: dict, prefix: str = "") -> dict:
    """TensorBoard hparams want flat scalars."""
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            flat[key] = v
        else:
            flat[key] = str(v)
    return flat

