"""Benchmark of ``fyp-generate``'s sampler: seconds per generated frame against a bare UNet forward per frame, and
peak memory for 8, 16 and 32 frames (it should stay flat beyond one window, the video's latents aside).

At the same shapes and steps, on a randomly initialised SD-1.x-layout model written with ``make_tiny_base``
(``--size sd`` gives the real SD 1.x sizes, for a GPU) with a pose encoder whose outputs are not zero:

  * bare: the 2D UNet alone, one forward of a guidance batch (2 x ``--window`` latents) per step, no pose, no VAE:
    ``steps x forward(2T) / T`` seconds per frame, the floor for any sampler with guidance;
  * generate N: ``FollowYourPosePipeline`` end to end (text encoding, pose encoder, inflated UNet with its video layers,
    windows of T frames advancing T/2, VAE decoding in chunks) for N frames.

Each run is its own process, so its peak memory (max RSS on CPU, max allocated on CUDA) is its own. The windowed
sampler passes each frame through about two windows, so the ratio to bare is about 2 plus the video layers' and the
pose encoder's share.

    .venv/bin/python bench/generate.py [--size mid] [--resolution 128] [--steps 10] [--window 8] [--device cpu] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage1_step import SIZES  # noqa: E402 - the same model sizes as the step benchmarks
from step_timing import peak_memory, synchronize  # noqa: E402


def run_variant(variant: str, root: str, frames: int, args) -> dict:
    import numpy as np
    import torch

    from model.follow_your_pose_pipeline import FollowYourPosePipeline

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = FollowYourPosePipeline.from_parts(f"{root}/base", f"{root}/pose_encoder", device=args.device, dtype=torch_dtype)
    size = args.resolution
    if variant == "bare":
        unet = pipe.base.unet
        latent = size // 8
        x = torch.randn(2 * args.window, 4, latent, latent, device=args.device, dtype=torch_dtype)
        text = torch.randn(2 * args.window, 77, unet.config.cross_attention_dim, device=args.device, dtype=torch_dtype)

        def run():
            with torch.no_grad():
                for t in range(args.steps):
                    unet(x, 999 - t * (1000 // args.steps), text, return_dict=False)

        frames_made = args.window
    else:
        poses = np.random.default_rng(0).integers(0, 255, (frames, size, size, 3), dtype=np.uint8)

        def run():
            pipe("a person dancing", poses, num_frames=frames, window=args.window, num_inference_steps=args.steps, seed=0, progress=False)

        frames_made = frames
    run()  # warm-up
    synchronize(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()
    synchronize(args.device)
    seconds = time.perf_counter() - start
    return {"seconds_per_frame": seconds / frames_made, "seconds": seconds, "peak_bytes": peak_memory(args.device)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="mid")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args.root, args.frames[0], args)))
        return

    import torch

    from model.base_model import load_base_model
    from model.pose_encoder import PoseEncoder
    from model.tiny_base import make_tiny_base

    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_base(Path(tmp) / "base", **SIZES[args.size])
        torch.manual_seed(0)
        encoder = PoseEncoder.for_unet(load_base_model(base).unet)
        for conv in encoder.out_convs:
            torch.nn.init.normal_(conv.weight, std=0.02)
        encoder.save_pretrained(Path(tmp) / "pose_encoder")
        results = {}
        for variant, frames in [("bare", args.window), *(("generate", n) for n in args.frames)]:
            cmd = [sys.executable, __file__, "--variant", variant, "--root", tmp, "--frames", str(frames), "--size", args.size,
                   "--resolution", str(args.resolution), "--steps", str(args.steps), "--window", str(args.window),
                   "--device", args.device, "--dtype", args.dtype]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[(variant, frames)] = json.loads(out)
    mib = 2**20
    bare = results[("bare", args.window)]
    print(f"\nsize {args.size}, {args.resolution}^2, {args.steps} DDIM steps, window {args.window}, {args.device} {args.dtype}")
    print(f"bare 2D UNet, guidance batch:  {bare['seconds_per_frame']:7.3f} s/frame  peak {bare['peak_bytes'] / mib:8.0f} MiB")
    for n in args.frames:
        r = results[("generate", n)]
        print(f"generate {n:3d} frames:          {r['seconds_per_frame']:7.3f} s/frame  peak {r['peak_bytes'] / mib:8.0f} MiB  "
              f"ratio {r['seconds_per_frame'] / bare['seconds_per_frame']:.2f}  ({r['seconds']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
