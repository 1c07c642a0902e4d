"""``fyp-eval``: the paper's three metrics on generated videos (CLIP score, frame consistency, pose accuracy).

``fyp-eval INPUT... --output DIR``: INPUT is a folder of ``fyp-generate`` videos with their JSON sidecars, or a
JSONL with one ``{"video", "prompt", "pose"}`` per line (:mod:`model.evaluation.inputs`); the work and the outputs are
:mod:`model.evaluation.evaluate_videos`'s. Settings: dataclass defaults (:class:`model.evaluation.config.EvalConfig`) < ``--config``
preset or YAML < ``--set KEY=VALUE`` < the named flags. Bad arguments and models that cannot load stop with one line
and exit code 2; a video that cannot be scored is a row with its reason (exit code 2 at the end, after every output
is written).
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose_data.cli_flags import LAION_POSE_FLAGS
from pose_data.quiet import add_verbose_flags, quiet_libraries

FLAGS: dict[str, tuple[str, type, str]] = {
    "--clip-model": ("clip_model", str, "hub id or local folder of a CLIPModel + processor (default openai/clip-vit-large-patch14)"),
    "--batch-size": ("batch_size", int, "frames per CLIP call and per pose call (default 16)"),
    **{flag: LAION_POSE_FLAGS[flag] for flag in ("--pose-backend", "--det-model", "--det-checkpoint", "--pose-model", "--pose-checkpoint")},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fyp-eval", description="CLIP score, frame consistency and pose accuracy of generated videos")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder of fyp-generate videos + sidecars, or FILE.jsonl (video, prompt, pose)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="DIR/metrics.parquet, DIR/summary.json (re-run to resume)")
    p.add_argument("--config", default=None, help="preset (eval, eval-tiny / tiny) or YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. --set pose.det_score_threshold=0.5")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 for CLIP and the MMPose models (default: cuda when available; "
                   "a config's pose.device keeps MMPose elsewhere)")
    for flag, (_key, kind, text) in FLAGS.items():
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_verbose_flags(p)
    return p


def eval_config(args: argparse.Namespace):
    from model.evaluation.config import EvalConfig, preset_or_file
    from model.generation.cli import resolve_device
    from pose_data.cli_flags import flag_layer
    from pose_data.config import load_config, parse_overrides
    from pose_data.pose.estimator import MMPOSE_BACKENDS

    layers = [preset_or_file(args.config)] if args.config else []
    layers.append(parse_overrides(args.set))
    flags = flag_layer(args, FLAGS)
    if args.batch_size is not None:
        flags.setdefault("pose", {})["batch_size"] = args.batch_size
    cfg = load_config(EvalConfig, *layers, flags)
    cfg.device, _ = resolve_device(args.device or cfg.device, "float32")
    pose_device_set = any(isinstance(layer.get("pose"), dict) and "device" in layer["pose"] for layer in layers)
    if cfg.pose.backend in MMPOSE_BACKENDS and (args.device is not None or not pose_device_set):
        # MMPose on CLIP's device (it has no mps), unless the config names pose.device; the flag names both
        cfg.pose.device = cfg.device if cfg.device.startswith(("cpu", "cuda")) else "cpu"
    cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose, progress=not args.no_progress)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from model.evaluation.clip_metrics import ClipModelLoadError
    from model.generation.cli import one_line
    from pose_data.pose.estimator import PoseModelLoadError

    try:
        cfg = eval_config(args)
        from model.evaluation.evaluate_videos import evaluate_videos, format_table
        from model.evaluation.inputs import read_inputs
        from model.evaluation.video_scoring import FAILED, OK

        items = read_inputs(args.inputs)
        summary, table = evaluate_videos(items, cfg, args.output, inputs=args.inputs, progress=not args.no_progress)
    except (ValueError, OSError, ClipModelLoadError, PoseModelLoadError) as err:
        print(f"fyp-eval: error: {one_line(err)}", file=sys.stderr)
        return 2
    print(format_table(summary, table))
    print(f"scales: {summary['scales']['clip_score']}; pose AP is COCO's (0-1). Written: {args.output}/metrics.parquet, summary.json")
    if summary["counts"][FAILED]:
        print(f"fyp-eval: error: {summary['counts'][FAILED]} of {summary['counts']['videos']} video(s) could not be scored "
              f"(their reason is in the table and in metrics.parquet); {summary['counts'][OK]} were", file=sys.stderr)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
