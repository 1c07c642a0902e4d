"""Benchmark of one stage-2 training step against a bare forward + backward of the inflated UNet.

All at the same shapes (``--batch`` clips of ``--frames`` frames at ``--resolution``), on a randomly initialised
SD-1.x-layout model written with ``make_tiny_base`` (``--size sd`` gives the real SD 1.x sizes, for a GPU):

  * bare: the inflated UNet (video layers of the ``stage2`` preset) with *every* parameter trainable:
    ``model(noisy, t, text, f)`` -> MSE -> backward, no optimizer step (what fine-tuning the whole video UNet costs);
  * stage2: the trainer's step: VAE encode + text encode (no grad), the inflated UNet with only the preset's
    parameters trainable, noise-prediction loss, backward, AdamW step; with and without gradient checkpointing.

Each variant runs in its own process so its peak memory (max RSS on CPU, max allocated on CUDA) is its own. Prints
seconds per step, the ratio stage2 / bare (goal <= 1.1), the trainable parameters (count and share), the AdamW state
in bytes against full fine-tuning's (two fp32 moments per UNet parameter; goal <= 15 %), and the peak memory.

    .venv/bin/python bench/stage2_step.py [--size mid] [--resolution 128] [--frames 8] [--device cpu] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage1_step import SIZES  # noqa: E402 - the same model sizes as the stage-1 benchmark
from step_timing import time_steps  # noqa: E402


def run_variant(variant: str, base: str, resolution: int, frames: int, batch: int, steps: int, device: str, dtype: str) -> dict:
    import torch

    from model.nets.base_model import encode_prompts, load_base_model
    from model.nets.video_unet import VideoUNet
    from model.training.stage2 import video_diffusion_loss
    from model.training.stage2_config import Stage2Config, preset_or_file
    from pose_data.config import load_config

    torch.manual_seed(0)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    preset = load_config(Stage2Config, preset_or_file("stage2"), {"data": {"clips": "unused"}})
    base = load_base_model(base, dtype=torch_dtype, device=device)
    model = VideoUNet(base.unet, preset.model.video_layers()).to(device)
    clips = {"pixel_values": torch.rand(batch, frames, 3, resolution, resolution) * 2 - 1, "captions": ["a person dancing"] * batch}
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch_dtype, enabled=dtype != "fp32")
    optimizer = None
    if variant == "bare":
        model.requires_grad_(True).train()
        trainable = list(model.parameters())
        latent = resolution // 8
        noisy = torch.randn(batch * frames, 4, latent, latent, device=device, dtype=torch_dtype)
        text = encode_prompts(base, clips["captions"]).to(torch_dtype)

        def step():
            t = torch.randint(0, 1000, (batch,), device=device)
            pred = model(noisy, t, text, num_frames=frames)
            torch.nn.functional.mse_loss(pred.float(), torch.randn_like(pred, dtype=torch.float32)).backward()
            model.zero_grad(set_to_none=True)
    else:
        trainable = [p for _, p in model.select_trainable()]
        for p in trainable:
            p.data = p.data.float()
        if variant == "stage2-gc":
            base.unet.enable_gradient_checkpointing()
        model.train()
        optimizer = torch.optim.AdamW(trainable, lr=1e-5)

        def step():
            with autocast:
                loss = video_diffusion_loss(base, model, clips)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    seconds, peak = time_steps(step, steps, device)
    state_bytes = 0
    if optimizer is not None:
        state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return {
        "seconds": seconds, "peak_bytes": peak, "trainable": sum(p.numel() for p in trainable),
        "unet_parameters": sum(p.numel() for p in model.unet.parameters()), "optimizer_state_bytes": state_bytes,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="mid")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--variant", choices=("bare", "stage2", "stage2-gc"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:  # child process
        result = run_variant(args.variant, args.base, args.resolution, args.frames, args.batch, args.steps, args.device, args.dtype)
        print(json.dumps(result))
        return

    from model.nets.tiny_base import make_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_base(Path(tmp) / "base", **SIZES[args.size])
        results = {}
        for variant in ("bare", "stage2", "stage2-gc"):
            cmd = [sys.executable, __file__, "--variant", variant, "--base", str(base), "--size", args.size,
                   "--resolution", str(args.resolution), "--frames", str(args.frames), "--batch", str(args.batch),
                   "--steps", str(args.steps), "--device", args.device, "--dtype", args.dtype]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[variant] = json.loads(out)
    b, s, g = results["bare"], results["stage2"], results["stage2-gc"]
    full_state = 2 * 4 * b["unet_parameters"]  # AdamW: exp_avg + exp_avg_sq in fp32 for every UNet parameter
    mib = 2**20
    print(f"\nsize {args.size}, {args.batch} x {args.frames} frames of {args.resolution}^2, {args.device} {args.dtype}, {args.steps} timed steps")
    print(f"bare inflated UNet fwd+bwd (all trainable): {b['seconds']:7.3f} s/step  peak {b['peak_bytes'] / mib:8.0f} MiB")
    print(f"stage-2 training step:                      {s['seconds']:7.3f} s/step  peak {s['peak_bytes'] / mib:8.0f} MiB")
    print(f"stage-2 step, gradient checkpointing:       {g['seconds']:7.3f} s/step  peak {g['peak_bytes'] / mib:8.0f} MiB")
    print(f"ratio stage2 / bare: {s['seconds'] / b['seconds']:.2f}   (goal <= 1.1)")
    print(f"trainable: {s['trainable']:,} of {s['unet_parameters']:,} UNet parameters ({100 * s['trainable'] / s['unet_parameters']:.1f} %)")
    print(f"optimizer state: {s['optimizer_state_bytes'] / mib:.1f} MiB vs {full_state / mib:.1f} MiB for full fine-tuning "
          f"({100 * s['optimizer_state_bytes'] / full_state:.1f} %, goal <= 15 %)")  # fmt: skip


if __name__ == "__main__":
    main()
