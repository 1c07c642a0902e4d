"""``fyp-train``: the Follow-Your-Pose trainers' command line."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fyp-train", description="Follow Your Pose trainers")
    sub = parser.add_subparsers(dest="command", required=True)
    s1 = sub.add_parser("stage1", help="train the pose encoder on LAION-Pose over a frozen SD 1.x")
    s1.add_argument("--config", default="stage1", help="preset (stage1, stage1-tiny) or YAML file")
    s1.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=100 data.shards=DIR")
    s1.add_argument("--resume", default=None, help="latest, or a checkpoint folder")
    s1.add_argument("--init-pose-encoder", default=None, metavar="PATH",
                    help="a PoseEncoder or diffusers T2IAdapter folder, or the official pose_encoder.pth")  # fmt: skip
    tiny = sub.add_parser("make-tiny-base", help="write a tiny random SD 1.x-layout model (offline tests and demo)")
    tiny.add_argument("output", metavar="DIR")
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def stage1_config(args: argparse.Namespace):
    from model.stage1_config import Stage1Config, preset_or_file
    from pose_data.config import load_config, parse_overrides, set_dotted

    flags: dict = {}
    if args.resume is not None:
        set_dotted(flags, "resume", args.resume)
    if args.init_pose_encoder is not None:
        set_dotted(flags, "model.init_pose_encoder", args.init_pose_encoder)
    cfg = load_config(Stage1Config, preset_or_file(args.config), parse_overrides(args.overrides), flags)
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file checkpoint lines drown the progress
    try:
        if args.command == "stage1":
            from model.train_stage1 import train_stage1

            summary = train_stage1(stage1_config(args))
            print(f"stage 1 done: {summary}")
        elif args.command == "make-tiny-base":
            from model.tiny_base import make_tiny_base

            print(f"tiny base model written to {make_tiny_base(args.output, seed=args.seed)}")
    except (ValueError, FileNotFoundError) as err:
        print(f"fyp-train {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
