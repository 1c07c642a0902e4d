"""One run per output folder: a second run stops with a message naming the first, and a killed run leaves no
stuck lock. The holder is a real second process holding the real lock."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from pose_data.config import load_config
from pose_data.hdvila.config import HdvilaIndexConfig
from pose_data.laion.config import LaionPoseConfig
from pose_data.run_lock import OutputInUse, lock_output

BIN = Path(sys.executable).parent / "pose-data"
CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
HOLDER = "import sys, time; from pose_data.run_lock import lock_output\n" \
         "with lock_output(sys.argv[1], 'the test holder'):\n    print('held', flush=True); time.sleep(120)\n"  # fmt: skip


def hold(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_stops_and_a_killed_run_leaves_no_stuck_lock(tmp_path):
    out = tmp_path / "poses"
    holder = hold(out)
    try:
        proc = subprocess.run([str(BIN), "extract-poses", str(CARPHONE), "--output", str(out), "--config", "tiny",
                               "--max-frames", "2", "--no-progress"], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"in use by the test holder (pid {holder.pid}" in proc.stderr
        assert not (out / "carphone").exists()
        # the library entry points of the other pipelines refuse too, before reading anything
        with pytest.raises(OutputInUse, match="the test holder"):
            from pipelines.laion_pose import build_laion_pose

            build_laion_pose(["/no/such/input.parquet"], str(out), load_config(LaionPoseConfig, {}))
        with pytest.raises(OutputInUse):
            from pipelines.hdvila_index import build_hdvila_index

            build_hdvila_index(["/no/such.jsonl"], str(tmp_path), str(out), load_config(HdvilaIndexConfig, {}))
    finally:
        holder.send_signal(signal.SIGKILL)  # a run killed outright
        holder.wait()
    proc = subprocess.run([str(BIN), "extract-poses", str(CARPHONE), "--output", str(out), "--config", "tiny", "--max-frames", "2",
                           "--no-progress", "--overwrite"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["counts"]["ok"] == 1


def test_the_lock_records_its_holder_and_is_free_after_the_block(tmp_path):
    with lock_output(tmp_path, "a command") as path:
        holder = json.loads(path.read_text())
        assert holder["command"] == "a command" and holder["pid"] > 0
    with lock_output(tmp_path, "the next command"):  # released on exit: no waiting, no error
        pass
