"""What a training run writes into its ``output_dir``, the refusal to start a fresh run over an earlier one, and
``--overwrite``, which deletes exactly what fyp-train wrote there (nothing else in the folder).

A fresh run in a folder holding an earlier run's checkpoints would train beside them: pruning keeps the old ones with
higher step numbers, ``--resume latest`` later jumps to them, and ``config.json`` then describes a run that did not
happen. So a fresh start there is refused, naming the folder and the ways out (resume, ``--overwrite``, another
``output_dir``). A ``config.json`` or ``summary.json`` that fyp-train did not write is never replaced or deleted.

What counts as written by fyp-train is decided by content, not by name alone: a ``checkpoints/checkpoint-N/`` or a
weight folder holding nothing but the files fyp-train and accelerate write there, a ``config.json`` that is a training
config, a ``summary.json`` that names a stage, the TensorBoard folder of the stage under ``logs/`` and the
``validation/step-N`` images. Anything else stays; a folder of fyp-train's that holds other files stops
``--overwrite`` before anything is deleted, naming them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from model.training.checkpointing import CHECKPOINT_RE, list_checkpoints
from pose_data.files.json_file import read_json

#: Files of a checkpoint folder: fyp-train's state, accelerate's save_state (also with a rank suffix), atomic temps.
CHECKPOINT_FILE_RE = re.compile(
    r"^(training_state\.json|fyp_run\.json|scaler\.pt|(model|pytorch_model)(_\d+)?\.(safetensors|bin)"
    r"|(optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin|(random_states|custom_checkpoint)_\d+\.pkl|\..+\.tmp-\w+)$"
)
#: Files of a final weight folder (``pose_encoder/``, ``video_layers/``): save_pretrained's config and weights.
WEIGHT_FILE_RE = re.compile(r"^(config\.json|diffusion_pytorch_model(\.fp16)?\.(safetensors|bin)|\..+\.tmp-\w+)$")
VALIDATION_FILE_RE = re.compile(r"^step-\d+\.(png|gif|mp4)$")
CONFIG_KEYS = ("output_dir", "max_steps", "optim")  # every fyp-train config.json has these (TrainConfig)


def _json_object(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def is_training_config(path: Path) -> bool:
    data = _json_object(path)
    return data is not None and all(key in data for key in CONFIG_KEYS)


def is_training_summary(path: Path) -> bool:
    data = _json_object(path)
    return data is not None and isinstance(data.get("stage"), str)


def foreign_files(folder: Path, own: re.Pattern) -> list[str]:
    """The entries of ``folder`` that are not plain files named like ``own`` (what fyp-train did not write there)."""
    return sorted(p.name for p in folder.iterdir() if p.is_symlink() or not p.is_file() or not own.match(p.name))


def earlier_run(output_dir: Path, weight_folders: tuple[str, ...]) -> list[str]:
    """What ``output_dir`` holds of an earlier run that a fresh one would mix with: its newest checkpoint, its
    summary and weights (empty when there are none; a run that died before its first checkpoint left nothing to keep)."""
    found = []
    checkpoints = list_checkpoints(output_dir)
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoint(s) up to {checkpoints[-1].name}")
    found += [f"{name}/" for name in weight_folders if (output_dir / name).exists()]
    if (output_dir / "summary.json").exists():
        found.append("summary.json")
    return found


def refuse_foreign_files(output_dir: Path) -> None:
    """ValueError when ``config.json`` or ``summary.json`` in ``output_dir`` was not written by fyp-train: a run would
    replace it (with or without ``--overwrite``)."""
    for name, ours in (("config.json", is_training_config), ("summary.json", is_training_summary)):
        path = output_dir / name
        if (path.exists() or path.is_symlink()) and (path.is_symlink() or not path.is_file() or not ours(path)):
            raise ValueError(
                f"output_dir {output_dir} holds a {name} that fyp-train did not write; a training run writes its own "
                f"{name} there: choose another output_dir, or move that file away"
            )


def refuse_fresh_start(output_dir: Path, weight_folders: tuple[str, ...], *, resume_latest: bool) -> None:
    """ValueError when a fresh run would start over an earlier run's outputs in ``output_dir``."""
    refuse_foreign_files(output_dir)
    found = earlier_run(output_dir, weight_folders)
    if not found:
        return
    if resume_latest:  # --resume latest found no checkpoint, but a finished (or pruned) run is there
        raise ValueError(
            f"output_dir {output_dir} holds an earlier run ({', '.join(found)}) but no checkpoint to resume: start over "
            "with --overwrite (deletes that run's outputs), or choose another output_dir"
        )
    raise ValueError(
        f"output_dir {output_dir} holds an earlier run ({', '.join(found)}): continue it with --resume latest, or start "
        f"over with --overwrite (deletes what fyp-train wrote there: {', '.join(outputs_of(weight_folders))}; nothing "
        "else), or choose another output_dir"
    )


def outputs_of(weight_folders: tuple[str, ...]) -> list[str]:
    return ["checkpoints/", "config.json", "summary.json", "logs/", "validation/", *(f"{name}/" for name in weight_folders)]


def _own_folders(output_dir: Path, weight_folders: tuple[str, ...]) -> list[tuple[Path, re.Pattern]]:
    """The checkpoint folders (also half-written ones) and weight folders in ``output_dir``, with their file pattern."""
    found = []
    checkpoints = output_dir / "checkpoints"
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        for path in sorted(checkpoints.iterdir()):
            name = path.name.removeprefix(".").removesuffix(".partial")
            if CHECKPOINT_RE.match(name) and path.is_dir() and not path.is_symlink():
                found.append((path, CHECKPOINT_FILE_RE))
    for name in weight_folders:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            found.append((path, WEIGHT_FILE_RE))
    return found


def check_overwritable(output_dir: Path, weight_folders: tuple[str, ...]) -> None:
    """ValueError, before anything is deleted, when ``--overwrite`` would have to delete what fyp-train did not write:
    a foreign ``config.json`` / ``summary.json``, or other files inside a checkpoint or weight folder."""
    refuse_foreign_files(output_dir)
    for folder, own in _own_folders(output_dir, weight_folders):
        others = foreign_files(folder, own)
        if others:
            raise ValueError(
                f"--overwrite: {folder} holds files fyp-train did not write ({', '.join(others[:5])}"
                f"{' ...' if len(others) > 5 else ''}); move them away, or choose another output_dir"
            )
    for name in ("checkpoints", *weight_folders):
        path = output_dir / name
        if path.is_symlink() or path.exists() and not path.is_dir():
            raise ValueError(f"--overwrite: {path} is not a folder fyp-train wrote (a file or a link); move it away, or choose another output_dir")


def clear_run_outputs(output_dir: Path, weight_folders: tuple[str, ...], stage: str) -> list[Path]:
    """Delete what fyp-train wrote into ``output_dir`` (checked first by :func:`check_overwritable`): checkpoint and
    weight folders, its ``config.json`` and ``summary.json``, the stage's TensorBoard folder ``logs/<stage>/`` and the
    ``validation/step-N`` files; a folder left empty is removed. Everything else stays. Returns what was deleted."""
    check_overwritable(output_dir, weight_folders)
    deleted = []
    for folder, _ in _own_folders(output_dir, weight_folders):
        shutil.rmtree(folder)
        deleted.append(folder)
    for name in ("config.json", "summary.json"):
        if (output_dir / name).is_file():
            (output_dir / name).unlink()
            deleted.append(output_dir / name)
    logs = output_dir / "logs" / stage
    if logs.is_dir() and not logs.is_symlink():
        shutil.rmtree(logs)
        deleted.append(logs)
    validation = output_dir / "validation"
    if validation.is_dir() and not validation.is_symlink():
        for path in sorted(validation.iterdir()):
            if VALIDATION_FILE_RE.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
                deleted.append(path)
    for name in ("checkpoints", "logs", "validation"):
        path = output_dir / name
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    return deleted
