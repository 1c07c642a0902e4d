"""Tiny models for the app's and fyp-generate's tests: a tiny SD base, a pose encoder with non-zero outputs (openpose
style) and video layers whose temporal attention is not the identity, saved as ``fyp-generate``/``fyp-app`` take them."""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 64  # the tiny pose encoder downscales by 16


def make_tiny_parts(root: Path) -> dict[str, str]:
    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base
    from model.nets.video_layers import save_video_layers
    from model.nets.video_unet import VideoLayersConfig, VideoUNet

    base = make_tiny_base(root / "tiny-sd", seed=0)
    unet = load_base_model(base).unet
    torch.manual_seed(0)
    encoder = PoseEncoder.for_unet(unet, skeleton_style="openpose")
    for conv in encoder.out_convs:
        torch.nn.init.normal_(conv.weight, std=0.05)
    encoder.save_pretrained(root / "pose_encoder")
    model = VideoUNet(unet, VideoLayersConfig())
    for name, p in model.unet.named_parameters():
        if "attn_temp.to_out" in name:
            torch.nn.init.normal_(p, std=0.05)
    save_video_layers(model, root / "video_layers")
    return {"base": str(base), "pose_encoder": str(root / "pose_encoder"), "video_layers": str(root / "video_layers")}
