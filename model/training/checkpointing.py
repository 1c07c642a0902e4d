"""Checkpoint folders of ``fyp-train``: what one holds, how it is read back (weights-only, nothing unpickled that
could run code), which one ``--resume`` takes, and pruning.

A checkpoint folder ``checkpoints/checkpoint-NNNNNNN/`` holds what accelerate's ``save_state`` writes
(``model.safetensors``, ``optimizer.bin``, ``scheduler.bin``, ``random_states_<rank>.pkl``, ``scaler.pt`` under
fp16) and :data:`STATE_FILE`, JSON: the step, the samples read and every process's data position
(:class:`TrainingState`), and the config the run was started with.

Reading it back (:func:`read_checkpoint`) opens exactly those files: safetensors, JSON, and ``torch.load`` with
``weights_only=True`` (for the RNG states also numpy's array classes, nothing else). accelerate's own
``load_state`` is not used: it unpickles ``custom_checkpoint_N.pkl`` with ``weights_only=False`` (code planted there
would run) and silently skips RNG states it cannot read (the resume would then not be exact). Older checkpoints,
which kept the training state in ``custom_checkpoint_0.pkl``, are refused with that reason; a
``custom_checkpoint_*.pkl`` beside a :data:`STATE_FILE` is never opened.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.datasets.shard_stream import RankPosition, check_rank_position
from model.nets.official_weights import load_weights_only, read_safetensors
from pose_data.files.json_file import read_json

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"
STATE_FORMAT = "fyp-training-state"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.bin"
SCHEDULER_FILE = "scheduler.bin"
SCALER_FILE = "scaler.pt"
#: What a pickled numpy RNG state needs besides plain values (the classes accelerate itself allows): arrays of numbers.
_NP_CORE = np._core if int(np.__version__.split(".")[0]) >= 2 else np.core  # numpy 2 renamed np.core
RNG_SAFE_GLOBALS = (_NP_CORE.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType, codecs.encode)


def random_states_file(rank: int) -> str:
    return f"random_states_{rank}.pkl"


class DamagedCheckpoint(ValueError):
    """A checkpoint folder that cannot be read back (missing, cut or refused file); ``--resume latest`` then takes
    the one before it."""


@dataclass
class TrainingState:
    """Saved with the model: optimizer steps taken, raw samples read (and failed) by all processes, and each
    process's data position (where its stream continues: see :mod:`model.datasets.shard_stream`)."""

    step: int = 0
    samples: int = 0
    failed: int = 0
    positions: list[dict] = field(default_factory=lambda: [RankPosition().to_dict()])  # per process: a RankPosition

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data, where: str) -> TrainingState:
        """DamagedCheckpoint naming ``where`` unless every count is a non-negative integer and every position a
        :class:`~model.datasets.shard_stream.RankPosition` (one of an older fyp-train is refused with the reason)."""

        def count(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 0

        if not isinstance(data, dict) or not all(count(data.get(k)) for k in ("step", "samples", "failed")):
            raise DamagedCheckpoint(f"{where}: step, samples and failed must be non-negative integers")
        positions = data.get("positions")
        if not isinstance(positions, list) or not positions:
            raise DamagedCheckpoint(f"{where}: positions must be a list with one data position per process")
        if all(isinstance(p, list) and len(p) == 3 for p in positions):
            raise DamagedCheckpoint(
                f"{where}: written by an older fyp-train, whose data stream split the samples (not the shards) among "
                "processes; its position means nothing to this one's stream. Start the run again (--overwrite, or "
                "another output_dir), or finish it with the fyp-train that wrote it"
            )
        try:
            checked = [check_rank_position(p, f"{where}: positions[{i}]") for i, p in enumerate(positions)]
        except ValueError as err:
            raise DamagedCheckpoint(str(err)) from None
        return cls(step=data["step"], samples=data["samples"], failed=data["failed"], positions=checked)


@dataclass
class Checkpoint:
    """Everything a resume needs, read from one checkpoint folder (:func:`read_checkpoint`)."""

    folder: Path
    stage: str
    state: TrainingState
    config: dict  # the run's config, as the trainer wrote it (pose_data.config.to_dict)
    weights: dict[str, torch.Tensor]  # the trained weights, under the prepared model's names
    optimizer: dict
    scheduler: dict
    scaler: dict | None
    random_states: dict  # this process's: python, numpy, torch (and accelerator device) RNGs, accelerate's step

    @property
    def processes(self) -> int:
        return len(self.state.positions)


def write_training_state(folder: Path, state: TrainingState, *, stage: str, config: dict) -> Path:
    """``folder/training_state.json`` (the main process writes it into a checkpoint being saved)."""
    path = Path(folder) / STATE_FILE
    data = {"format": STATE_FORMAT, "format_version": 2, "stage": stage, **state.to_dict(), "config": config}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_checkpoint(folder: Path, process_index: int) -> Checkpoint:
    """Read and check every file of a checkpoint folder, for the process ``process_index``.

    Every process's RNG file is read, so all processes find the same folder damaged or not. DamagedCheckpoint (a
    ValueError) naming the folder and the file for anything missing, cut, not what it should be, or refused by
    weights-only loading.
    """
    folder = Path(folder)
    stage, state, config = _read_state_file(folder)
    weights = read_safetensors_in(folder / MODEL_FILE)
    optimizer = _read_pickled_dict(folder / OPTIMIZER_FILE, required=("state", "param_groups"))
    scheduler = _read_pickled_dict(folder / SCHEDULER_FILE, required=("last_epoch",))
    scaler = _read_pickled_dict(folder / SCALER_FILE, required=()) if (folder / SCALER_FILE).exists() else None
    every_rank = [
        _read_pickled_dict(folder / random_states_file(rank), required=("random_state", "numpy_random_seed", "torch_manual_seed"),
                           safe_globals=RNG_SAFE_GLOBALS)
        for rank in range(len(state.positions))
    ]  # fmt: skip
    return Checkpoint(folder, stage, state, config, weights, optimizer, scheduler, scaler,
                      every_rank[process_index] if process_index < len(every_rank) else {})  # fmt: skip


def _read_state_file(folder: Path) -> tuple[str, TrainingState, dict]:
    path = folder / STATE_FILE
    if not path.is_file():
        if list(folder.glob("custom_checkpoint_*.pkl")):
            raise DamagedCheckpoint(
                f"checkpoint {folder} has no {STATE_FILE}: it was written by an older fyp-train, which kept the training "
                "state in custom_checkpoint_0.pkl, a pickle that is no longer opened (unpickling it could run code "
                "planted there); start the run again (--overwrite, or another output_dir)"
            )
        raise DamagedCheckpoint(f"checkpoint {folder} has no {STATE_FILE}: not a complete fyp-train checkpoint")
    try:
        data = read_json(path)
    except ValueError as err:
        raise DamagedCheckpoint(str(err)) from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise DamagedCheckpoint(f"{path}: not a fyp-train training state (format {data.get('format') if isinstance(data, dict) else None!r})")
    if not isinstance(data.get("stage"), str) or not isinstance(data.get("config"), dict):
        raise DamagedCheckpoint(f"{path}: stage (a string) and config (an object) are required")
    return data["stage"], TrainingState.from_dict(data, str(path)), data["config"]


def read_safetensors_in(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise DamagedCheckpoint(f"checkpoint {file.parent} has no {file.name}")
    try:
        return read_safetensors(file)
    except ValueError as err:
        raise DamagedCheckpoint(str(err)) from None


def _read_pickled_dict(file: Path, *, required: tuple[str, ...], safe_globals=()) -> dict:
    if not file.is_file():
        raise DamagedCheckpoint(f"checkpoint {file.parent} has no {file.name}")
    try:
        data = load_weights_only(file, safe_globals)
    except ValueError as err:
        raise DamagedCheckpoint(str(err)) from None
    if not isinstance(data, dict) or any(key not in data for key in required):
        raise DamagedCheckpoint(f"{file}: holds a {type(data).__name__} without {', '.join(required) or 'entries'}, not what fyp-train saves there")
    return data


def set_random_states(states: dict) -> None:
    """Restore the RNGs accelerate's ``save_state`` saved (as its ``load_state`` does, minus its silent skip)."""
    from accelerate.utils import get_torch_accelerator_backend

    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    device_type, device_module = get_torch_accelerator_backend()
    key = f"torch_{device_type}_manual_seed"
    if device_type is not None and key in states:
        if device_module is torch.accelerator or device_type == "mps":
            torch.get_device_module(device_type).set_rng_state(states[key])
        else:
            device_module.set_rng_state_all(states[key])


def config_differences(saved: dict, current: dict, may_change: tuple[str, ...]) -> list[str]:
    """``"key saved there, current here"`` for every dotted config key outside ``may_change`` (dotted prefixes)
    whose value differs."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    differences = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        if any(key == p or key.startswith(p + ".") for p in may_change):
            continue
        there, here = flat_saved.get(key, "(absent)"), flat_current.get(key, "(absent)")
        if not _same(there, here):
            differences.append(f"{key} {there!r} there, {here!r} here")
    return differences


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{step:07d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(output_dir: Path, resume: str | None, process_index: int) -> Checkpoint | None:
    """The checkpoint to resume, read (:func:`read_checkpoint`): None for a fresh start (``resume`` None, or
    ``"latest"`` with no checkpoint yet); ``"latest"``: the newest one that reads back completely (a damaged one is
    skipped with a warning naming it and why); a folder: that one, refused in one line when it does not read back.
    """
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
        return read_checkpoint(path, process_index)
    found = list_checkpoints(output_dir)
    problems = []
    for folder in reversed(found):
        try:
            checkpoint = read_checkpoint(folder, process_index)
        except DamagedCheckpoint as err:
            log.warning("--resume latest: skipping %s, which does not read back: %s", folder.name, err)
            problems.append(f"{folder.name}: {err}")
            continue
        if problems:
            log.warning("--resume latest: resuming from %s, the newest checkpoint that reads back", folder)
        return checkpoint
    if found:
        raise ValueError(f"--resume latest: no checkpoint in {output_dir / 'checkpoints'} reads back: " + "; ".join(problems))
    return None


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path)
