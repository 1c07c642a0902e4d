"""``fyp-train``: the Follow-Your-Pose trainers' command line."""

from __future__ import annotations

import argparse
import logging
import sys

from pose_data.quiet import add_verbose_flags, quiet_libraries


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fyp-train", description="Follow Your Pose trainers")
    sub = parser.add_subparsers(dest="command", required=True)
    s1 = sub.add_parser("stage1", help="train the pose encoder on LAION-Pose over a frozen SD 1.x")
    s1.add_argument("--config", default="stage1", help="preset (stage1, stage1-tiny) or YAML file")
    s1.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=100 data.shards=DIR")
    s1.add_argument("--resume", default=None, help="latest, or a checkpoint folder")
    s1.add_argument("--overwrite", action="store_true",
                    help="delete the earlier run's outputs in output_dir (checkpoints/, config.json, summary.json, logs/, "
                         "validation/, pose_encoder/; nothing else) and start again")  # fmt: skip
    s1.add_argument("--init-pose-encoder", default=None, metavar="PATH",
                    help="a PoseEncoder or diffusers T2IAdapter folder, or the official pose_encoder.pth")  # fmt: skip
    s2 = sub.add_parser("stage2", help="train the video layers on HD-VILA clip shards over a frozen SD 1.x")
    s2.add_argument("--config", default="stage2", help="preset (stage2, stage2-tiny) or YAML file")
    s2.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. max_steps=100 data.clips=DIR")
    s2.add_argument("--resume", default=None, help="latest, or a checkpoint folder")
    s2.add_argument("--overwrite", action="store_true",
                    help="delete the earlier run's outputs in output_dir (checkpoints/, config.json, summary.json, logs/, "
                         "validation/, video_layers/; nothing else) and start again")  # fmt: skip
    s2.add_argument("--init-video-layers", default=None, metavar="PATH",
                    help="continue from a video_layers/ folder or the official stage-2 release")  # fmt: skip
    tiny = sub.add_parser("make-tiny-base", help="write a tiny random SD 1.x-layout model (offline tests and demo)")
    tiny.add_argument("output", metavar="DIR")
    tiny.add_argument("--seed", type=int, default=0)
    clip = sub.add_parser("make-tiny-clip", help="write a tiny random CLIPModel + processor (offline fyp-eval plumbing)")
    clip.add_argument("output", metavar="DIR")
    clip.add_argument("--seed", type=int, default=0)
    captioner = sub.add_parser("make-tiny-captioner", help="write a tiny random SmolVLM2-family captioner + processor (offline index-hdvila captions)")
    captioner.add_argument("output", metavar="DIR")
    captioner.add_argument("--seed", type=int, default=0)
    add_verbose_flags(parser, sub)
    return parser


def stage_config(args: argparse.Namespace):
    """The config of ``stage1`` or ``stage2``: preset or YAML, then KEY=VALUE overrides, then the named flags."""
    from pose_data.config import load_config, parse_overrides, set_dotted

    if args.command == "stage1":
        from model.training.stage1_config import Stage1Config as config_class
        from model.training.stage1_config import preset_or_file

        named = {"model.init_pose_encoder": args.init_pose_encoder}
    else:
        from model.training.stage2_config import Stage2Config as config_class
        from model.training.stage2_config import preset_or_file

        named = {"model.init_video_layers": args.init_video_layers}
    flags: dict = {"overwrite": True} if args.overwrite else {}
    for key, value in {"resume": args.resume, **named}.items():
        if value is not None:
            set_dotted(flags, key, value)
    cfg = load_config(config_class, preset_or_file(args.config), parse_overrides(args.overrides), flags)
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "stage1":
            from model.training.stage1 import train_stage1

            print(f"stage 1 done: {train_stage1(stage_config(args))}")
        elif args.command == "stage2":
            from model.training.stage2 import train_stage2

            print(f"stage 2 done: {train_stage2(stage_config(args))}")
        elif args.command == "make-tiny-base":
            from model.nets.tiny_base import make_tiny_base

            print(f"tiny base model written to {make_tiny_base(args.output, seed=args.seed)}")
        elif args.command == "make-tiny-clip":
            from model.nets.tiny_clip import make_tiny_clip

            print(f"tiny CLIP model written to {make_tiny_clip(args.output, seed=args.seed)}")
        elif args.command == "make-tiny-captioner":
            from model.nets.tiny_captioner import make_tiny_captioner

            print(f"tiny captioner written to {make_tiny_captioner(args.output, seed=args.seed)}")
    except (ValueError, OSError) as err:  # bad arguments, missing or unreadable inputs, an unreachable hub
        print(f"fyp-train {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
