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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from model.generation.outputs import Inputs, check_output, keypoints_path, old_sidecar_path, sidecar_path, written_location
from pose_data.files.json_file import read_json
from pose_data.files.manifest import file_sha256
from pose_data.pose.estimator import PoseModelLoadError
from pose_data.pose.sequence import DEFAULT_POSE_FPS
from pose_data.quiet import add_verbose_flags, quiet_libraries

log = logging.getLogger("fyp-generate")
SIDECAR_FORMAT = "fyp-generated-video"
MANIFEST_NAME = "generate_manifest.json"
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130


@dataclass
class VideoSettings:
    """Every per-video setting and its default (flags set them for all videos, a JSONL line for its own)."""

    negative_prompt: str = ""
    num_frames: int | None = None  # default: every pose frame the source gives at --fps
    window: int = 8  # T: frames per sampling window (advancing by T/2)
    steps: int = 50  # DDIM steps (official: 50)
    guidance: float = 12.5  # classifier-free guidance scale (official: 12.5)
    seed: int | None = None  # default: a random seed, recorded in the sidecar
    height: int | None = None  # default: the base model's size (512 for SD 1.x)
    width: int | None = None
    fps: float = DEFAULT_POSE_FPS  # pose sampling rate and output frame rate (extract-poses' default rate too)
    frame_stride: int | None = None  # instead of --fps: every K-th pose frame (played at --fps)
    pose_scale: float = 1.0  # strength of the pose residuals (0: the model without pose, exactly)
    side_by_side: bool = False  # skeleton | generated frame
    source_kind: str = "auto"  # auto, skeleton_video, skeleton_frames, keypoints, driving_video
    skeleton_style: str | None = None  # the style the pose source is drawn in / should be drawn in
    allow_style_mismatch: bool = False
    pose_backend: str = "mmpose"  # for a driving video: mmpose or mediapipe


    def validate(self, where: str = "", *, as_flags: bool = False) -> None:
        """ValueError naming the setting (``--the-flag`` when ``as_flags``) for a value of the wrong type or out of
        range (JSONL values are untyped)."""
        from model.generation.follow_your_pose_pipeline import MAX_SIZE
        from model.generation.pose_source import KINDS
        from pose_data.pose.estimator import BACKENDS
        from pose_data.skeleton.render import SKELETON_STYLES

        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith("| None"):
                continue
            ok = {
                "bool": isinstance(value, bool),
                "str": isinstance(value, str), "str | None": isinstance(value, str),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "int | None": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            }[kind]  # fmt: skip
            if not ok:
                what = {"bool": "true or false", "float": "a finite number"}.get(kind, "an integer" if "int" in kind else "a string")
                raise ValueError(f"{where}{_setting_name(f.name, as_flags)} must be {what}, got {value!r}")
        size_range = f"in [1, {MAX_SIZE}] pixels (a multiple of the pose encoder's downscale)"
        checks = [
            ("num_frames", self.num_frames is None or self.num_frames >= 1, ">= 1"),
            ("window", self.window >= 2, ">= 2 (it advances by window // 2)"),
            ("steps", self.steps >= 1, ">= 1"),
            ("seed", self.seed is None or 0 <= self.seed < 2**63, "in [0, 2**63)"),
            ("height", self.height is None or 1 <= self.height <= MAX_SIZE, size_range),
            ("width", self.width is None or 1 <= self.width <= MAX_SIZE, size_range),
            ("fps", 0.1 <= self.fps <= 1000, "in [0.1, 1000] (every frame of the source: --frame-stride 1)"),
            ("frame_stride", self.frame_stride is None or self.frame_stride >= 1, ">= 1"),
            ("source_kind", self.source_kind in KINDS, f"one of {', '.join(KINDS)}"),
            ("skeleton_style", self.skeleton_style is None or self.skeleton_style in SKELETON_STYLES, f"one of {', '.join(SKELETON_STYLES)}"),
            ("pose_backend", self.pose_backend in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{where}{_setting_name(name, as_flags)} must be {what}, got {getattr(self, name)!r}")


def _setting_name(name: str, as_flag: bool) -> str:
    return "--" + name.replace("_", "-") if as_flag else name


MODEL_KEYS = {"base", "pose_encoder", "video_layers", "device", "dtype"}
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


def settings_from(values: dict, base: VideoSettings | None = None, where: str = "", *, as_flags: bool = False) -> VideoSettings:
    """``base`` with ``values`` (keys with - or _) replacing its fields; ValueError naming unknown keys."""
    values = {k.replace("-", "_"): v for k, v in values.items() if v is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(VideoSettings)})
    if unknown:
        raise ValueError(f"{where}unknown setting(s) {', '.join(unknown)}")
    settings = dataclasses.replace(base or VideoSettings(), **values)
    settings.validate(where, as_flags=as_flags)
    return settings


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


def _remove_old_sidecar(output: Path) -> None:
    """Delete a sidecar of the old name (``clip.json``) that describes this video: its new one replaces it."""
    old = old_sidecar_path(output)
    try:
        done = read_json(old) if old.is_file() else None
    except ValueError:
        return
    if isinstance(done, dict) and done.get("format") == SIDECAR_FORMAT and done.get("video") == output.name:
        old.unlink(missing_ok=True)


def generate_one(pipe, prompt: str, pose: str, output: Path, settings: VideoSettings, *, progress: bool) -> dict:
    """Make one video and its sidecar; returns the sidecar."""
    import numpy as np

    from model.generation.pose_source import load_pose_frames
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.files.atomic import write_json_atomic
    from pose_data.files.manifest import package_versions
    from pose_data.media.video_writer import VIDEO_SUFFIXES, write_video
    from pose_data.pose.estimator import PoseModelConfig

    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output {output}: must end in {' or '.join(VIDEO_SUFFIXES)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a prompt is needed (--prompt TEXT)")
    if not pose:
        raise ValueError("a pose source is needed (--pose SOURCE)")
    inputs = Inputs()
    inputs.add_pose(pose, "the pose source")
    inputs.add_models({k: v for k, v in pipe.sources.items() if k != "video_layers_file"})
    check_output(output, inputs)
    started = time.perf_counter()
    settings.validate()
    height = pipe.default_size if settings.height is None else settings.height
    width = pipe.default_size if settings.width is None else settings.width
    pipe.check_arguments(settings.num_frames or 1, height, width, settings.window, settings.steps)
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    device_name = str(pipe.device)
    extract = ExtractPosesConfig(pose=PoseModelConfig(backend=settings.pose_backend, device=device_name if device_name.startswith("cuda") else "cpu"))
    poses = load_pose_frames(
        pose, width=width, height=height, num_frames=settings.num_frames, fps=settings.fps, frame_stride=settings.frame_stride,
        kind=settings.source_kind, encoder_style=pipe.skeleton_style, skeleton_style=settings.skeleton_style,
        allow_style_mismatch=settings.allow_style_mismatch, extract_config=extract,
    )  # fmt: skip
    num_frames = settings.num_frames or len(poses.frames)
    result = pipe(
        prompt, poses.frames[:num_frames], num_frames=num_frames, height=height, width=width,
        negative_prompt=settings.negative_prompt, window=settings.window, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, pose_scale=settings.pose_scale, seed=seed, progress=progress,
    )  # fmt: skip
    frames = result.frames
    if settings.side_by_side:
        frames = np.concatenate([poses.frames[:num_frames], frames], axis=2)
    # every file is written under a hidden temporary name first and all are renamed into place at the end, so an
    # error or Ctrl-C leaves the earlier result of this output (video, sidecar, keypoints) whole, and no half of a new one
    tag = secrets.token_hex(4)
    staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def stage(final: Path) -> Path:
        staged.append((final.with_name(f".{final.stem}.tmp-{tag}{final.suffix}"), final))
        return staged[-1][0]

    try:
        keypoints, rows = poses.keypoints, poses.keypoint_rows
        keypoints_sha256 = file_sha256(keypoints) if keypoints else None
        if poses.extracted is not None:
            keypoints_file = keypoints_path(output)
            keypoints_sha256 = file_sha256(poses.extracted.save(stage(keypoints_file)))
            keypoints = str(keypoints_file)
        if keypoints:
            keypoints = str(Path(keypoints).resolve())
        write_video(frames, stage(output), settings.fps, comment={"format": SIDECAR_FORMAT, "prompt": prompt, "seed": seed})
        sidecar = {
            "format": SIDECAR_FORMAT,
            "video": output.name,
            "prompt": prompt,
            "seed": seed,
            "settings": dataclasses.asdict(settings),
            "frames": num_frames,
            "fps": settings.fps,
            "height": height,
            "width": width,
            "side_by_side": settings.side_by_side,
            "windows": [list(w) for w in result.windows],
            "models": {**pipe.sources, "skeleton_style": pipe.skeleton_style, "video_layers_config": pipe.model.config.to_dict()},
            "device": device_name,
            "dtype": str(pipe.dtype).replace("torch.", ""),
            "pose": {
                "source": poses.source, "kind": poses.kind, "skeleton_style": poses.skeleton_style,
                "source_frames": poses.source_frames[:num_frames], "times": None if poses.times is None else poses.times[:num_frames],
                "keypoints": keypoints, "keypoint_rows": None if rows is None else rows[:num_frames],
                "keypoints_sha256": keypoints_sha256,
            },  # fmt: skip
            "versions": package_versions(),
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json_atomic(stage(sidecar_path(output)), sidecar)
        for temporary, final in staged:  # the sidecar last: it is what marks the video done
            temporary.replace(final)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    _remove_old_sidecar(output)
    return sidecar


def read_jobs(path: str, out_dir: Path, flags: VideoSettings) -> list[tuple[int, dict]]:
    """One job per non-empty line of ``path``: (line number, {prompt, pose, output, settings}); bad lines are jobs
    carrying their error (the other lines still run)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--prompts {path!r} does not exist")
    jobs = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}: "
        job: dict = {"output": out_dir / f"{len(jobs):05d}.mp4"}
        try:
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"{where}expected a JSON object, got {type(values).__name__}")
            values = {k.replace("-", "_"): v for k, v in values.items()}
            model_keys = sorted(MODEL_KEYS & set(values))
            if model_keys:
                raise ValueError(f"{where}{', '.join(model_keys)} are set once per run (flags), not per video")
            job["prompt"], job["pose"] = values.pop("prompt", None), values.pop("pose", None)
            for key in ("prompt", "pose"):
                if not isinstance(job[key], str) or not job[key].strip():
                    raise ValueError(f"{where}{key} must be a non-empty string, got {job[key]!r}")
            name = values.pop("output", None)
            if name is not None:
                relative = Path(name) if isinstance(name, str) else None
                if relative is None or relative.is_absolute() or ".." in relative.parts or not relative.name:
                    raise ValueError(f"{where}output {name!r} must be a file name inside {out_dir}")
                job["output"] = out_dir / relative
            job["settings"] = settings_from(values, flags, where)
        except json.JSONDecodeError as err:
            job["error"] = f"{where}not JSON ({err.msg})"
        except (ValueError, TypeError) as err:
            job["error"] = str(err)
        jobs.append((number, job))
    if not jobs:
        raise ValueError(f"--prompts {path}: no line to run")
    return jobs


def check_jobs(jobs: list[tuple[int, dict]], out_dir: Path, models: dict[str, str | None], prompts: str) -> None:
    """Before any model is loaded: mark a line failed (``job["error"]``) when a file it writes lies outside
    ``out_dir`` (symlinks resolved), is a folder or under a file, is an input of any line (its pose source, a model,
    the --prompts file), is the run's manifest, or is also written by an earlier line."""
    inputs = Inputs()
    inputs.add_models(models)
    inputs.add(prompts, "the --prompts file")
    for number, job in jobs:
        if "error" not in job:
            inputs.add_pose(job["pose"], f"line {number}'s pose source")
    root, manifest = out_dir.resolve(), written_location(out_dir / MANIFEST_NAME)
    clash = inputs.clash(manifest)
    if clash is not None:
        raise ValueError(f"--output {out_dir}: the run's manifest {MANIFEST_NAME} {clash}")
    writers = {manifest: "the run's manifest"}
    for number, job in jobs:
        if "error" in job:
            continue
        where, output = f"{prompts}:{number}: ", job["output"]
        try:
            places = check_output(output, inputs)
            if root not in places["video"].parents:
                raise ValueError(f"output {output} is written to {places['video']}, outside the output folder {root} (through a symlink): "
                                 "choose a name inside it")  # fmt: skip
            for role, place in places.items():
                if place in writers:
                    what = "" if role == "video" else f": its {role} file {place.name}"
                    raise ValueError(f"output {output.relative_to(out_dir)}{what} is also {writers[place]}")
        except ValueError as err:
            job["error"] = f"{where}{err}"
            continue
        for role, place in places.items():
            writers[place] = f"line {number}'s output" if role == "video" else f"written by line {number}"


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
