"""``fyp-train stage2``: the video layers of Follow Your Pose, trained on HD-VILA clip shards over a frozen SD 1.x.

The UNet is inflated (:mod:`model.nets.video_unet`) and only the parameters matching ``model.trainable`` train (the
official set by default: ``attn1.to_q``, ``attn2.to_q``, ``attn_temp``, ``conv_temporal``); everything else stays
bit-identical and the optimizer holds state for the trained parameters alone. As in the paper, stage 2 is pose-free:
the pose encoder is not applied at all (feeding zero skeletons would not be pose-free: the encoder's biases make
their features non-zero). The loop, checkpoints, exact resume and several processes are :mod:`model.training.trainer_core`'s.

Outputs: ``OUT/video_layers/`` (the added and trained weights alone, loadable onto any SD 1.x base),
``OUT/checkpoints/``, ``OUT/validation/step-NNNNNNN.gif``, ``OUT/logs/`` (TensorBoard), ``OUT/summary.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model.datasets.hdvila_clips import HdvilaClipStream
from model.datasets.shard_stream import resolve_shards
from model.nets.base_model import BaseModel, encode_images, encode_prompts, load_base_model
from model.nets.video_unet import VideoUNet
from model.training.noise_loss import noise_prediction_loss
from model.training.stage2_config import Stage2Config
from model.training.trainer_core import Trainer

log = logging.getLogger(__name__)


def video_diffusion_loss(base: BaseModel, model, batch: dict, *, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Noise (or v) prediction on clips ``pixel_values`` (b, f, 3, R, R): one timestep per clip, shared by its frames.

    ``model`` is the :class:`VideoUNet` (possibly wrapped by accelerate); ``base.unet`` is its inflated UNet.
    """
    unet, scheduler = base.unet, base.noise_scheduler
    frames = batch["pixel_values"]
    b, f = frames.shape[:2]
    with torch.no_grad():
        latents = encode_images(base, frames.flatten(0, 1).to(unet.device, unet.dtype))  # (b·f, 4, h, w)
        text = encode_prompts(base, batch["captions"]).to(unet.dtype)  # (b, 77, d)
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=latents.device)
    per_frame = timesteps.repeat_interleave(f)
    noisy = scheduler.add_noise(latents, noise, per_frame)
    pred = model(noisy, timesteps, text, num_frames=f)
    return noise_prediction_loss(scheduler, pred, latents, noise, per_frame, min_snr_gamma)


class Stage2Trainer(Trainer):
    """Stage 2 on the shared core. ``base`` holds the frozen SD parts; ``model`` is the :class:`VideoUNet`."""

    stage = "stage2"
    weight_folders = ("video_layers",)
    cfg: Stage2Config

    def check_inputs(self) -> None:
        resolve_shards(self.cfg.data.clips, member="clips")  # FileNotFoundError naming the data before any model loads
        init = self.cfg.model.init_video_layers
        if init is not None and not Path(init).exists():
            raise FileNotFoundError(f"model.init_video_layers {init}: no such file or folder")
        if init is not None:
            from model.nets.video_layers import check_video_layers

            check_video_layers(init)  # its config (every value bounded) and weights file, before the base model loads

    def build(self) -> torch.nn.Module:
        m = self.cfg.model
        self.base = load_base_model(m.base, dtype=self.weight_dtype, device=self.accelerator.device, revision=m.revision)
        if m.init_video_layers is None:
            model = VideoUNet(self.base.unet, m.video_layers())
        else:
            from model.nets.video_layers import load_video_unet

            model, _ = load_video_unet(self.base.unet, m.init_video_layers)
            model.pose_encoder = None  # stage 2 is pose-free
            # what the loaded layers trained stays part of the output, with what this run trains
            model.config.trainable = list(dict.fromkeys([*model.config.trainable, *m.trainable]))
        self.trained = model.select_trainable(m.trainable)
        for _, p in self.trained:
            p.data = p.data.float()  # trained weights stay fp32 under mixed precision (the optimizer's master copy)
        if m.gradient_checkpointing:
            self.base.unet.enable_gradient_checkpointing()
        model.check_processors()
        model.to(self.accelerator.device).train()
        self.trainable_parameters = sum(p.numel() for _, p in self.trained)
        total = sum(p.numel() for p in model.unet.parameters())
        log.info("stage 2 trains %d of %d UNet parameters (%.1f%%)", self.trainable_parameters, total, 100 * self.trainable_parameters / total)
        return model

    def extra_checkpoint_keys(self, model: torch.nn.Module) -> set[str]:
        return {f"unet.{name}" for name in model.video_layers_state_dict()}  # the frozen added layers too (small)

    def make_stream(self, *, start: dict, rank: int, world_size: int) -> HdvilaClipStream:
        d = self.cfg.data
        return HdvilaClipStream(
            d.clips, num_frames=d.num_frames, frame_stride=d.frame_stride, resolution=d.resolution,
            caption_dropout=d.caption_dropout, center_crop=d.center_crop, seed=self.cfg.seed,
            shuffle_buffer=d.shuffle_buffer, batch_size=self.cfg.batch_size, num_streams=d.num_streams, start=start,
            rank=rank, world_size=world_size,
        )  # fmt: skip

    def loss(self, batch: dict) -> torch.Tensor:
        model = self.accelerator.unwrap_model(self.model)
        model.check_processors()
        return video_diffusion_loss(self.base, self.model, batch, min_snr_gamma=self.cfg.optim.min_snr_gamma)

    def make_validator(self):
        from model.training.video_validation import VideoValidator

        return VideoValidator(self.cfg, self.base, self.out)

    def save_outputs(self) -> dict:
        from model.nets.video_layers import save_video_layers

        cfg = self.cfg
        model = self.accelerator.unwrap_model(self.model)
        folder = save_video_layers(
            model, self.out / "video_layers",
            frames={"num_frames": cfg.data.num_frames, "frame_stride": cfg.data.frame_stride, "resolution": cfg.data.resolution},
            base_model=cfg.model.base, base_revision=cfg.model.revision, init_video_layers=cfg.model.init_video_layers,
            steps=self.state.step,
        )  # fmt: skip
        total = sum(p.numel() for p in model.unet.parameters())
        return {"video_layers": str(folder), "trainable_parameters": self.trainable_parameters, "unet_parameters": total}


def train_stage2(cfg: Stage2Config) -> dict:
    """Run (or resume) stage 2; returns a summary (also written to ``output_dir/summary.json``)."""
    return Stage2Trainer(cfg).train()
