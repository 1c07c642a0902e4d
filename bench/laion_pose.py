"""Benchmark of ``pose-data build-laion-pose``: how close does the pipeline get to the bare pose model?

From one run on the same images (the bundled person photos, served on 127.0.0.1 and cycled):
  * bare pose model images/s: PoseBatchRunner (decode + estimator) in this process, same thread
    count and batch size as one pose actor, on the very images the pipeline downloads;
  * end-to-end images/s of the Ray pipeline with 1 pose worker (download, pose, filter/render,
    write; Ray already started, actor start-up and model load included), and their ratio;
  * end-to-end images/s with 2 pose workers.

    .venv/bin/python bench/laion_pose.py [--images 96] [--backend mediapipe|mmpose|mediapipe-holistic|mmpose-wholebody]
                                         [--skeleton-style openpose|openpose_full|mmpose]

The mmpose backends run RTMDet-tiny + RTMPose-m (body, or COCO-WholeBody for mmpose-wholebody) from MMPose's
configs with random weights (no weights ship here): their timing is real, their keypoints are not. The whole-body
backends default to the openpose_full style (hands and face drawn).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def steady_state_rate(out_dir: Path) -> float:
    """Rows/s between the first and the last shard written: the pipeline once it is running,
    without the fixed start-up (worker processes, imports, model load, first download)."""
    import json

    stats = sorted((json.loads(p.read_text()) for p in (out_dir / "stats").glob("*.json")), key=lambda s: s["finished_at"])
    rows_after_first = sum(s["rows"] for s in stats[1:])
    return rows_after_first / (stats[-1]["finished_at"] - stats[0]["finished_at"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--backend", choices=("mediapipe", "mmpose", "mediapipe-holistic", "mmpose-wholebody"), default="mediapipe")
    ap.add_argument("--skeleton-style", choices=("openpose", "openpose_full", "mmpose"), default=None,
                    help="default: openpose_full for the whole-body backends, else openpose")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--shard-size", type=int, default=32)
    args = ap.parse_args(argv)

    import ray

    from pipelines.demo import sample_dir
    from pipelines.laion_pose import build_laion_pose, download_options
    from pose_data.config import load_config
    from pose_data.http.local_http import serve_directory
    from pose_data.laion.config import LaionPoseConfig, preset_or_file
    from pose_data.laion.download import download_shard
    from pose_data.laion.pose_batch import PoseBatchRunner

    photos = ["astronaut.jpg", "cameraman.jpg", "grace_hopper.jpg"]
    whole_body = args.backend in ("mediapipe-holistic", "mmpose-wholebody")
    overrides = {
        "input": {"shard_size": args.shard_size},
        "pose": {"backend": args.backend, "batch_size": args.batch_size},
        "preview_images": 0,
        "skeleton_style": args.skeleton_style or ("openpose_full" if args.backend in ("mediapipe-holistic", "mmpose-wholebody") else "openpose"),
        "download": {"allow_private_addresses": True},  # the photos are served on 127.0.0.1
    }
    if args.backend in ("mmpose", "mmpose-wholebody"):
        overrides["pose"].update(det_checkpoint=None, pose_checkpoint=None, det_model="rtmdet-tiny")
    if args.backend == "mmpose-wholebody":
        # random RTMDet finds nobody above 0.3: take its two best boxes, so that the 133-point model runs on every image
        overrides["pose"].update(det_score_threshold=0.0, max_persons_per_image=2)
    cfg = load_config(LaionPoseConfig, preset_or_file("laion_pose-tiny"), overrides)

    site = Path(tempfile.mkdtemp(prefix="bench-photos-"))
    for name in photos:
        shutil.copy(sample_dir() / name, site / name)
    if whole_body:  # a photo with both hands and a face (tests/data/holistic), so the hand and face models run
        shutil.copy(Path(__file__).resolve().parents[1] / "tests" / "data" / "holistic" / "messi5.jpg", site / "messi5.jpg")
        photos.append("messi5.jpg")
    with tempfile.TemporaryDirectory() as tmp, serve_directory(site) as base:
        urls = [base + photos[i % len(photos)] for i in range(args.images)]
        meta = Path(tmp) / "bench.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"photo {i}" for i in range(len(urls))]}), meta)

        # bare pose model on the same downloaded (resized) images, one thread like one actor
        shard = download_shard(0, urls, download_options(cfg))
        runner = PoseBatchRunner(cfg.pose, num_threads=int(cfg.ray.pose_worker_cpus))
        idx = shard.pending()
        runner.estimate(shard, idx[: args.batch_size])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(idx), args.batch_size):
            runner.estimate(shard, idx[i : i + args.batch_size])
        bare = len(idx) / (time.perf_counter() - t0)
        del runner

        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        results, busy = {}, {}
        for workers in (1, 2):
            cfg.ray.num_pose_workers = workers
            t0 = time.perf_counter()
            manifest = build_laion_pose([str(meta)], str(Path(tmp) / f"out{workers}"), cfg, overwrite=True, progress=False)
            wall = time.perf_counter() - t0
            results[workers] = args.images / wall
            busy[workers] = manifest["timings"]["stage_seconds_summed_over_shards"]["pose"] / (wall * workers)
            stages = manifest["timings"]["stage_seconds_summed_over_shards"]
            if workers == 1:
                steady = steady_state_rate(Path(tmp) / "out1")
        ray.shutdown()

    print(f"\nbackend {args.backend}, style {cfg.skeleton_style}, {args.images} images, batch {args.batch_size}, shard {args.shard_size}")
    print(f"bare pose model (decode + inference, 1 thread):  {bare:8.2f} images/s")
    print(f"end-to-end pipeline, 1 pose worker:             {results[1]:8.2f} images/s")
    print(f"ratio end-to-end / bare:                        {results[1] / bare:8.2f}   (goal >= 0.9)")
    print(f"  steady state (first to last shard written):   {steady:8.2f} images/s   ratio {steady / bare:.2f}")
    print(f"pose worker busy (pose seconds / wall), 1 worker: {busy[1]:6.2f}")
    print(f"end-to-end pipeline, 2 pose workers:            {results[2]:8.2f} images/s   ({results[2] / results[1]:.2f}x of 1 worker)")
    print(f"stage seconds summed over shards (2 workers): {stages}")
    shutil.rmtree(site, ignore_errors=True)


if __name__ == "__main__":
    main()
