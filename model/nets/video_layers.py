"""Saving and loading stage 2's result: the video layers alone, or the officially released stage-2 weights.

``video_layers/`` (written by ``fyp-train stage2``)::

    config.json                           {"format": "fyp-video-layers", "video_layers": VideoLayersConfig,
                                           "frames": {...}, "base_model": "...", ...}
    diffusion_pytorch_model.safetensors   every added weight (attn_temp, norm_temp, conv_temporal) and every
                                          trained one (attn1.to_q, attn2.to_q by default), under the UNet's names

It loads onto any SD 1.x UNet with the same block layout (:func:`load_video_unet`).

The official release (``checkpoints/followyourpose_checkpoint-1000/``, an accelerate ``save_state`` folder; every
form it comes in is found by :mod:`model.nets.official_weights`) holds the whole inflated UNet under the same names plus
the pose encoder under ``skeleton_adapter.*`` (T2I-Adapter's original key names). Only its model weights are read,
weights-only; every key must map onto the model, otherwise a ValueError lists them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from model.nets.official_weights import check_safetensors_header, find_release, looked_for, read_safetensors, read_state_dict
from model.nets.pose_encoder import PoseEncoder
from model.nets.video_unet import VideoLayersConfig, VideoUNet, is_video_layer
from pose_data.files.atomic import atomic_path
from pose_data.files.json_file import read_json

log = logging.getLogger(__name__)
FORMAT = "fyp-video-layers"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
OFFICIAL_POSE_PREFIX = "skeleton_adapter."


def save_video_layers(model: VideoUNet, folder: str | os.PathLike, **extra) -> Path:
    """Write ``folder/config.json`` and the weights (``extra`` goes into the config: frames, base model, ...)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.video_layers_state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(weights, str(tmp), metadata={"format": FORMAT})
    config = {"format": FORMAT, "format_version": 1, "video_layers": model.config.to_dict(), **extra}
    with atomic_path(folder / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_video_layers_config(folder: str | os.PathLike) -> dict:
    """``folder/config.json`` of a video-layers folder as a dict; FileNotFoundError when it is missing, ValueError
    naming the file when it is not a JSON object of this format."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"video layers folder {str(folder)!r} has no config.json")
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else f"a JSON {type(config).__name__}"
        raise ValueError(f"{path} is not a video-layers config (format {found!r}, expected {FORMAT!r})")
    return config


def video_layers_config_of(folder: str | os.PathLike) -> VideoLayersConfig:
    """The :class:`VideoLayersConfig` saved in ``folder/config.json``, every value checked (types, ranges: the rank is
    bounded before anything is allocated); ValueError naming the file and key."""
    path = Path(folder) / "config.json"
    config = read_video_layers_config(folder)
    if "video_layers" not in config:
        raise ValueError(f"{path}: no video_layers entry")
    return VideoLayersConfig.from_file(config["video_layers"], f"{path}: video_layers")


def check_video_layers(source: str | os.PathLike) -> None:
    """Check stage-2 weights at ``source`` without a UNet (before a base model is loaded): a video-layers folder's
    config (every value) and that its weights file is a readable safetensors file, or that the official release is
    there. The errors :func:`load_video_unet` would raise, sooner."""
    path = resolve_video_layers(source)
    if is_video_layers_folder(path):
        video_layers_config_of(path)
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"video layers folder {str(path)!r} has no {WEIGHTS_NAME}")
        check_safetensors_header(path / WEIGHTS_NAME)
    elif find_release(path) is None:
        raise FileNotFoundError(
            f"video layers {str(source)!r}: no stage-2 weights there; looked for config.json of a fyp-train stage2 "
            f"video_layers/ folder, or the official release: {looked_for()}"
        )


def is_video_layers_folder(path: str | os.PathLike) -> bool:
    """A folder written by :func:`save_video_layers` (its config.json says so)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def resolve_video_layers(source: str | os.PathLike) -> Path:
    """``source`` as given, or the ``video_layers/`` folder of a ``fyp-train stage2`` output folder given instead.

    FileNotFoundError when ``source`` does not exist; ValueError for a folder that holds this project's weights file
    (its safetensors metadata says so) but no readable config.json."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"video layers {str(source)!r}: no such folder or file")
    if is_video_layers_folder(path):
        return path
    if is_video_layers_folder(path / "video_layers"):
        log.info("video layers: %s is a fyp-train stage2 output folder; reading its video_layers/", path)
        return path / "video_layers"
    if _saved_here(path / WEIGHTS_NAME):
        raise ValueError(
            f"video layers folder {str(path)!r}: its config.json is missing or not a video-layers config, but "
            f"{WEIGHTS_NAME} was written by fyp-train stage2; restore the config.json saved with it"
        )
    return path


def _saved_here(file: Path) -> bool:
    """``file`` is a safetensors file written by :func:`save_video_layers` (its metadata names the format)."""
    if not file.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - an unreadable file is simply not ours
        return False


def load_video_unet(unet, source: str | os.PathLike, pose_encoder: PoseEncoder | None = None) -> tuple[VideoUNet, PoseEncoder | None]:
    """Inflate ``unet`` (a 2D SD UNet) and load stage-2 weights from ``source``.

    ``source``: a ``video_layers/`` folder, or the official release in any form (:func:`model.nets.official_weights.find_release`:
    the ``followyourpose_checkpoint-N`` accelerate folder, the ``checkpoints/`` folder above it, its model file or
    shard index). Returns the model and, for the official release, the pose encoder it holds (which then also
    becomes the model's pose encoder unless ``pose_encoder`` is given). ``model.weights_file`` names what was read.
    """
    path = resolve_video_layers(source)
    if not is_video_layers_folder(path):
        release = find_release(path)
        if release is None:
            raise FileNotFoundError(
                f"video layers {str(source)!r}: no stage-2 weights there; looked for config.json of a fyp-train stage2 "
                f"video_layers/ folder, or the official release: {looked_for()}"
            )
        log.info("video layers: reading the official release %s (%s)", release.where, release.layout)
        state = read_state_dict(release)
        above = release.files[0].parent.parent
        if (above / "model_index.json").is_file() and not any(is_video_layer(key) for key in state):
            raise ValueError(f"video layers {str(source)!r}: a Stable Diffusion folder (model_index.json, no video layers), not stage-2 weights: give it as --base")
        if state and all(key.startswith(("unet.", "pose_encoder.")) for key in state):  # VideoUNet's own names
            raise ValueError(
                f"video layers {release.where}: a fyp-train training checkpoint (it holds the trained weights alone, "
                "under the trainer's names), not stage-2 weights to sample with: use the run's video_layers/ folder "
                "(written when training ends), or resume the run with fyp-train stage2 --resume"
            )
        model = VideoUNet(unet, VideoLayersConfig.official(), pose_encoder)
        released_encoder = load_official_stage2(model, state, release.where)
        model.weights_file = release.where
        if pose_encoder is None:
            model.pose_encoder = released_encoder
        return model, released_encoder
    layers = video_layers_config_of(path)
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"video layers folder {str(path)!r} has no {WEIGHTS_NAME}")
    weights = read_safetensors(weights_path)  # before inflating: a cut or garbage file fails without touching `unet`
    model = VideoUNet(unet, layers, pose_encoder)
    _load_into_unet(model, weights, weights_path, strict=False)
    model.weights_file = str(weights_path)
    return model, None


def _missing_added_layers(model: VideoUNet, state: Mapping[str, torch.Tensor]) -> list[str]:
    return sorted(k for k in model.unet.state_dict() if is_video_layer(k) and k not in state)


def load_official_stage2(model: VideoUNet, state: Mapping[str, torch.Tensor], where: str | os.PathLike = "state dict") -> PoseEncoder | None:
    """Load the official stage-2 UNet state (every UNet key, strict) into ``model``; returns the pose encoder built
    from its ``skeleton_adapter.*`` keys (None when it has none)."""
    adapter = {k[len(OFFICIAL_POSE_PREFIX):]: v for k, v in state.items() if k.startswith(OFFICIAL_POSE_PREFIX)}
    unet_state = {k: v for k, v in state.items() if not k.startswith(OFFICIAL_POSE_PREFIX)}
    _load_into_unet(model, unet_state, where, strict=True)
    if not adapter:
        return None
    return PoseEncoder.from_official_state_dict(adapter, channels=tuple(model.unet.config.block_out_channels))


def _load_into_unet(model: VideoUNet, state: Mapping[str, torch.Tensor], where, *, strict: bool) -> None:
    """Load ``state`` into the inflated UNet by name; ValueError naming unexpected, mis-shaped (and, when strict,
    missing) keys."""
    own = model.unet.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    mis_shaped = sorted(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape)
    # the added layers must always be given: at their initial values they would silently make an image model
    missing = sorted(k for k in own if k not in state) if strict else _missing_added_layers(model, state)
    if unexpected or mis_shaped or missing:
        raise ValueError(
            f"{where}: weights do not fit the inflated UNet ({model.config.to_dict()}): unexpected {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}, wrong shapes {mis_shaped[:8]}, missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}"
        )
    model.unet.load_state_dict(dict(state), strict=False)
