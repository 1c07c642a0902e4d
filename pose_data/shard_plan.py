"""Cut INPUT metadata into numbered input shards once, and remember how (``DIR/_work/plan.json``).

Used by both builders (LAION-Pose rows, HD-VILA clips). The plan is what makes a run resumable: a re-run reads the same shards, skips those whose output
marker exists, and refuses to continue a DIR that was planned from other inputs or with a config
that changes the output (naming the difference) unless ``--overwrite`` is given.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pose_data.files.atomic import atomic_path, remove_stale_temp_files, write_json_atomic

PLAN_FILE = "_work/plan.json"


@dataclass
class ShardPlan:
    out_dir: Path
    num_rows: int
    num_shards: int
    shard_size: int

    def input_path(self, shard_id: int) -> Path:
        return self.out_dir / "_work" / "input" / f"{shard_id:05d}.parquet"

    def shard_rows(self, shard_id: int) -> int:
        return min(self.shard_size, self.num_rows - shard_id * self.shard_size)


def _describe_inputs(files: list[Path]) -> list[dict]:
    return [{"path": str(f.resolve()), "bytes": f.stat().st_size} for f in files]


def setting_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs; a key missing on one side equals None on the other."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += setting_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def make_or_load_plan(
    files: list[Path],
    out_dir: Path,
    *,
    shard_size: int,
    tables: Callable[[], Iterable[pa.Table]],
    fingerprint: dict,
    overwrite: bool = False,
    outputs: tuple[str, ...] = (),
) -> ShardPlan:
    """Plan the rows of ``tables()`` (read from ``files``) into shards of ``shard_size`` rows under
    ``out_dir``, or reuse the plan already there.

    ``tables`` is called only when planning: it yields tables of one schema, in input order.
    ``fingerprint`` holds every setting that changes the output; ``outputs`` are the folders and
    files ``--overwrite`` deletes.
    """
    plan_path = out_dir / PLAN_FILE
    described = {"inputs": _describe_inputs(files), "shard_size": shard_size, "fingerprint": fingerprint}
    if overwrite:
        _remove(out_dir, (*outputs, "_work"))
    elif not plan_path.exists():
        # without its plan nothing says which inputs and settings made what is there: never mix it with a new run
        leftovers = [name for name in outputs if _holds_something(out_dir / name)]
        if leftovers:
            raise ValueError(
                f"{out_dir} holds {', '.join(leftovers)} of an earlier run but no {PLAN_FILE}, so they may come from other "
                "inputs or settings; use another --output, or --overwrite to start it again"
            )
        _remove(out_dir, ("_work",))  # a plan cut off while it was written
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        diffs = setting_differences({k: old.get(k) for k in described}, described)
        if diffs:
            raise ValueError(
                f"{out_dir} was started with other inputs or settings ({'; '.join(diffs)}); "
                "use another --output, or --overwrite to start it again"
            )
        return ShardPlan(out_dir, old["num_rows"], old["num_shards"], shard_size)

    # Stream the tables into shards of shard_size rows (shards may span input files); only one
    # table and one partial shard are in memory at a time.
    num_rows = num_shards = 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def emit(table: pa.Table) -> None:
        nonlocal num_shards
        with atomic_path(out_dir / "_work" / "input" / f"{num_shards:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
        num_shards += 1

    for table in tables():
        num_rows += table.num_rows
        pending.append(table)
        pending_rows += table.num_rows
        while pending_rows >= shard_size:
            joined = pa.concat_tables(pending)
            emit(joined.slice(0, shard_size))
            rest = joined.slice(shard_size)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        emit(pa.concat_tables(pending))
    write_json_atomic(plan_path, {**described, "num_rows": num_rows, "num_shards": num_shards})
    return ShardPlan(out_dir, num_rows, num_shards, shard_size)


def _remove(out_dir: Path, names: tuple[str, ...]) -> None:
    for name in names:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _holds_something(path: Path) -> bool:
    """A file, or a folder with a file anywhere below it other than a killed run's hidden temp files."""
    if path.is_file():
        return True
    return path.is_dir() and any(p.is_file() and ".tmp-" not in p.name for p in path.rglob("*"))


def prepare_output(out_dir: Path, subfolders: tuple[str, ...]) -> None:
    """Before a (re)run: drop the manifest (rewritten last, so its presence means complete), make the
    shard folders and sweep the temp files a killed run left there."""
    (out_dir / "manifest.json").unlink(missing_ok=True)
    for sub in subfolders:
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    sweep_temp_files(out_dir, subfolders)


def sweep_temp_files(out_dir: Path, subfolders: tuple[str, ...]) -> int:
    """Delete the temp files of writes that never finished (a killed run, or a task lost with its node while the
    run went on); returns how many. Only while holding the output's run lock: no other writer is there."""
    return sum(remove_stale_temp_files(out_dir / sub) for sub in subfolders)
