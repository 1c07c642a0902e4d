"""Benchmark of ``pose-data index-hdvila`` against a bare PyAV loop on the same clip spans.

A long test video is generated with PyAV (H.264, 320x240, 25 fps, a keyframe every 2 s) and cut
into clip spans spread over its whole length. From one run on the same clips it prints:
  * clips/s and decoded frames/s of the indexer (Ray, one CPU, no clip writing: indexing only);
  * the same for a bare PyAV loop (open, seek to the keyframe before the span, decode to the end)
    over the same spans, and the ratio indexer / bare (goal >= 0.9);
  * frames decoded for a 1 s clip at the start vs at the end of the long video (offset independence).

    .venv/bin/python bench/hdvila_index.py [--minutes 5] [--clips 120]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pose_data.media.span_decoder import THREAD_TYPE


def make_video(path: Path, seconds: int, fps: int = 25, size: tuple[int, int] = (320, 240)) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(2 * fps), "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
        for i in range(seconds * fps):
            img = ((xx + 3 * i) % 256).astype(np.uint8)[..., None].repeat(3, axis=2)
            img[..., 1] = (yy + i) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def bare_decode(path: Path, start: float, end: float) -> int:
    """The plainest correct loop: seek to the keyframe before start, decode, count frames in [start, end)."""
    kept = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = THREAD_TYPE  # the indexer's setting (see pose_data/media/span_decoder.py)
        container.seek(int(start / stream.time_base), backward=True, any_frame=False, stream=stream)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base)
            if t >= end:
                break
            kept += t >= start
    return kept


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--clip-seconds", type=float, default=2.0)
    args = ap.parse_args(argv)

    import ray

    from pipelines.hdvila_index import build_hdvila_index
    from pose_data.hdvila.config import HdvilaIndexConfig
    from pose_data.media.video_decode import decode_span

    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = tmp / "videos"
        videos.mkdir()
        video = videos / "longVideo01.mp4"
        make_video(video, seconds)
        starts = np.linspace(0.3, seconds - args.clip_seconds - 0.3, args.clips)
        spans = [(float(s), float(s) + args.clip_seconds) for s in starts]
        clips = [{"clip_id": f"longVideo01.{k}.mp4", "span": [f"{a:.3f}", f"{b:.3f}"]} for k, (a, b) in enumerate(spans)]
        (tmp / "meta.jsonl").write_text(json.dumps({"video_id": "longVideo01", "url": "", "clip": clips}) + "\n")

        t0 = time.perf_counter()
        bare_frames = sum(bare_decode(video, a, b) for a, b in spans)
        bare_s = time.perf_counter() - t0

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        cfg = HdvilaIndexConfig(shard_size=max(1, args.clips // 4), preview_clips=0)
        t0 = time.perf_counter()
        manifest = build_hdvila_index([str(tmp / "meta.jsonl")], str(videos), str(tmp / "out"), cfg, progress=False)
        index_s = time.perf_counter() - t0
        ray.shutdown()
        indexed_frames = manifest["timings"]["frames_decoded"]
        head = decode_span(video, 0.0, 1.0).frames_decoded
        tail = decode_span(video, seconds - 1.5, seconds - 0.5).frames_decoded

    print(f"\n{args.clips} clips of {args.clip_seconds:g} s over a {seconds} s H.264 320x240 video (keyframe every 2 s)")
    print(f"bare PyAV loop:  {args.clips / bare_s:8.2f} clips/s  {bare_frames / bare_s:9.1f} kept frames/s")
    print(f"indexer (Ray, 1 CPU, whole run): {args.clips / index_s:8.2f} clips/s  ({manifest['counts']['ok']} ok, {indexed_frames} frames decoded)")
    steady = manifest["timings"]["index_seconds_summed_over_shards"]
    print(f"indexer shard tasks (decode + filter + parquet, summed): {args.clips / steady:8.2f} clips/s  {bare_frames / steady:9.1f} kept frames/s")
    print(f"ratio indexer / bare, shard tasks: {bare_s / steady:.2f}   (goal >= 0.9);  whole run incl. Ray start and planning: {bare_s / index_s:.2f}")
    print(f"frames decoded for a 1 s clip: at the start {head}, at the end {tail}")


if __name__ == "__main__":
    main()
