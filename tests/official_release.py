"""The official Follow Your Pose release in miniature, made the way the real one was made.

The official stage-2 folder ``followyourpose_checkpoint-1000`` was written by ``accelerator.save_state`` in the
official training (``unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(...)``), its UNet holding
the inflated UNet's weights plus the pose encoder under ``skeleton_adapter.*`` (T2I-Adapter's original key names);
``pose_encoder.pth`` is that encoder's ``torch.save``d state dict. Here a tiny SD base plays SD 1.4, a module with
exactly the official key names plays the official UNet, and accelerate's real ``Accelerator.save_state`` (and
``save_model`` for sharded saves) writes the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from model.nets.pose_encoder import PoseEncoder
from model.nets.video_unet import VideoLayersConfig, VideoUNet


def official_adapter_keys(encoder: PoseEncoder) -> dict[str, torch.Tensor]:
    """PoseEncoder body weights under T2I-Adapter's original names (``conv_in``, ``body.{k}.*``)."""
    n = encoder.config.num_res_blocks
    out = {}
    for key, value in encoder.state_dict().items():
        parts = key.split(".")
        if parts[0] != "adapter":
            continue
        if parts[1] == "conv_in":
            out[key[len("adapter.") :]] = value
        elif parts[3] == "in_conv":
            out[f"body.{int(parts[2]) * n}.in_conv.{parts[4]}"] = value
        else:  # adapter.body.L.resnets.B.blockX.param
            out[f"body.{int(parts[2]) * n + int(parts[4])}.{parts[5]}.{parts[6]}"] = value
    return out


def randomize(module: nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def released_model(base: Path, seed: int = 21) -> tuple[VideoUNet, PoseEncoder, dict[str, torch.Tensor]]:
    """A "trained" official stage-2 model on ``base``: the inflated UNet (official settings) with every weight
    random, its pose encoder, and the state dict in the official release's key layout."""
    from diffusers import UNet2DConditionModel

    model = VideoUNet(UNet2DConditionModel.from_pretrained(base, subfolder="unet"), VideoLayersConfig.official())
    randomize(model.unet, seed)
    encoder = PoseEncoder.for_unet(model.unet)
    randomize(encoder.adapter, seed + 1)
    encoder.identity_output_convs()
    state = {k: v.clone() for k, v in model.unet.state_dict().items()}
    state.update({f"skeleton_adapter.{k}": v.clone() for k, v in official_adapter_keys(encoder).items()})
    return model.eval(), encoder.eval(), state


class OfficialLayoutUNet(nn.Module):
    """A module whose ``state_dict()`` has exactly the keys and tensors of ``state`` (the official UNet's names):
    what accelerate saves is then what the official training saved."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            *path, name = key.split(".")
            module: nn.Module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            module.register_parameter(name, nn.Parameter(value.detach().clone()))


def save_like_official_training(state: dict[str, torch.Tensor], folder: Path, *, safe_serialization: bool = True) -> Path:
    """``folder`` written by accelerate's ``save_state`` after ``prepare(unet, optimizer, lr_scheduler)``, as in the
    official training: the model file, ``optimizer.bin``, ``scheduler.bin``, ``random_states_0.pkl``."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    accelerator = Accelerator(cpu=True)
    model = OfficialLayoutUNet(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=1e-2)
    schedule = get_scheduler("constant", optimizer)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    accelerator.save_state(str(folder), safe_serialization=safe_serialization)
    accelerator.free_memory()
    return folder


def save_sharded(state: dict[str, torch.Tensor], folder: Path, *, safe_serialization: bool = True, max_shard_size: str = "200KB") -> Path:
    """The model saved in shards with their index by accelerate's ``save_model``."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    accelerator.save_model(OfficialLayoutUNet(state), str(folder), max_shard_size=max_shard_size, safe_serialization=safe_serialization)
    return folder


def official_checkpoints(root: Path, base: Path, state: dict[str, torch.Tensor], encoder: PoseEncoder) -> Path:
    """The official README's layout under ``root/checkpoints``: ``stable-diffusion-v1-4/`` (the tiny base),
    ``followyourpose_checkpoint-1000/`` (accelerate save_state, ``.bin`` as in the release's time) and
    ``pose_encoder.pth``."""
    checkpoints = root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base, checkpoints / "stable-diffusion-v1-4", dirs_exist_ok=True)
    save_like_official_training(state, checkpoints / "followyourpose_checkpoint-1000", safe_serialization=False)
    torch.save(official_adapter_keys(encoder), checkpoints / "pose_encoder.pth")
    return checkpoints


def official_example_video(path: Path, *, size: int = 512, seconds: float = 3.0, fps: int = 30) -> Path:
    """A stand-in for the official ``pose_example/vis_ikun_pose*.mov``: a person waving both arms, drawn by MMPose's
    visualiser on black (the project's ``mmpose`` style), MPEG-4 in a QuickTime container at 30 fps, with no tag."""
    import math

    import av
    import numpy as np

    from pose_data.pose.keypoints import PersonPose
    from pose_data.skeleton.render import render_skeleton

    # COCO-17 for a standing person facing the camera, in units of the frame (x, y)
    still = {0: (0.50, 0.18), 1: (0.52, 0.16), 2: (0.48, 0.16), 3: (0.54, 0.17), 4: (0.46, 0.17), 5: (0.58, 0.28), 6: (0.42, 0.28),
             11: (0.56, 0.55), 12: (0.44, 0.55), 13: (0.57, 0.70), 14: (0.43, 0.70), 15: (0.57, 0.86), 16: (0.43, 0.86)}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mov") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(round(seconds * fps)):
            angle = 0.9 * math.sin(2 * math.pi * i / fps)  # one wave a second
            points = dict(still)
            for side, shoulder in ((1, 5), (-1, 6)):
                sx, sy = still[shoulder]
                elbow = (sx + side * 0.12 * math.cos(angle), sy - 0.12 * math.sin(angle))
                points[7 if side == 1 else 8] = elbow
                points[9 if side == 1 else 10] = (elbow[0] + side * 0.10 * math.cos(2 * angle), elbow[1] - 0.10 * math.sin(2 * angle))
            keypoints = np.array([[points[k][0] * size, points[k][1] * size, 0.9] for k in range(17)], np.float32)
            person = PersonPose(bbox=(0.3 * size, 0.1 * size, 0.7 * size, 0.9 * size), score=0.9, keypoints=keypoints)
            frame = av.VideoFrame.from_ndarray(render_skeleton("mmpose", [person], size, size, 0.3), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
