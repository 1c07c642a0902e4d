"""``fyp-generate``: pose sequence + text -> video, one video or one per line of a JSONL file.

A thin layer over :class:`model.generation.follow_your_pose_pipeline.FollowYourPosePipeline` and
:func:`model.generation.pose_source.load_pose_frames`. Next to every video it writes a JSON sidecar named after the video's
full file name (``clip.mp4`` -> ``clip.mp4.json``, so ``clip.mp4`` and ``clip.gif`` have one each) with every
setting, the seed, the model paths, the frame count and where the poses came from (with their keypoints file: the
given ``keypoints.parquet``, the one beside an extract-poses skeleton video, or ``clip.mp4.keypoints.parquet``
written beside the video when poses were extracted from a driving video), so that ``fyp-eval`` can score the
video later. Bad inputs stop with one line naming them and exit code 2.

Every file a video writes (video, sidecar, keypoints) is checked before any model is loaded: it may not be an
input (the pose source or a file of it, a model file, the --prompts file) or lie inside an input folder (a
skeleton-frame folder, a model folder), nor be a folder or have a file as its parent; with --prompts it must
lie inside the output folder (symlinks resolved) and no two lines may write the same file. Ctrl-C stops with
one line and exit code 130; with --prompts the manifest then lists what was done (rerun to resume).

The settings are :mod:`model.generation.video_settings`'s, one video and its sidecar
:func:`model.generation.make_video.generate_one`'s, and the --prompts lines are read and checked by
:mod:`model.generation.prompt_jobs`; this module parses the flags, loads the model once, and runs the video or the
lines (skipping those already done, then writing the manifest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from model.generation.make_video import SIDECAR_FORMAT, generate_one
from model.generation.outputs import Inputs, check_output, old_sidecar_path, sidecar_path
from model.generation.prompt_jobs import MANIFEST_NAME, check_jobs, read_jobs
from model.generation.video_settings import VideoSettings, settings_from
from pose_data.pose.estimator import PoseModelLoadError
from pose_data.quiet import add_verbose_flags, quiet_libraries

log = logging.getLogger("fyp-generate")
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130
#: Model records that sidecars written by older versions lack: absent, they do not make a video count as not done.
OPTIONAL_SOURCES = {"video_layers_file"}


def one_line(err: BaseException) -> str:
    """An error message on one line (some libraries' messages span several)."""
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip()) or type(err).__name__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fyp-generate", description="Follow Your Pose: pose sequence + text -> video of any length")
    m = p.add_argument_group("model (once per run)")
    m.add_argument("--base", required=True, metavar="DIR|HUB_ID", help="SD 1.x diffusers folder or hub id, or a saved pipeline folder")
    m.add_argument("--pose-encoder", metavar="DIR|PTH", help="stage-1 output, PoseEncoder / T2IAdapter folder, or the official pose_encoder.pth "
                   "(or the checkpoints/ folder holding it)")
    m.add_argument("--video-layers", metavar="DIR|FILE", help="stage-2 video_layers/ folder, or the official release: its followyourpose_checkpoint-N "
                   "folder, the checkpoints/ folder above it, or its model file (default: initial values)")
    m.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    m.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None, help="default float16 on cuda, float32 on cpu")
    v = p.add_argument_group("video")
    v.add_argument("--pose", metavar="SOURCE", help="skeleton video, folder of skeleton frames, keypoints.parquet, or driving video")
    v.add_argument("--prompt", help="the text")
    v.add_argument("--prompts", metavar="FILE.jsonl", help="many videos: one JSON object per line (prompt, pose, output, and any setting)")
    v.add_argument("--output", "-o", required=True, metavar="FILE|DIR", help="FILE.mp4 or FILE.gif; with --prompts a folder")
    defaults = VideoSettings()
    for f in dataclasses.fields(VideoSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            v.add_argument(flag, action="store_true", default=None)
        else:
            kind = {"int | None": int, "int": int, "float": float, "str": str, "str | None": str}[str(f.type)]
            v.add_argument(flag, type=kind, default=None, help=f"default {getattr(defaults, f.name)!r}")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_flags(p)
    return p


def resolve_device(device: str | None, dtype: str | None):
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(kind, False):
        raise ValueError(f"--device {device}: {kind} is not available on this machine")
    dtype = dtype or ("float16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, dtype)


def load_pipeline(args):
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline, is_pipeline_folder

    device, dtype = resolve_device(args.device, args.dtype)
    encoder, layers = args.pose_encoder, args.video_layers
    if is_pipeline_folder(args.base):
        folder = Path(args.base)
        encoder = encoder or (str(folder / "pose_encoder") if (folder / "pose_encoder").is_dir() else None)
        layers = layers or str(folder / "video_layers")
    return FollowYourPosePipeline.from_parts(args.base, encoder, layers, device=device, dtype=dtype)


def model_paths(args) -> dict[str, str | None]:
    """The model inputs by flag, as given."""
    return {"--base": args.base, "--pose-encoder": args.pose_encoder, "--video-layers": args.video_layers}


def _already_done(job: dict, sources: dict) -> bool:
    """The job's video and a sidecar describing it exist (``clip.mp4.json``, or ``clip.json`` from earlier versions,
    naming this video), and the sidecar records the same prompt, pose source, models and settings (a seed left
    open matches any)."""
    output = job["output"]
    if not output.is_file():
        return False
    return any(_sidecar_matches(sidecar, job, sources) for sidecar in (sidecar_path(output), old_sidecar_path(output)) if sidecar.is_file())


def _sidecar_matches(sidecar: Path, job: dict, sources: dict) -> bool:
    try:
        done = json.loads(sidecar.read_text())
        same = (done["format"] == SIDECAR_FORMAT and done["video"] == job["output"].name and done["prompt"] == job["prompt"]
                and done["pose"]["source"] == job["pose"]
                and all(done["models"].get(k) == v for k, v in sources.items() if k in done["models"] or k not in OPTIONAL_SOURCES))  # fmt: skip
        wanted = dataclasses.asdict(job["settings"])
        return same and all(done["settings"].get(k) == v for k, v in wanted.items() if k != "seed" or v is not None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not a sidecar of ours: make the video again
        return False


def run_many(pipe, args, jobs: list[tuple[int, dict]]) -> int:
    """Each job in turn (a failing line fails alone), then the manifest. Ctrl-C stops at once: the line being made
    leaves no file, the manifest lists the lines done, and the exit code is 130."""
    from pose_data.files.atomic import write_json_atomic

    out_dir = Path(args.output)
    results, entry, interrupted = [], None, False
    try:
        for number, job in jobs:
            entry = {"line": number, "output": str(job["output"]), "status": "interrupted"}  # until it has another
            if "error" in job:
                entry.update(status="failed", error=job["error"])
            elif _already_done(job, pipe.sources):
                entry.update(status="skipped")
            else:
                try:
                    sidecar = generate_one(pipe, job["prompt"], job["pose"], job["output"], job["settings"], progress=not args.no_progress)
                    entry.update(status="ok", seconds=sidecar["seconds"])
                except (ValueError, OSError, TypeError, RuntimeError) as err:  # this line fails, the others run
                    entry.update(status="failed", error=f"{args.prompts}:{number}: {one_line(err)}")
            if entry["status"] == "failed":
                print(f"fyp-generate: error: {entry['error']}", file=sys.stderr)
            else:
                print(f"{entry['output']} ({entry['status']})")
            results.append(entry)
            entry = None
    except KeyboardInterrupt:
        interrupted = True
        if entry is not None:
            results.append(entry)
    statuses = ("ok", "skipped", "failed") + (("interrupted",) if interrupted else ())
    counts = {s: sum(r["status"] == s for r in results) for s in statuses}
    manifest = {"prompts": args.prompts, "models": pipe.sources, "counts": counts, "videos": results}
    if interrupted:
        manifest["not_run"] = [number for number, _ in jobs if number > results[-1]["line"]] if results else [n for n, _ in jobs]
    write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    if interrupted:
        at = f" at {args.prompts}:{results[-1]['line']}" if results and results[-1]["status"] == "interrupted" else ""
        print(f"fyp-generate: interrupted (Ctrl-C){at}: {counts['ok'] + counts['skipped']} of {len(jobs)} video(s) done, "
              f"listed in {out_dir / MANIFEST_NAME}; run the same command again to make the rest", file=sys.stderr)  # fmt: skip
        return INTERRUPTED_EXIT_CODE
    if counts["failed"]:
        print(f"fyp-generate: error: {counts['failed']} of {len(results)} video(s) failed", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_libraries(args.verbose, progress=not args.no_progress)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        flags = settings_from({f.name: getattr(args, f.name) for f in dataclasses.fields(VideoSettings)}, as_flags=True)
        if bool(args.prompts) == bool(args.prompt or args.pose):
            raise ValueError("give --prompt and --pose for one video, or --prompts FILE.jsonl for many")
        output = Path(args.output)
        if args.prompts:  # every line's outputs are checked before the model is loaded
            if output.suffix.lower() in (".mp4", ".gif") or (output.exists() and not output.is_dir()):
                raise ValueError(f"with --prompts, --output is a folder, got {args.output}")
            jobs = read_jobs(args.prompts, output, flags)
            check_jobs(jobs, output, model_paths(args), args.prompts)
        else:
            if output.suffix.lower() not in (".mp4", ".gif"):
                raise ValueError(f"--output {args.output}: must end in .mp4 or .gif")
            inputs = Inputs()
            inputs.add_pose(args.pose, "the pose source (--pose)")
            inputs.add_models(model_paths(args))
            check_output(output, inputs)
        pipe = load_pipeline(args)
        if args.prompts:
            return run_many(pipe, args, jobs)
        sidecar = generate_one(pipe, args.prompt, args.pose, output, flags, progress=not args.no_progress)
        print(f"{args.output}: {sidecar['frames']} frames at {sidecar['fps']:g} fps, seed {sidecar['seed']} (settings: {sidecar_path(output)})")
    except (ValueError, OSError, PoseModelLoadError) as err:
        print(f"fyp-generate: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fyp-generate: interrupted (Ctrl-C) before a video was finished; nothing half-written was left", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
