"""The ``pose-data`` command as a user runs it: the demo end to end, and early, named errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

BIN = Path(sys.executable).parent / "pose-data"


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout)


def test_demo_runs_end_to_end_offline(tmp_path):
    proc = run("demo", "--output", str(tmp_path / "demo"), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "demo" / "laion_pose"
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    # astronaut + cameraman kept; coffee + cat: nobody; portrait: too few keypoints; 404; html
    assert counts["ok"] == 2 and counts["no_person"] == 2 and counts["low_confidence"] == 1
    assert counts["download_failed"] == 1 and counts["decode_failed"] == 1
    assert len(pd.read_parquet(out / "meta")) == 7
    assert (out / "preview.png").stat().st_size > 10_000
    assert "preview.png" in proc.stdout and "pd.read_parquet" in proc.stdout
    # the HD-VILA index over the bundled real videos
    hdvila = json.loads((tmp_path / "demo" / "hdvila" / "manifest.json").read_text())
    assert hdvila["counts"]["ok"] == 3 and hdvila["counts"]["bad_metadata"] == 2 and hdvila["counts"]["video_missing"] == 1
    assert Image.open(tmp_path / "demo" / "hdvila" / "preview.png").width == 3 * 192
    # stage 1 continued from that LAION-Pose: tiny base, 40 steps, validation grids
    stage1 = tmp_path / "demo" / "stage1"
    assert json.loads((stage1 / "summary.json").read_text())["steps"] == 40
    grid = Image.open(stage1 / "validation" / "step-0000040.png")
    assert grid.size == (3 * 64, 2 * 64)  # 2 poses x (skeleton + 2 prompts) at 64 px
    assert (stage1 / "pose_encoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert str(stage1 / "validation" / "step-0000040.png") in proc.stdout
    # extract-poses on the bundled driving video, then 16 generated frames from both stages' outputs
    poses = pd.read_parquet(tmp_path / "demo" / "poses" / "carphone" / "keypoints.parquet")
    assert len(poses) == 32 and (poses["status"] == "ok").sum() >= 28
    video = tmp_path / "demo" / "generate" / "carphone.mp4"
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (64, 128, 3)  # skeleton | generated, 64 px
    sidecar = json.loads(video.with_name(video.name + ".json").read_text())
    assert sidecar["windows"] == [[0, 8], [4, 8], [8, 8]] and sidecar["models"]["video_layers"].endswith("video_layers")
    assert str(video) in proc.stdout
    # fyp-eval on the generated folder: the generated half of the video against the driving video's keypoints
    metrics = pd.read_parquet(tmp_path / "demo" / "eval" / "metrics.parquet").iloc[0]
    assert metrics["status"] == "ok" and metrics["frames"] == 16 and (metrics["width"], metrics["height"]) == (64, 64)
    assert metrics["pose_frames"] == 16 and metrics["pose_source"].endswith("skeleton.mp4") and 0.0 <= metrics["pose_ap"] <= 1.0
    assert -100 <= metrics["clip_score"] <= 100 and len(metrics["frame_clip_scores"]) == 16
    assert json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())["counts"]["ok"] == 1
    assert "metrics.parquet" in proc.stdout and "carphone.mp4" in proc.stdout
    # every stage ran (Ray actors with MediaPipe, model loads, training, generation): no other library's chatter
    noise = ("XNNPACK", "absl::InitializeLog", "Feedback manager", "Loading weights", "Writing model shards",
             "Token authentication is enabled", "pkg_resources is deprecated", "Traceback")  # fmt: skip
    assert not [n for n in noise if n in proc.stderr], proc.stderr[-3000:]


def test_missing_input_is_named(tmp_path):
    proc = run("build-laion-pose", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "input not found" in proc.stderr and "nope.parquet" in proc.stderr


def test_missing_url_column_names_the_columns(tmp_path):
    meta = tmp_path / "m.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:9/a.jpg"], "TEXT": ["a"]}), meta)
    proc = run("build-laion-pose", str(meta), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "no column 'URL' (set by --url-col)" in proc.stderr and "url, TEXT" in proc.stderr


def test_bad_choices_are_named(tmp_path):
    meta = tmp_path / "m.csv"
    meta.write_text("URL,TEXT\nhttp://127.0.0.1:9/a.jpg,a\n")
    proc = run("build-laion-pose", str(meta), "--output", str(tmp_path / "o"), "--skeleton-style", "stick")
    assert proc.returncode == 2 and "skeleton_style 'stick' is not one of openpose, mmpose" in proc.stderr
    proc = run("build-laion-pose", str(meta), "--output", str(tmp_path / "o"), "--set", "pose.devcie=cuda")
    assert proc.returncode == 2 and "unknown config key(s) pose.devcie" in proc.stderr


def test_a_ray_address_where_no_cluster_answers_stops_at_once(tmp_path):
    """Ray itself retries an unreachable cluster for minutes; the run says so in one line within seconds."""
    import socket
    import time

    with socket.socket() as sock:  # a port on this machine that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    meta = tmp_path / "m.csv"
    meta.write_text("URL,TEXT\nhttp://127.0.0.1:9/a.jpg,a\n")
    start = time.time()
    proc = run("build-laion-pose", str(meta), "--output", str(tmp_path / "o"), "--config", "tiny", "--ray-address", f"127.0.0.1:{port}", "--no-progress")
    assert proc.returncode == 2 and time.time() - start < 60 and "Traceback" not in proc.stderr
    assert f"--ray-address 127.0.0.1:{port}: no Ray cluster answers there (connection refused)" in proc.stderr
    proc = run("build-laion-pose", str(meta), "--output", str(tmp_path / "o"), "--config", "tiny", "--ray-address", "no-port", "--no-progress")
    assert proc.returncode == 2 and "--ray-address 'no-port': expected auto, HOST:PORT or ray://HOST:PORT" in proc.stderr
