"""What a training run writes into its ``output_dir``, the refusal to start a fresh run over an earlier one, and
``--overwrite``, which deletes exactly those outputs (nothing else in the folder).

A fresh run in a folder holding an earlier run's checkpoints would train beside them: pruning keeps the old ones with
higher step numbers, ``--resume latest`` later jumps to them, and ``config.json`` then describes a run that did not
happen. So a fresh start there is refused, naming the folder and the ways out (resume, ``--overwrite``, another
``output_dir``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from model.checkpointing import list_checkpoints

#: What every training run writes into ``output_dir`` (a stage adds its weight folder: ``pose_encoder/``, ``video_layers/``).
RUN_OUTPUTS = ("checkpoints", "config.json", "summary.json", "logs", "validation")


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


def refuse_fresh_start(output_dir: Path, weight_folders: tuple[str, ...], *, resume_latest: bool) -> None:
    """ValueError when a fresh run would start over an earlier run's outputs in ``output_dir``."""
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
        f"over with --overwrite (deletes {', '.join(outputs_of(weight_folders))} there, nothing else), or choose another output_dir"
    )


def outputs_of(weight_folders: tuple[str, ...]) -> list[str]:
    return [f"{name}/" if "." not in name else name for name in (*RUN_OUTPUTS, *weight_folders)]


def clear_run_outputs(output_dir: Path, weight_folders: tuple[str, ...]) -> list[Path]:
    """Delete what a training run writes into ``output_dir`` (:data:`RUN_OUTPUTS` and ``weight_folders``); other
    files stay. Returns what was deleted."""
    deleted = []
    for name in (*RUN_OUTPUTS, *weight_folders):
        path = output_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        deleted.append(path)
    return deleted
