"""Pose sequence + text -> video: the Follow-Your-Pose sampler as one object, in diffusers' style.

    pipe = FollowYourPosePipeline.from_parts("runwayml/stable-diffusion-v1-5", pose_encoder="out/stage1",
                                            video_layers="out/stage2/video_layers", device="cuda", dtype=torch.float16)
    video = pipe("an astronaut dancing on the moon", pose_frames, num_frames=24, seed=0).frames  # (24, H, W, 3) uint8
    pipe.save_pretrained("my-pipeline")             # one folder ...
    pipe = FollowYourPosePipeline.from_pretrained("my-pipeline")   # ... that loads back as the same sampler

It holds the frozen SD 1.x parts (:class:`BaseModel`) and the stage-2 :class:`VideoUNet` (the inflated UNet with
the stage-1 pose encoder). Sampling is :func:`model.generation.sample_video.sample_video`: DDIM, classifier-free guidance in
one batched UNet call, windows of ``window`` frames advancing by half a window for videos of any length.

It is not a ``diffusers.DiffusionPipeline``: the inflated UNet is not a diffusers class, and its saved form is the
base UNet plus the ``video_layers/`` of stage 2. A saved folder::

    fyp_pipeline.json     {"format": "fyp-pipeline", "sources": {base, pose_encoder, video_layers}, ...}
    unet/ vae/ text_encoder/ tokenizer/ scheduler/   the SD 1.x parts (diffusers layout; unet/ holds the 2D
                          weights the video model uses, i.e. the base's with stage 2's trained projections)
    pose_encoder/         the PoseEncoder (save_pretrained)
    video_layers/         the stage-2 layers (model.nets.video_layers), loaded onto unet/ when read back

``save_pretrained`` writes into a new or empty folder, or over a saved pipeline: there it replaces the pipeline's
own parts (the names above) and keeps anything else (a README, notes); any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.generation.ddim_schedule import ddim_scheduler
from model.generation.sample_video import sample_video, window_starts
from model.nets.base_model import BaseModel, load_base_model
from model.nets.pose_encoder import PoseEncoder, load_pose_encoder
from model.nets.video_layers import load_video_unet, save_video_layers
from model.nets.video_unet import VideoLayersConfig, VideoUNet, is_video_layer

FORMAT = "fyp-pipeline"
CONFIG_NAME = "fyp_pipeline.json"
#: The entries of a saved folder that are the pipeline's (replaced on save); anything else there is kept.
OWN_PARTS = (CONFIG_NAME, "unet", "vae", "text_encoder", "tokenizer", "scheduler", "pose_encoder", "video_layers")
#: Largest height and width sampled, pixels (SD 1.x: 512; 4096 is 64x its latent tokens per frame already).
MAX_SIZE = 4096


@dataclass
class VideoPipelineOutput:
    frames: np.ndarray  # (f, H, W, 3) uint8 RGB
    windows: list[tuple[int, int]]  # (first frame, frames) of each sampling window
    seed: int | None


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


class FollowYourPosePipeline:
    def __init__(self, base: BaseModel, model: VideoUNet, sources: dict | None = None) -> None:
        if model.unet is not base.unet:
            raise ValueError("the video model must be built on the base model's UNet")
        self.base, self.model = base, model
        self.sources = dict(sources or {})

    # --------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_parts(
        cls,
        base: str | os.PathLike,
        pose_encoder: str | os.PathLike | PoseEncoder | None = None,
        video_layers: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        revision: str | None = None,
    ) -> FollowYourPosePipeline:
        """``base``: an SD 1.x diffusers folder or hub id; ``pose_encoder``: a stage-1 output, PoseEncoder or
        T2IAdapter folder, or the official ``pose_encoder.pth`` (None: the one in the official stage-2 release, or
        none: text-only video); ``video_layers``: a stage-2 ``video_layers/`` folder or the official release (None:
        the video layers at their initial values)."""
        # the pose encoder's and the base's loaders name a missing input themselves; the video layers are read after
        # the base has loaded, so a missing folder is named before that
        if video_layers is not None and not Path(video_layers).exists():
            raise FileNotFoundError(f"video layers {str(video_layers)!r}: no such folder or file")
        encoder = pose_encoder if isinstance(pose_encoder, PoseEncoder) or pose_encoder is None else load_pose_encoder(pose_encoder)
        loaded = load_base_model(base, dtype=dtype, device=device, revision=revision)
        released = None
        if video_layers is None:
            model = VideoUNet(loaded.unet, VideoLayersConfig(), encoder)
        else:
            model, released = load_video_unet(loaded.unet, video_layers, encoder)
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        encoder_source = None if pose_encoder is None else str(getattr(pose_encoder, "name_or_path", pose_encoder))
        if encoder_source is None and released is not None:
            encoder_source = f"{video_layers} (its skeleton_adapter)"
        sources = {"base": str(base), "pose_encoder": encoder_source, "video_layers": None if video_layers is None else str(video_layers),
                   "video_layers_file": getattr(model, "weights_file", None)}  # fmt: skip
        return cls(loaded, model, sources)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> FollowYourPosePipeline:
        """Load a folder written by :meth:`save_pretrained`."""
        folder = Path(folder)
        if not is_pipeline_folder(folder):
            raise FileNotFoundError(f"{str(folder)!r} is not a saved Follow-Your-Pose pipeline (no {CONFIG_NAME})")
        config = json.loads((folder / CONFIG_NAME).read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{folder / CONFIG_NAME}: format {config.get('format')!r}, expected {FORMAT!r}")
        encoder = folder / "pose_encoder"
        pipe = cls.from_parts(folder, encoder if encoder.is_dir() else None, folder / "video_layers", device=device, dtype=dtype)
        pipe.sources = {**config.get("sources", {}), "pipeline": str(folder), "video_layers_file": pipe.sources["video_layers_file"]}
        return pipe

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the whole sampler to ``folder`` (layout in the module doc): a new or empty folder, or a saved
        pipeline, whose own parts are replaced (anything else in it is kept). The new folder is built beside it and
        swapped in whole, so an error leaves the old one as it was. FileExistsError for a file or a non-empty folder
        that is not a saved pipeline (nothing is written)."""
        from safetensors.torch import save_file

        folder = Path(folder).resolve()
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder} is a file, not a folder: save the pipeline to a new or empty folder")
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        if entries and not is_pipeline_folder(folder):
            raise FileExistsError(f"{folder} is not empty and not a saved Follow-Your-Pose pipeline (no {CONFIG_NAME}): nothing was written; "
                                  "save to a new or empty folder, or empty this one first")  # fmt: skip
        tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        swapped = False
        try:
            base = self.base
            base.unet.save_config(tmp / "unet")
            unet_2d = {k: v.detach().cpu().contiguous() for k, v in base.unet.state_dict().items() if not is_video_layer(k)}
            save_file(unet_2d, str(tmp / "unet" / "diffusion_pytorch_model.safetensors"))
            base.vae.save_pretrained(tmp / "vae")
            base.text_encoder.save_pretrained(tmp / "text_encoder")
            base.tokenizer.save_pretrained(tmp / "tokenizer")
            base.noise_scheduler.save_pretrained(tmp / "scheduler")
            if self.model.pose_encoder is not None:
                self.model.pose_encoder.save_pretrained(tmp / "pose_encoder")
            save_video_layers(self.model, tmp / "video_layers", base_model=self.sources.get("base"))
            config = {"format": FORMAT, "format_version": 1, "sources": self.sources, "skeleton_style": self.skeleton_style,
                      "video_layers": self.model.config.to_dict()}  # fmt: skip
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            # the saved folder's other files, copied (not moved: the old folder stays whole until the new one is in place)
            for path in (p for p in entries if p.name not in OWN_PARTS):
                if path.is_dir() and not path.is_symlink():
                    shutil.copytree(path, tmp / path.name, symlinks=True)
                else:
                    shutil.copy2(path, tmp / path.name, follow_symlinks=False)
            if folder.exists():
                os.replace(folder, old)
                try:
                    os.replace(tmp, folder)
                except BaseException:
                    os.replace(old, folder)  # put the old folder back
                    raise
            else:
                os.replace(tmp, folder)
            swapped = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if swapped:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.base.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.unet.dtype

    @property
    def skeleton_style(self) -> str | None:
        encoder = self.model.pose_encoder
        return None if encoder is None else encoder.config.skeleton_style

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the pose encoder's total downscale, or the VAE's x 8)."""
        encoder = self.model.pose_encoder
        vae_factor = 2 ** (len(self.base.vae.config.block_out_channels) - 1)
        return encoder.total_downscale_factor if encoder is not None else vae_factor * 2 ** (len(self.base.unet.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.base.unet.config.sample_size * 2 ** (len(self.base.vae.config.block_out_channels) - 1)

    # -------------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        pose_frames: np.ndarray | torch.Tensor | None = None,
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str = "",
        window: int = 8,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        pose_scale: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        progress: bool = True,
        on_step=None,
    ) -> VideoPipelineOutput:
        """One video following ``pose_frames``: (f, H, W, 3) uint8 RGB skeletons at the output size (``None``: a
        text-only video). ``num_frames`` defaults to all pose frames (8 without poses); ``seed`` seeds a CPU
        generator (or pass ``generator``); the same seed on the same device gives the same video."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        poses = None
        if pose_frames is not None:
            poses = torch.as_tensor(np.asarray(pose_frames))
            if poses.ndim != 4 or poses.shape[-1] != 3 or poses.dtype != torch.uint8:
                raise ValueError(f"pose_frames must be (f, H, W, 3) uint8 RGB, got {tuple(poses.shape)} {poses.dtype}")
            if self.model.pose_encoder is None:
                raise ValueError("this pipeline has no pose encoder: give one (--pose-encoder), or no pose frames")
            f, h, w, _ = poses.shape
            height, width = h if height is None else height, w if width is None else width
            if (h, w) != (height, width):
                raise ValueError(f"pose frames are {w}x{h} but the video is {width}x{height}: resize them first")
            num_frames = f if num_frames is None else num_frames
            if f < num_frames:
                raise ValueError(f"the pose has {f} frame(s) but num_frames is {num_frames}")
            poses = poses[:num_frames].permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, f, H, W) uint8, stays on the CPU
        num_frames = 8 if num_frames is None else num_frames
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        self.check_arguments(num_frames, height, width, window, num_inference_steps)
        if generator is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
        starts = window_starts(num_frames, window)
        length = min(window, num_frames)
        total = num_inference_steps * len(starts)
        with tqdm(total=total, unit="window-step", disable=not progress) as bar:
            video = sample_video(
                self.model, self.base, [prompt], num_frames=num_frames, height=height, width=width,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator,
                poses=poses, pose_scale=pose_scale, window=window, negative_prompts=[negative_prompt],
                progress=bar if on_step is None else _StepReport(bar, on_step, total),
                output_type="uint8",
            )  # fmt: skip
        return VideoPipelineOutput(video[0].numpy(), [(s, length) for s in starts], seed)

    def check_arguments(self, num_frames: int, height: int, width: int, window: int, steps: int) -> None:
        multiple = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value < multiple or value % multiple or value > MAX_SIZE:
                raise ValueError(f"{name} must be a positive multiple of {multiple} (the pose encoder's downscale) up to {MAX_SIZE}, got {value!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if window < 2:
            raise ValueError(f"window must be >= 2 frames, got {window}")
        ddim_scheduler(self.base.noise_scheduler.config, steps)  # ValueError for a step count the timesteps cannot take


class _StepReport:
    """A progress sink for :func:`sample_video`: advances the tqdm ``bar`` and calls ``on_step(done, total)``."""

    def __init__(self, bar, on_step, total: int) -> None:
        self.bar, self.on_step, self.total, self.done = bar, on_step, total, 0

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.done += n
        self.on_step(self.done, self.total)
