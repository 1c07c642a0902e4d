"""Benchmark of ``fyp-eval``'s peak memory against the size of the video it scores: peak RSS on a 64 x 64, a 1080p
and a 4K video of the same number of black frames (issue 18's case: a 4K video of 600 black frames is a file of
about 100 KB), scored with a tiny random CLIP (``fyp-train make-tiny-clip``) and the MediaPipe pose backend.

Each run is its own process, so its peak (max RSS) is its own; the 64 x 64 run is the floor (Python, torch, the
models). fyp-eval hands the frames to CLIP and the pose model a batch at a time as they are decoded, so a large video
should add about two batches of its frames to that floor, not all of them (``frames x width x height x 3`` bytes:
what holding every decoded frame costs, printed beside).

    .venv/bin/python bench/evaluate.py [--frames 600] [--batch-size 16] [--code DIR]

``--code DIR`` runs fyp-eval from another checkout (``PYTHONPATH=DIR``), e.g. an older one to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_timing import peak_memory  # noqa: E402 - the same peak memory as the other benchmarks

SIZES = {"64x64": (64, 64), "1080p": (1920, 1080), "4K": (3840, 2160)}


def run_variant(video: str, args) -> dict:
    """Score one video with fyp-eval in this process; its peak RSS and seconds."""
    from model.evaluation.cli import main as eval_main

    work = Path(video).parent
    lines = work / f"{Path(video).stem}.jsonl"
    lines.write_text(json.dumps({"video": video, "prompt": "a black frame"}) + "\n")
    started = time.perf_counter()
    code = eval_main([str(lines), "--output", str(work / f"eval-{Path(video).stem}"), "--clip-model", args.clip, "--pose-backend", "mediapipe",
                      "--device", "cpu", "--batch-size", str(args.batch_size), "--no-progress"])  # fmt: skip
    if code != 0:
        raise SystemExit(f"fyp-eval exited {code} on {video}")
    return {"peak_bytes": peak_memory("cpu"), "seconds": time.perf_counter() - started}


def write_black_video(path: Path, width: int, height: int, frames: int) -> Path:
    import numpy as np

    from pose_data.media.video_writer import write_video

    black = np.zeros((height, width, 3), np.uint8)
    return write_video((black for _ in range(frames)), path, 30.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16, help="fyp-eval --batch-size (frames per CLIP and per pose call)")
    ap.add_argument("--code", default=None, help="run fyp-eval from this checkout (PYTHONPATH) instead of this one")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, args)))
        return

    from model.nets.tiny_clip import make_tiny_clip

    code = str(Path(args.code).resolve()) if args.code else str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": code, "HF_HUB_OFFLINE": "1"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_tiny_clip(Path(tmp) / "tiny-clip", seed=0)  # what `fyp-train make-tiny-clip DIR` writes
        for name, (width, height) in SIZES.items():
            video = write_black_video(Path(tmp) / f"{name}.mp4", width, height, args.frames)
            cmd = [sys.executable, __file__, "--variant", str(video), "--clip", str(clip), "--batch-size", str(args.batch_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
            results[name] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "file_bytes": video.stat().st_size, "size": (width, height)}
    mib = 2**20
    floor = results["64x64"]["peak_bytes"]
    print(f"\nfyp-eval ({code}), {args.frames} black frames, --batch-size {args.batch_size}, tiny CLIP, MediaPipe, CPU")
    for name, r in results.items():
        width, height = r["size"]
        every_frame = args.frames * width * height * 3
        print(f"{name:>6}: file {r['file_bytes'] / 1024:8.0f} KiB  peak RSS {r['peak_bytes'] / mib:7.0f} MiB  "
              f"(+{(r['peak_bytes'] - floor) / mib:6.0f} MiB over 64x64)  ratio {r['peak_bytes'] / floor:5.2f}  "
              f"[all frames held: {every_frame / mib:7.0f} MiB]  {r['seconds']:6.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
