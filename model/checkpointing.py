"""Training state that rides along in accelerate checkpoints, and checkpoint folder bookkeeping."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingState:
    """Saved with the model: optimizer steps taken, raw samples read (and failed) by all processes, and each
    process's data position (where its stream continues: see :mod:`model.shard_stream`)."""

    step: int = 0
    samples: int = 0
    failed: int = 0
    positions: list[list[int]] = field(default_factory=lambda: [[0, 0, 0]])  # per process: [n, epoch, epoch's first n]

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples, self.failed = int(state["step"]), int(state["samples"]), int(state.get("failed", 0))
        positions = state.get("positions", [state["samples"]])
        # a bare raw index (older checkpoints): the stream reads from the start up to it
        self.positions = [[int(p), 0, 0] if isinstance(p, int) else [int(v) for v in p] for p in positions]


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"checkpoint-{step:07d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """``None``: fresh start; ``"latest"``: the newest checkpoint (fresh start if there is none); or a folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint folder")
    return path


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path)
