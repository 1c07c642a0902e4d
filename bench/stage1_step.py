"""Benchmark of one stage-1 training step against a bare diffusers UNet forward + backward.

Both at the same shapes, on a randomly initialised SD-1.x-layout model written with
``make_tiny_base`` (``--size sd`` gives the real SD 1.x UNet/VAE/CLIP sizes, for a GPU):

  * stage 1: the trainer's step: VAE encode + text encode (no grad), pose encoder, frozen UNet
    with the pose residuals, noise-prediction loss, backward into the encoder, AdamW step;
  * bare UNet: ``unet(noisy, t, text).sample`` -> MSE -> backward with the UNet's weights
    trainable (what fine-tuning the UNet costs), no optimizer step.

Each variant runs in its own process so its peak memory (max RSS on CPU, max allocated on CUDA)
is its own. Prints seconds per step, the ratio stage1 / bare (goal <= 1.1), peak memory and the
trainable-parameter count.

    .venv/bin/python bench/stage1_step.py [--size mid] [--resolution 256] [--batch 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_timing import time_steps  # noqa: E402 - the timing shared by the step benchmarks

SIZES = {  # make_tiny_base keyword arguments
    "tiny": dict(block_out_channels=(32, 64), cross_attention_dim=32),
    "mid": dict(block_out_channels=(64, 128, 256, 256), cross_attention_dim=256, layers_per_block=2, attention_head_dim=8,
                vae_block_out_channels=(32, 64, 128, 128), text_layers=4, text_heads=4),
    "sd": dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, layers_per_block=2, attention_head_dim=8,
               vae_block_out_channels=(128, 256, 512, 512), text_layers=12, text_heads=12),
}  # fmt: skip


def run_variant(variant: str, base: str, resolution: int, batch: int, steps: int, device: str, dtype: str) -> dict:
    import torch

    from model.nets.base_model import encode_prompts, load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.training.stage1 import diffusion_loss

    torch.manual_seed(0)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    model = load_base_model(base, dtype=torch_dtype, device=device)
    batch_data = {
        "pixel_values": torch.rand(batch, 3, resolution, resolution) * 2 - 1,
        "pose": torch.rand(batch, 3, resolution, resolution),
        "captions": ["a person dancing"] * batch,
    }
    if variant == "stage1":
        encoder = PoseEncoder.for_unet(model.unet).to(device)
        trainable = list(encoder.parameters())
        optimizer = torch.optim.AdamW(trainable, lr=1e-5)

        def step():
            with torch.autocast(device_type=device.split(":")[0], dtype=torch_dtype, enabled=dtype != "fp32"):
                loss = diffusion_loss(model, encoder, batch_data, pose_scale=1.0, min_snr_gamma=None)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    else:
        unet = model.unet.requires_grad_(True).train()
        trainable = list(unet.parameters())
        latent = resolution // 8
        noisy = torch.randn(batch, unet.config.in_channels, latent, latent, device=device, dtype=torch_dtype)
        text = encode_prompts(model, batch_data["captions"]).to(torch_dtype)

        def step():
            t = torch.randint(0, 1000, (batch,), device=device)
            pred = unet(noisy, t, text).sample
            torch.nn.functional.mse_loss(pred.float(), torch.randn_like(pred, dtype=torch.float32)).backward()
            unet.zero_grad(set_to_none=True)

    seconds, peak = time_steps(step, steps, device)
    return {"seconds": seconds, "peak_bytes": peak, "trainable": sum(p.numel() for p in trainable)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="mid")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--variant", choices=("stage1", "unet"), help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args.base, args.resolution, args.batch, args.steps, args.device, args.dtype)))
        return

    from model.nets.tiny_base import make_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_base(Path(tmp) / "base", **SIZES[args.size])
        results = {}
        for variant in ("unet", "stage1"):
            cmd = [sys.executable, __file__, "--variant", variant, "--base", str(base), "--size", args.size,
                   "--resolution", str(args.resolution), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--device", args.device, "--dtype", args.dtype]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[variant] = json.loads(out)
    u, s = results["unet"], results["stage1"]
    print(f"\nsize {args.size}, {args.resolution}x{args.resolution}, batch {args.batch}, {args.device} {args.dtype}, {args.steps} timed steps")
    print(f"bare UNet fwd+bwd (UNet trainable):  {u['seconds']:7.3f} s/step  peak {u['peak_bytes'] / 2**20:8.0f} MiB  trainable {u['trainable']:,}")
    print(f"stage-1 training step (encoder only): {s['seconds']:7.3f} s/step  peak {s['peak_bytes'] / 2**20:8.0f} MiB  trainable {s['trainable']:,}")
    print(f"ratio stage1 / bare UNet: {s['seconds'] / u['seconds']:.2f}   (goal <= 1.1)")


if __name__ == "__main__":
    main()
