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

``--pose-sources``: peak memory against the size of the pose source instead. For each of ``--source-sizes`` (default
64x64, 1920x1080 and 3840x2160) a skeleton video of ``--pose-frames`` frames is written, and a process of its own does
what ``fyp-generate`` does with it: ``load_pose_frames`` (every frame, fitted to ``--resolution``), then the pipeline.
It prints the peak RSS after loading the poses and after generating, and their ratio to the 64x64 source's: memory
should follow the output size (the same for every source), not the source's (a 3840x2160 frame is 24 MiB).

    .venv/bin/python bench/generate.py --pose-sources [--pose-frames 64] [--source-sizes 64x64 1920x1080 3840x2160] [--size tiny]
                                       [--resolution 64] [--steps 2]
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

    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline

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


def run_pose_source(video: str, root: str, frames: int, args) -> dict:
    """fyp-generate's work on one pose source in this process: its peak RSS after loading the poses and after generating."""
    import torch

    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline
    from model.generation.pose_source import load_pose_frames

    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = FollowYourPosePipeline.from_parts(f"{root}/base", f"{root}/pose_encoder", device=args.device, dtype=torch_dtype)
    size = args.resolution
    start = time.perf_counter()
    poses = load_pose_frames(video, width=size, height=size, num_frames=frames, frame_stride=1, encoder_style=pipe.skeleton_style)
    loaded = {"peak_bytes": peak_memory("cpu"), "seconds": time.perf_counter() - start}
    pipe("a person dancing", poses.frames, num_frames=frames, height=size, width=size, window=args.window,
         num_inference_steps=args.steps, seed=0, progress=False)  # fmt: skip
    return {"load_peak_bytes": loaded["peak_bytes"], "load_seconds": loaded["seconds"], "peak_bytes": peak_memory("cpu"),
            "seconds": time.perf_counter() - start, "frames": int(poses.frames.shape[0])}  # fmt: skip


def write_skeleton_video(path: Path, width: int, height: int, frames: int) -> None:
    """``frames`` skeleton-like frames (coloured bars moving over black) at ``width`` x ``height``."""
    import numpy as np

    from pose_data.media.video_writer import Mp4Writer

    with Mp4Writer(path, 8, preset="ultrafast", comment={"format": "fyp-skeleton-video"}) as writer:
        for i in range(frames):
            frame = np.zeros((height, width, 3), np.uint8)
            x = (width // 8 + i * max(width // 64, 1)) % (width - width // 16)
            frame[height // 8 : height - height // 8, x : x + max(width // 32, 2)] = (255, 0, 85)
            frame[height // 2 : height // 2 + max(height // 32, 2), width // 8 : width - width // 8] = (0, 255, 170)
            writer.add(frame)


def pose_source_main(args) -> None:
    import torch

    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base

    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.source_sizes]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_base(Path(tmp) / "base", **SIZES[args.size])
        torch.manual_seed(0)
        PoseEncoder.for_unet(load_base_model(base).unet).save_pretrained(Path(tmp) / "pose_encoder")
        for width, height in sizes:
            video = Path(tmp) / f"skeleton_{width}x{height}.mp4"
            write_skeleton_video(video, width, height, args.pose_frames)
            cmd = [sys.executable, __file__, "--pose-source", str(video), "--root", tmp, "--frames", str(args.pose_frames),
                   "--size", args.size, "--resolution", str(args.resolution), "--steps", str(args.steps), "--window", str(args.window),
                   "--device", args.device, "--dtype", args.dtype]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[(width, height)] = json.loads(out)
    mib = 2**20
    first = results[sizes[0]]
    print(f"\nfyp-generate on a skeleton video of {args.pose_frames} frames: size {args.size}, output {args.resolution}^2, {args.steps} DDIM "
          f"steps, window {args.window}, {args.device} {args.dtype}; peak RSS of the whole process")  # fmt: skip
    for (width, height), r in results.items():
        print(f"source {width:4d}x{height:<4d}  poses loaded: peak {r['load_peak_bytes'] / mib:7.0f} MiB "
              f"(x{r['load_peak_bytes'] / first['load_peak_bytes']:.2f}, {r['load_seconds']:5.1f} s)   generated: peak "
              f"{r['peak_bytes'] / mib:7.0f} MiB (x{r['peak_bytes'] / first['peak_bytes']:.2f}, {r['seconds']:5.1f} s)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), help="default mid (tiny with --pose-sources)")
    ap.add_argument("--resolution", type=int, help="default 128 (64 with --pose-sources)")
    ap.add_argument("--steps", type=int, help="default 10 (2 with --pose-sources)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--pose-sources", action="store_true", help="peak memory against the pose source's size (module doc)")
    ap.add_argument("--source-sizes", nargs="+", default=["64x64", "1920x1080", "3840x2160"], metavar="WxH")
    ap.add_argument("--pose-frames", type=int, default=64)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--pose-source", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name, default, pose_default in (("size", "mid", "tiny"), ("resolution", 128, 64), ("steps", 10, 2)):
        if getattr(args, name) is None:
            setattr(args, name, pose_default if args.pose_sources else default)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args.root, args.frames[0], args)))
        return
    if args.pose_source:  # child process
        print(json.dumps(run_pose_source(args.pose_source, args.root, args.frames[0], args)))
        return
    if args.pose_sources:
        pose_source_main(args)
        return

    import torch

    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base

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
