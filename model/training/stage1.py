"""``fyp-train stage1``: train the pose encoder on LAION-Pose over a frozen Stable Diffusion 1.x.

Only the pose encoder trains, with the plain noise-prediction loss (epsilon or v, from the
scheduler's config; optional min-SNR weighting). The loop, checkpoints, exact resume, several
processes and bad-sample handling are the shared :mod:`model.training.trainer_core`.

The encoder records the skeleton style of the LAION-Pose it trains on (``openpose`` or ``mmpose``,
from its manifest); initialising from, or resuming, an encoder of another style is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from model.datasets.laion_pose import LaionPoseStream, skeleton_style_of
from model.datasets.shard_stream import resolve_shards
from model.nets.base_model import BaseModel, encode_images, encode_prompts, load_base_model
from model.nets.pose_encoder import PoseEncoder, locate_pose_encoder, official_encoder_file
from model.nets.pose_encoder import load_pose_encoder as load_pretrained_pose_encoder
from model.training.noise_loss import noise_prediction_loss
from model.training.stage1_config import Stage1Config
from model.training.trainer_core import Trainer
from pose_data.files.json_file import read_json

log = logging.getLogger(__name__)
RUN_INFO = "fyp_run.json"  # written into each checkpoint folder: what the checkpoint was trained on


def load_pose_encoder(init: str | None, unet, skeleton_style: str | None = None) -> PoseEncoder:
    """A fresh encoder sized for ``unet`` (zero-initialised outputs: the UNet starts unchanged), or the weights
    at ``init`` (see :func:`model.nets.pose_encoder.load_pose_encoder`)."""
    if init is None:
        return PoseEncoder.for_unet(unet, skeleton_style=skeleton_style)
    return load_pretrained_pose_encoder(init)


def check_style(found: str | None, wanted: str | None, what: str) -> None:
    if found is not None and wanted is not None and found != wanted:
        raise ValueError(
            f"{what} was trained on {found!r} skeletons but data.shards holds {wanted!r} skeletons: "
            "train on data of the same skeleton style (pose-data build-laion-pose --skeleton-style)"
        )


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
    return noise_prediction_loss(scheduler, pred, latents, noise, timesteps, min_snr_gamma)


class Stage1Trainer(Trainer):
    """Stage 1 on the shared core. ``base`` is the frozen SD model, ``encoder`` the trained pose encoder."""

    stage = "stage1"
    weight_folders = ("pose_encoder",)
    cfg: Stage1Config

    def check_inputs(self) -> None:
        resolve_shards(self.cfg.data.shards, member="shard")  # FileNotFoundError naming the data before any model loads
        self.skeleton_style = skeleton_style_of(self.cfg.data.shards)
        init = self.cfg.model.init_pose_encoder
        if init is not None and not Path(init).exists():
            raise FileNotFoundError(f"model.init_pose_encoder {init}: no such file or folder")
        if init is not None:
            locate_pose_encoder(init)  # its config (every size bounded) and weights file, before the base model loads

    def build(self) -> torch.nn.Module:
        cfg = self.cfg
        self.base = load_base_model(cfg.model.base, dtype=self.weight_dtype, device=self.accelerator.device, revision=cfg.model.revision)
        if cfg.model.gradient_checkpointing:
            self.base.unet.enable_gradient_checkpointing()
        encoder = load_pose_encoder(cfg.model.init_pose_encoder, self.base.unet, self.skeleton_style)
        init = cfg.model.init_pose_encoder
        if init is not None and official_encoder_file(init) and encoder.config.skeleton_style != self.skeleton_style and self.skeleton_style:
            # a .pth in T2I-Adapter's original layout: its style is the official encoder's, assumed, not recorded
            log.warning("%s is taken as the official encoder, trained on %r skeletons; continuing it on %r shards, it will "
                        "record %r", init, encoder.config.skeleton_style, self.skeleton_style, self.skeleton_style)  # fmt: skip
            encoder.register_to_config(skeleton_style=None)
        check_style(encoder.config.skeleton_style, self.skeleton_style, f"the pose encoder {init}")
        if encoder.config.skeleton_style is None and self.skeleton_style is not None:
            encoder.register_to_config(skeleton_style=self.skeleton_style)
        encoder.to(self.accelerator.device).train()
        return encoder

    def before_resume(self, checkpoint: Path) -> None:
        info = checkpoint / RUN_INFO
        if info.is_file():
            try:
                recorded = read_json(info)
            except ValueError as err:
                raise ValueError(f"{err}; resume another checkpoint") from None
            if not isinstance(recorded, dict) or not isinstance(recorded.get("skeleton_style"), (str, type(None))):
                raise ValueError(f"{info}: not what fyp-train writes there (an object with skeleton_style); resume another checkpoint")
            check_style(recorded.get("skeleton_style"), self.skeleton_style, f"the checkpoint {checkpoint}")

    def after_checkpoint(self, checkpoint: Path) -> None:
        (checkpoint / RUN_INFO).write_text(json.dumps({"stage": self.stage, "skeleton_style": self.skeleton_style}))

    @property
    def encoder(self):
        return self.model

    def make_stream(self, *, start: dict, rank: int, world_size: int) -> LaionPoseStream:
        d = self.cfg.data
        return LaionPoseStream(
            d.shards, resolution=d.resolution, caption_dropout=d.caption_dropout, center_crop=d.center_crop,
            seed=self.cfg.seed, shuffle_buffer=d.shuffle_buffer, batch_size=self.cfg.batch_size, num_streams=d.num_streams,
            start=start, rank=rank, world_size=world_size,
        )  # fmt: skip

    def loss(self, batch: dict) -> torch.Tensor:
        cfg = self.cfg
        return diffusion_loss(self.base, self.model, batch, pose_scale=cfg.model.pose_scale, min_snr_gamma=cfg.optim.min_snr_gamma)

    def make_validator(self):
        from model.training.validation import Stage1Validator

        return Stage1Validator(self.cfg, self.base, self.out)

    def save_outputs(self) -> dict:
        self.accelerator.unwrap_model(self.model).save_pretrained(self.out / "pose_encoder")
        return {"pose_encoder": str(self.out / "pose_encoder"), "skeleton_style": self.skeleton_style}


def train_stage1(cfg: Stage1Config) -> dict:
    """Run (or resume) stage 1; returns a summary (also written to ``output_dir/summary.json``)."""
    return Stage1Trainer(cfg).train()
