"""``pose-data``: the data pipelines' command line."""

from __future__ import annotations

import argparse
import logging
import sys

from pose_data.cli_flags import EXTRACT_POSES_FLAGS, HDVILA_FLAGS, HDVILA_SWITCHES, LAION_POSE_FLAGS, flag_layer
from pose_data.config import parse_overrides, set_dotted
from pose_data.quiet import add_verbose_flags, quiet_libraries


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
    from pose_data.laion.config import LaionPoseConfig, preset_or_file

    layers = [preset_or_file(args.config)] if args.config else []
    layers.append(parse_overrides(args.set))
    layers.append(flag_layer(args, {**LAION_POSE_FLAGS, "--allow-private-addresses": ("download.allow_private_addresses",)}))
    cfg = load_config(LaionPoseConfig, *layers)
    cfg.validate()
    return cfg


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
    from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file

    layers = [preset_or_file(args.config)] if args.config else []
    cfg = load_config(HdvilaIndexConfig, *layers, parse_overrides(args.set), flag_layer(args, {**HDVILA_FLAGS, **HDVILA_SWITCHES}))
    cfg.validate()
    return cfg


def _add_extract_poses_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="driving videos (any format FFmpeg reads)")
    _add_run_args(p, output_help="output folder: DIR/<name>/keypoints.parquet, skeleton.mp4 (re-run to resume)",
                  presets="extract_poses, extract_poses-tiny / tiny", set_example="pose.batch_size=8", flags=EXTRACT_POSES_FLAGS)  # fmt: skip
    p.add_argument("--all-frames", action="store_true", help="keep every frame (the same as --fps 0)")


def extract_poses_config(args: argparse.Namespace):
    """Dataclass defaults < --config preset/file < --set < named flags."""
    from pose_data.config import load_config
    from pose_data.extract_poses.config import ExtractPosesConfig, preset_or_file

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
