"""``pose-data``: the data pipelines' command line."""

from __future__ import annotations

import argparse
import logging
import sys

from pose_data.config import parse_overrides, set_dotted
from pose_data.quiet import add_verbose_flags, quiet_libraries

# flag -> dotted config key; every default lives in the config dataclasses, not here
LAION_POSE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--url-col": ("input.url_col", str, "URL column of INPUT (default URL)"),
    "--caption-col": ("input.caption_col", str, "caption column of INPUT (default TEXT)"),
    "--shard-size": ("input.shard_size", int, "input rows per output shard (default 1000)"),
    "--image-size": ("download.image_size", int, "img2dataset image_size (default 512)"),
    "--resize-mode": ("download.resize_mode", str, "img2dataset resize_mode: no|border|keep_ratio|keep_ratio_largest|center_crop"),
    "--processes": ("download.processes", int, "download tasks at once (default 1)"),
    "--threads": ("download.threads", int, "download threads per task (default 16)"),
    "--timeout": ("download.timeout", int, "seconds per request (default 10)"),
    "--retries": ("download.retries", int, "download retries (default 0)"),
    "--max-image-bytes": ("download.max_image_bytes", int, "largest body downloaded, bytes (default 20 MiB)"),
    "--deadline": ("download.deadline", float, "seconds per request in total (default 60)"),
    "--pose-backend": ("pose.backend", str, "mmpose (RTMDet + RTMPose) or mediapipe (offline, 1 person)"),
    "--device": ("pose.device", str, "cpu or cuda (default cpu)"),
    "--batch-size": ("pose.batch_size", int, "images per pose call and boxes per keypoint-model batch (default 16)"),
    "--det-model": ("pose.det_model", str, "MMPose backend detector: alias (rtmdet-m) or config path"),
    "--det-checkpoint": ("pose.det_checkpoint", str, "detector weights: auto (official URL), a path, or none (random)"),
    "--pose-model": ("pose.pose_model", str, "MMPose backend keypoint model: alias (rtmpose-m) or config path"),
    "--pose-checkpoint": ("pose.pose_checkpoint", str, "keypoint weights: auto, a path, or none (random)"),
    "--min-keypoint-score": ("filter.min_keypoint_score", float, "keypoint score threshold (default per backend: mmpose 0.3, mediapipe 0.5)"),
    "--min-keypoints": ("filter.min_keypoints", int, "keypoints above the score a person needs (default 8)"),
    "--min-person-area": ("filter.min_person_area", float, "person box area as a fraction of the image (default 0)"),
    "--max-persons": ("filter.max_persons", int, "more kept persons than this: too_many_persons (default 3)"),
    "--min-image-size": ("filter.min_image_size", int, "shorter side of the original, pixels (default 256)"),
    "--skeleton-style": ("skeleton_style", str, "openpose (ControlNet annotator) or mmpose"),
    "--ray-address": ("ray.address", str, "join a Ray cluster (auto, HOST:PORT or ray://host:port); default: a local Ray of its own"),
    "--num-pose-workers": ("ray.num_pose_workers", int, "pose actors, one model load each (default 1)"),
    "--pose-worker-cpus": ("ray.pose_worker_cpus", float, "CPUs per pose actor (default 1)"),
    "--pose-worker-gpus": ("ray.pose_worker_gpus", float, "GPUs per pose actor (default 1 with --device cuda)"),
    "--preview-images": ("preview_images", int, "kept images on preview.png (default 16, 0: none)"),
}


def flag_layer(args: argparse.Namespace, flags: dict) -> dict:
    """The named flags the user gave, as a nested config dict (unset flags are None and left out)."""
    layer: dict = {}
    for flag, (key, *_rest) in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            set_dotted(layer, key, value)
    return layer


def _add_run_args(p: argparse.ArgumentParser, *, output_help: str, presets: str, set_example: str, flags: dict) -> None:
    """--output, --config, --set, --overwrite, --no-progress and the named flags, shared by the pipeline commands."""
    p.add_argument("--output", "-o", required=True, metavar="DIR", help=output_help)
    p.add_argument("--config", default=None, help=f"preset ({presets}) or YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"any config key, e.g. --set {set_example}")
    p.add_argument("--overwrite", action="store_true", help="start DIR again from scratch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for flag, (_key, typ, help_text) in flags.items():
        p.add_argument(flag, type=typ, default=None, help=help_text)


def _add_laion_pose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="LAION-style metadata: parquet, csv, tsv or jsonl files, or folders of them")
    _add_run_args(p, output_help="output folder (re-run the same command to resume)", presets="laion_pose, laion_pose-tiny / tiny",
                  set_example="download.retries=2", flags=LAION_POSE_FLAGS)  # fmt: skip
    p.add_argument("--allow-private-addresses", action="store_true", default=None,
                   help="also fetch loopback/private/link-local addresses (local serving only; off by default)")  # fmt: skip


def laion_pose_config(args: argparse.Namespace):
    """Dataclass defaults < --config preset/file < --set < named flags."""
    from pose_data.config import load_config
    from pose_data.laion_pose_config import LaionPoseConfig, preset_or_file

    layers = [preset_or_file(args.config)] if args.config else []
    layers.append(parse_overrides(args.set))
    layers.append(flag_layer(args, {**LAION_POSE_FLAGS, "--allow-private-addresses": ("download.allow_private_addresses",)}))
    cfg = load_config(LaionPoseConfig, *layers)
    cfg.validate()
    return cfg


HDVILA_FLAGS: dict[str, tuple[str, type, str]] = {
    "--shard-size": ("shard_size", int, "clips per index shard (default 100)"),
    "--min-duration": ("filter.min_duration", float, "decoded seconds below this: too_short (default 0)"),
    "--max-duration": ("filter.max_duration", float, "decoded seconds above this: filtered (default none)"),
    "--min-frames": ("filter.min_frames", int, "decoded frames below this: too_short (default 1)"),
    "--min-resolution": ("filter.min_resolution", int, "shorter side below this: filtered (default 0)"),
    "--size": ("clips.size", int, "clip shards: shorter side in pixels (default: source size)"),
    "--fps": ("clips.fps", float, "clip shards: frame rate (default: source rate)"),
    "--crf": ("clips.crf", int, "clip shards: libx264 CRF (default 23)"),
    "--frames": ("clips.frames", int, "clip shards: N JPEG frames per clip instead of an mp4"),
    "--stride": ("clips.stride", int, "with --frames: keep every S-th decoded frame (default 1)"),
    "--download-timeout": ("download_timeout", int, "seconds per yt-dlp download (default 60)"),
    "--ray-address": ("ray_address", str, "join a Ray cluster (auto, HOST:PORT or ray://host:port); default: a local Ray of its own"),
    "--preview-clips": ("preview_clips", int, "kept clips on preview.png (default 12, 0: none)"),
}
HDVILA_SWITCHES = {
    "--write-clips": ("clips.write_clips", "also write OUT/clips/NNNNN.tar training shards"),
    "--square": ("clips.square", "clip shards: centre-crop to a square"),
    "--clip-spans-to-video": ("clip_spans_to_video", "clip spans running past the video's end (recorded) instead of span_out_of_range"),
    "--download": ("download", "fetch missing videos with yt-dlp into VIDEOS/_downloaded"),
    "--allow-private-addresses": ("allow_private_addresses", "with --download: also fetch non-public addresses (local serving only)"),
}


def _add_hdvila_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("metadata", nargs="+", metavar="METADATA", help="HD-VILA-100M metadata: jsonl (also .json, .jsonl.gz) files or folders")
    p.add_argument("--videos", required=True, metavar="DIR", help="folder of downloaded videos, <video_id>.<ext>, nested folders allowed")
    p.add_argument("--captions", default=None, metavar="CSV", help="caption CSV with columns part_id, clip_id, caption")
    _add_run_args(p, output_help="output folder (re-run the same command to resume)", presets="hdvila_index, hdvila_index-tiny / tiny",
                  set_example="clips.crf=20", flags=HDVILA_FLAGS)  # fmt: skip
    for flag, (_key, help_text) in HDVILA_SWITCHES.items():
        p.add_argument(flag, action="store_true", default=None, help=help_text)


def hdvila_config(args: argparse.Namespace):
    from pose_data.config import load_config
    from pose_data.hdvila_config import HdvilaIndexConfig, preset_or_file

    layers = [preset_or_file(args.config)] if args.config else []
    cfg = load_config(HdvilaIndexConfig, *layers, parse_overrides(args.set), flag_layer(args, {**HDVILA_FLAGS, **HDVILA_SWITCHES}))
    cfg.validate()
    return cfg


EXTRACT_POSES_FLAGS: dict[str, tuple[str, type, str]] = {
    **{flag: LAION_POSE_FLAGS[flag] for flag in (
        "--pose-backend", "--device", "--batch-size", "--det-model", "--det-checkpoint", "--pose-model",
        "--pose-checkpoint", "--min-keypoint-score", "--min-person-area", "--skeleton-style")},
    "--min-keypoints": ("filter.min_keypoints", int, "confident keypoints a person needs to be drawn (default 4)"),
    "--max-persons": ("filter.max_persons", int, "more kept persons than this: too_many_persons, drawn black (default 20)"),
    "--fps": ("sampling.fps", float, "sample the video at this rate (nearest frame per tick); default 8, fyp-generate's rate; 0: every frame"),
    "--frame-stride": ("sampling.frame_stride", int, "keep every K-th frame instead of sampling at --fps"),
    "--max-frames": ("sampling.max_frames", int, "stop after this many sampled frames"),
    "--crf": ("crf", int, "libx264 quality of skeleton.mp4, 0-51 (default 18)"),
}  # fmt: skip


def _add_extract_poses_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="driving videos (any format FFmpeg reads)")
    _add_run_args(p, output_help="output folder: DIR/<name>/keypoints.parquet, skeleton.mp4 (re-run to resume)",
                  presets="extract_poses, extract_poses-tiny / tiny", set_example="pose.batch_size=8", flags=EXTRACT_POSES_FLAGS)  # fmt: skip
    p.add_argument("--all-frames", action="store_true", help="keep every frame (the same as --fps 0)")


def extract_poses_config(args: argparse.Namespace):
    """Dataclass defaults < --config preset/file < --set < named flags."""
    from pose_data.config import load_config
    from pose_data.extract_poses_config import ExtractPosesConfig, preset_or_file

    layers = [preset_or_file(args.config)] if args.config else []
    flags = flag_layer(args, EXTRACT_POSES_FLAGS)
    overrides = parse_overrides(args.set)
    # what the command line asks of the sampling: "every frame" (--all-frames, a rate of 0) next to any other rate or
    # stride given there is a contradiction, named; otherwise flags replace --set as everywhere
    asked = [(f"--{key.replace('_', '-')} {value:g}", key, value) for key, value in (flags.get("sampling") or {}).items() if value is not None]
    asked += [(f"--set sampling.{key}={value}", key, value) for key, value in (overrides.get("sampling") or {}).items()]
    asked = [a for a in asked if a[1] in ("fps", "frame_stride")] + ([("--all-frames", "fps", 0)] if args.all_frames else [])
    every = [a[0] for a in asked if a[1] == "fps" and a[2] == 0]
    others = [a[0] for a in asked if a[2] is not None and not (a[1] == "fps" and a[2] == 0)]
    if every and others:
        raise ValueError(f"{every[0]} keeps every frame: give it without {' or '.join(others)}")
    if args.all_frames:
        set_dotted(flags, "sampling.fps", None)
        set_dotted(flags, "sampling.frame_stride", None)
    layers += [overrides, flags]
    for layer in layers:  # a rate or a stride given in a layer replaces the other of the layers below
        sampling = layer.get("sampling") if isinstance(layer.get("sampling"), dict) else {}
        if ("fps" in sampling) != ("frame_stride" in sampling):
            sampling.setdefault("fps", None)
            sampling.setdefault("frame_stride", None)
    cfg = load_config(ExtractPosesConfig, *layers)
    cfg.validate()
    return cfg


def run_extract_poses(args: argparse.Namespace) -> None:
    from pipelines.extract_poses import FAILED, extract_poses

    manifest = extract_poses(args.videos, args.output, extract_poses_config(args), overwrite=args.overwrite, progress=not args.no_progress)
    for entry in manifest["videos"]:
        if entry["status"] != FAILED:
            print(f"{entry['source']}: {entry['frames']} frames at {entry['sampled_fps']:g} fps -> {entry['output']} ({entry['status']})")
    failed = [e for e in manifest["videos"] if e["status"] == FAILED]
    if failed:
        raise ValueError(f"{len(failed)} of {len(manifest['videos'])} video(s) failed: "
                         + "; ".join(f"{e['source']}: {e['error']}" for e in failed))  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pose-data", description="Follow-Your-Pose data pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-laion-pose", help="LAION metadata -> downloaded images, keypoints, skeletons: Parquet + WebDataset")
    _add_laion_pose_args(p)
    h = sub.add_parser("index-hdvila", help="HD-VILA-100M metadata + video files -> decoded clip index (Parquet) and clip shards")
    _add_hdvila_args(h)
    e = sub.add_parser("extract-poses", help="driving videos -> per-frame keypoints (Parquet) and a skeleton video")
    _add_extract_poses_args(e)
    d = sub.add_parser("demo", help="offline end-to-end demo on the bundled sample photos (CPU, MediaPipe)")
    d.add_argument("--output", "-o", default="demo-output", metavar="DIR")
    d.add_argument("--no-progress", action="store_true")
    add_verbose_flags(parser, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose, models=args.command == "demo")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "build-laion-pose":
            cfg = laion_pose_config(args)
            from pipelines.laion_pose import build_laion_pose

            build_laion_pose(args.inputs, args.output, cfg, overwrite=args.overwrite, progress=not args.no_progress)
        elif args.command == "index-hdvila":
            cfg = hdvila_config(args)
            from pipelines.hdvila_index import build_hdvila_index

            build_hdvila_index(
                args.metadata, args.videos, args.output, cfg,
                captions=args.captions, overwrite=args.overwrite, progress=not args.no_progress,
            )  # fmt: skip
        elif args.command == "extract-poses":
            run_extract_poses(args)
        elif args.command == "demo":
            from pipelines.demo import run_demo

            run_demo(args.output, progress=not args.no_progress)
    except (ValueError, OSError, RuntimeError) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        print(f"pose-data {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
