"""The training core under torchrun with two real CPU processes (gloo): each rank trains on its own samples, only
the main process writes, resume stays exact; and a launch that accelerate did not join is refused."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clip_shards import build_clip_shards
from conftest import REPO, free_port

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clips_dir(ray_local, tmp_path_factory):
    return build_clip_shards(tmp_path_factory.mktemp("dist") / "hdvila")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from model.nets.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("base") / "tiny-sd", seed=0)


def torchrun(args: list, *, cpu_flag: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu_flag:
        env["ACCELERATE_USE_CPU"] = "true"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def stage2_args(clips_dir, tiny_base, out: Path, *extra) -> list:
    """``fyp-train stage2`` arguments (without the program)."""
    return ["stage2", "--config", "stage2-tiny", f"data.clips={clips_dir}", f"model.base={tiny_base}",
            f"output_dir={out}", "validation.every=0", "data.shuffle_buffer=0", *extra]  # fmt: skip


def test_two_processes_split_the_data_and_only_the_main_one_writes(tmp_path, clips_dir, tiny_base):
    from model.datasets.hdvila_clips import HdvilaClipStream

    record = tmp_path / "record"
    args = stage2_args(clips_dir, tiny_base, tmp_path / "run", "max_steps=3", "checkpoint_every=3", "validation.every=3")
    run = torchrun([REPO / "tests" / "record_ranks.py", record, *args])
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in (0, 1):  # each rank: the first 3 samples of its own streams (seed 0, no shuffle buffer: the run's order)
        stream = HdvilaClipStream(str(clips_dir), num_frames=4, frame_stride=2, resolution=64, epochs=1, rank=r, world_size=2)
        assert ranks[r] == [[raw["__key__"]] for _, raw in itertools.islice(stream.raw_samples(), 3)]
    assert not {k for b in ranks[0] for k in b} & {k for b in ranks[1] for k in b}
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["processes"], summary["steps"], summary["samples"]) == (2, 3, 6)
    writers = {re.search(r"\.(\d+)\.\d+$", p.name).group(1) for p in (out / "logs").rglob("events.out.tfevents.*")}
    assert len(writers) == 1  # TensorBoard events from one process only
    assert len(list((out / "validation").iterdir())) == 1 and (out / "video_layers" / "config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-0000003").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # fmt: skip


def test_resume_under_two_processes_is_exact(tmp_path, clips_dir, tiny_base):
    straight = torchrun([BIN / "fyp-train", *stage2_args(clips_dir, tiny_base, tmp_path / "a", "max_steps=4", "checkpoint_every=2")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = torchrun([BIN / "fyp-train", *stage2_args(clips_dir, tiny_base, tmp_path / "b", "max_steps=2", "checkpoint_every=2")])
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun([BIN / "fyp-train", *stage2_args(clips_dir, tiny_base, tmp_path / "b", "max_steps=4", "checkpoint_every=2", "--resume", "latest")])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    a = load_file(tmp_path / "a" / "video_layers" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "video_layers" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    first_layers = load_file(tmp_path / "b" / "checkpoints" / "checkpoint-0000002" / "model.safetensors")
    at_step_2 = {k: first_layers[f"unet.{k}"] for k in b}  # the checkpoint holds the whole VideoUNet
    assert any(not (at_step_2[k] == b[k]).all() for k in b)  # steps 3-4 did train


def test_a_launch_accelerate_did_not_join_is_refused(tmp_path, clips_dir, tiny_base):
    run = torchrun([BIN / "fyp-train", *stage2_args(clips_dir, tiny_base, tmp_path / "run", "max_steps=1")], cpu_flag=False)
    assert run.returncode != 0
    assert "the launcher started 2 processes (WORLD_SIZE=2) but accelerate runs 1" in run.stderr
    assert "ACCELERATE_USE_CPU=true" in run.stderr and not (tmp_path / "run").exists()
