"""Benchmark of the captioning stage of ``pose-data index-hdvila --caption-model`` against a bare ``generate`` loop.

Clips of one of the bundled real videos are indexed with ``--write-clips`` and a captioner; the same frames the
indexer gave the captioner (the same clips, frames per clip and batch size) then go through a bare loop of the
captioner's own batch call (the processor, ``model.generate``, the tokens' decoding) in this process. It prints:
  * clips/s of the captioning stage inside index-hdvila: clips over the seconds the actors spent in their caption
    calls (batching, the processor, generate, decoding the tokens; measured inside the actor, after Ray has handed
    it the frames), and over the stage's span (first batch started to last batch ended: the handing over and the
    waits for decoding included);
  * clips/s of the bare loop, and the ratio stage / bare (goal >= 0.9).

    .venv/bin/python bench/caption_clips.py                        # a tiny random captioner on the CPU (offline)
    .venv/bin/python bench/caption_clips.py --tiny-hidden 256      # heavier: captioning is the slow step
    .venv/bin/python bench/caption_clips.py --device cuda --model HuggingFaceTB/SmolVLM2-2.2B-Instruct
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEO = REPO / "pose_data" / "sample_data" / "hdvila" / "bikes.mp4"


def metadata(path: Path, clips: int) -> None:
    """``clips`` one-second spans over the 10 s bundled video (they overlap when there are more than 9)."""
    starts = np.linspace(0.0, 8.5, clips)
    spans = [{"clip_id": f"bikes.{n}.mp4", "span": [f"00:00:{s:06.3f}", f"00:00:{s + 1:06.3f}"]} for n, s in enumerate(starts)]
    path.write_text(json.dumps({"video_id": "bikes", "url": "https://www.youtube.com/watch?v=bikes", "clip": spans}) + "\n")


def bare_loop(cfg, clips: list) -> float:
    """Seconds for the processor + ``generate`` + decoding the tokens over ``clips`` in batches, with nothing else around them, on as many
    threads as one captioning actor has."""
    import torch

    from pose_data.hdvila.captioner import VideoCaptioner

    torch.set_num_threads(max(1, int(cfg.worker_cpus)))  # what one captioning actor uses
    captioner = VideoCaptioner(cfg)
    batch = cfg.batch_size
    start = time.perf_counter()  # the first batch included, cold, as the actor's first batch is
    for i in range(0, len(clips), batch):
        captioner.caption_batch(clips[i : i + batch])  # the processor, generate and the tokens' decoding, nothing around
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="hub id or folder (default: a tiny random captioner made here)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--shard-size", type=int, default=8, help="clips per shard (one shard: decoding ends before captioning starts)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each; the best is reported")
    ap.add_argument("--tiny-hidden", type=int, default=32,
                    help="hidden size of the tiny captioner (larger: captioning, not decoding, is the slow step, as with a real model)")
    args = ap.parse_args(argv)

    from pipelines.hdvila_index import build_hdvila_index, clip_tables
    from pose_data.config import load_config
    from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file
    from pose_data.hdvila.metadata import metadata_files
    from pose_data.hdvila.shard import decode_shard

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from model.nets.tiny_captioner import make_tiny_captioner

            model = str(make_tiny_captioner(tmp / "tiny-captioner", hidden_size=args.tiny_hidden))
        metadata(tmp / "clips.jsonl", args.clips)
        caption = {"model": model, "device": args.device, "batch_size": args.batch_size, "frames": args.frames,
                   "max_tokens": args.max_tokens, "workers": 1}  # fmt: skip
        cfg = load_config(HdvilaIndexConfig, preset_or_file("tiny"), {"shard_size": args.shard_size, "preview_clips": 0, "caption": caption})
        if args.device.startswith("cuda"):
            cfg.caption.worker_gpus = 1
        runs = []  # (whole run s, the manifest's caption stage), best of --repeats: a 2-core machine is noisy
        for r in range(args.repeats):
            started = time.perf_counter()
            manifest = build_hdvila_index([str(tmp / "clips.jsonl")], str(VIDEO.parent), str(tmp / f"out{r}"), cfg, progress=False)
            runs.append((time.perf_counter() - started, manifest["timings"]["caption_stage"]))
        # the same frames for the bare loop: the clips decoded as the indexer's decode step does it
        rows = next(clip_tables(metadata_files([str(tmp / "clips.jsonl")]), {}, batch=args.clips))
        _decoded, frames = decode_shard(0, rows, {"bikes": str(VIDEO)}, cfg)
        bare = max(len(frames) / bare_loop(cfg.caption, frames) for _ in range(args.repeats))

    busy = max(stage["clips"] / stage["busy_s"] for _, stage in runs)
    span = max(stage["clips"] / stage["span_s"] for _, stage in runs)
    print(f"\n{runs[0][1]['clips']} one-second clips of {VIDEO.name} in shards of {args.shard_size}, {args.frames} frames each, batches of "
          f"{args.batch_size}, {args.max_tokens} tokens at most, {cfg.caption.model if args.model else f'tiny random captioner (hidden {args.tiny_hidden})'} "
          f"on {args.device}; best of {args.repeats}")  # fmt: skip
    print(f"index-hdvila, whole run (Ray start, decode, caption, write): {min(w for w, _ in runs):8.2f} s")
    print(f"captioning stage, actor busy time: {busy:8.2f} clips/s   over its span: {span:8.2f} clips/s")
    print(f"bare processor + generate loop:    {bare:8.2f} clips/s")
    print(f"ratio stage / bare: {busy / bare:.2f} (goal >= 0.9);  over the stage's span: {span / bare:.2f}")


if __name__ == "__main__":
    main()
