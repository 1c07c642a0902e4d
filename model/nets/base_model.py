"""The frozen Stable Diffusion 1.x base model both training stages and the sampler build on.

Follow Your Pose never trains the base model's VAE or text encoder, and stage 1 keeps the whole
UNet frozen too, so everything here is loaded frozen (``requires_grad_(False)``, ``eval()``); the
trainers unfreeze exactly the parameters they train.  The checkpoint is a diffusers-layout folder
or hub id (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``): a real SD 1.4/1.5
or the tiny random one from :mod:`model.nets.tiny_base`, through the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# "name" or "org/name" with hub-legal characters; anything else must be a local folder.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class BaseModel:
    """The five parts of an SD 1.x checkpoint, loaded frozen on one device."""

    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    noise_scheduler: Any  # diffusers.DDPMScheduler (the training noise schedule)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


def _is_local(path_or_hub_id: str) -> bool:
    """True when the string names a local folder, existing or not (hub ids are ``name`` or ``org/name``).

    A relative path that does not exist and looks like a hub id (``models/sd``) goes to the hub, as
    with ``from_pretrained`` itself.
    """
    if Path(path_or_hub_id).expanduser().exists():
        return True
    return path_or_hub_id.startswith(("/", ".", "~")) or "\\" in path_or_hub_id or not _HUB_ID.match(path_or_hub_id)


def check_local_base_model(path: str | Path) -> Path:
    """Raise FileNotFoundError naming the missing folder/subfolders of a local SD checkpoint."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"base model folder {str(root)!r} does not exist (expected a diffusers SD 1.x folder with {', '.join(SUBFOLDERS)})"
        )
    missing = [name for name in SUBFOLDERS if not (root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"base model folder {str(root)!r} lacks the subfolder(s) {', '.join(missing)} "
            f"(a diffusers SD 1.x folder has {', '.join(SUBFOLDERS)}; model/nets/tiny_base.py writes a tiny one)"
        )
    return root


def load_base_model(
    path_or_hub_id: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    revision: str | None = None,
) -> BaseModel:
    """Load UNet, VAE, text encoder, tokenizer and DDPM noise scheduler, all frozen and in eval mode.

    Each part comes from its own ``from_pretrained(path_or_hub_id, subfolder=...)``.  A local folder
    (or a missing one given as a path) is checked first and a missing folder or subfolder raises
    FileNotFoundError naming it; a hub id goes to the hub as usual.  The scheduler is read as a
    ``DDPMScheduler`` whatever class the checkpoint saved (SD 1.4 saves a PNDM config): training
    needs DDPM's ``add_noise`` with the checkpoint's betas.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = str(path_or_hub_id)
    local = _is_local(source)
    if local:
        source = str(check_local_base_model(source))
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", dtype=dtype, revision=revision)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", dtype=dtype, revision=revision)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, revision=revision)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", revision=revision)
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", revision=revision)
    except OSError as err:
        if local:
            raise
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise OSError(
            f"base model {source!r} could not be loaded from the Hugging Face hub ({first}); offline or a wrong id? "
            "Pass a local diffusers SD 1.x folder instead (model.base=DIR, or --base DIR; fyp-train make-tiny-base DIR "
            "writes a tiny one)"
        ) from None
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    return BaseModel(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, noise_scheduler=noise_scheduler)


@torch.no_grad()
def encode_prompts(base: BaseModel, prompts: list[str]) -> torch.Tensor:
    """Text embeddings for the UNet's cross-attention: (B, 77, hidden) ``last_hidden_state``.

    Tokenized to the tokenizer's ``model_max_length`` (77 for CLIP) with padding and truncation,
    as SD 1.x was trained.
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of strings, got {prompts!r}")
    tokens = base.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=base.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    input_ids = tokens.input_ids.to(base.text_encoder.device)  # (B, 77)
    return base.text_encoder(input_ids).last_hidden_state  # (B, 77, hidden)


@torch.no_grad()
def encode_images(base: BaseModel, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scaled VAE latents of images in [-1, 1]: (B, 3, H, W) -> (B, 4, H/8, W/8).

    ``latent_dist.sample(generator)`` times ``vae.config.scaling_factor`` (0.18215 for SD 1.x), the
    latents the UNet was trained on.  Pass a generator for reproducible samples.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    low, high = (float(v) for v in torch.aminmax(images.detach().float()))  # one pass, one sync
    if low < -1.001 or high > 1.001:
        raise ValueError(f"images must be scaled to [-1, 1], got values in [{low:.3g}, {high:.3g}]")
    vae = base.vae
    images = images.to(device=vae.device, dtype=vae.dtype)
    latents = vae.encode(images).latent_dist.sample(generator=generator)
    return latents * vae.config.scaling_factor
