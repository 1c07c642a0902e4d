"""The ``--prompts`` JSONL of ``fyp-generate``: its lines read into jobs, and their files checked before a model loads.

:func:`read_jobs` turns each line into ``{prompt, pose, output, settings}`` (a bad line becomes a job carrying its
error; the other lines still run); :func:`check_jobs` fails a line whose files lie outside the output folder, are an
input of any line, or are also written by another line or are the run's manifest (:data:`MANIFEST_NAME`).
"""

from __future__ import annotations

import json
from pathlib import Path

from model.generation.outputs import Inputs, check_output, written_location
from model.generation.video_settings import VideoSettings, settings_from

MANIFEST_NAME = "generate_manifest.json"
MODEL_KEYS = {"base", "pose_encoder", "video_layers", "device", "dtype"}


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
