"""A newcomer's terminal: other libraries' chatter is silenced at the source, and ``--verbose`` brings it back.

Run as a user runs the commands (subprocesses, real MediaPipe, real tiny diffusers models), with the environment
a fresh shell has (no NO_ALBUMENTATIONS_UPDATE)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from pose_data.quiet import RAY_AUTH_LOGGER, native_stderr_filtered, quiet_libraries

BIN = Path(sys.executable).parent
CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
NOISE = ("XNNPACK", "absl::InitializeLog", "Feedback manager", "landmark_projection", "Loading weights", "Writing model shards",
         "new version of Albumentations", "pkg_resources is deprecated", "Token authentication is enabled")  # fmt: skip


def fresh_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "FYP_VERBOSE")}
    return env


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, env={**fresh_env(), **(env or {})})


def test_native_lines_are_dropped_and_every_other_line_passes(capfd, monkeypatch):
    monkeypatch.setenv("FYP_VERBOSE", "0")
    with native_stderr_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nE0000 something real went wrong\n")
        os.write(2, b"W0000 00:00:1.2 7 inference_feedback_manager.cc:114] Feedback manager requires a model\n")
        os.write(2, b"WARNING: a real warning\n")
    err = capfd.readouterr().err
    assert err == "E0000 something real went wrong\nWARNING: a real warning\n"
    monkeypatch.setenv("FYP_VERBOSE", "1")
    with native_stderr_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" in capfd.readouterr().err


def test_ray_token_note_is_dropped_but_the_warning_that_auth_is_off_stays(caplog):
    quiet_libraries(False, models=False)
    logger = logging.getLogger(RAY_AUTH_LOGGER)
    with caplog.at_level(logging.WARNING):
        logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    assert [r.getMessage()[:35] for r in caplog.records] == ["Token authentication is disabled fo"]


def test_extract_poses_is_quiet_and_verbose_brings_the_native_lines_back(tmp_path):
    quiet = run("pose-data", "extract-poses", str(CARPHONE), "--output", str(tmp_path / "a"), "--pose-backend", "mediapipe",
                "--skeleton-style", "mmpose", "--max-frames", "3", "--no-progress")  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr  # nothing at all: the result is on stdout
    assert "carphone.mp4: 3 frames at 8 fps" in quiet.stdout
    loud = run("pose-data", "extract-poses", str(CARPHONE), "--output", str(tmp_path / "b"), "--pose-backend", "mediapipe",
               "--skeleton-style", "mmpose", "--max-frames", "3", "--no-progress", "--verbose")  # fmt: skip
    assert loud.returncode == 0 and "XNNPACK" in loud.stderr and "Feedback manager" in loud.stderr
    assert "new version of Albumentations" not in loud.stderr  # the update check (a network request) never runs


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base

    root = tmp_path_factory.mktemp("quiet")
    base = make_tiny_base(root / "tiny-sd", seed=0, sample_size=8)
    PoseEncoder.for_unet(load_base_model(base).unet, skeleton_style="openpose").save_pretrained(root / "pose_encoder")
    return root


def test_fyp_generate_shows_its_own_lines_only(tiny_models, tmp_path):
    args = ("fyp-generate", "--base", str(tiny_models / "tiny-sd"), "--pose-encoder", str(tiny_models / "pose_encoder"), "--pose", str(CARPHONE),
            "--pose-backend", "mediapipe", "--prompt", "a man", "--num-frames", "2", "--steps", "1")  # fmt: skip
    quiet = run(*args, "--output", str(tmp_path / "a.mp4"), env={"HF_HUB_DISABLE_PROGRESS_BARS": "1"})  # the user's own setting stands
    assert quiet.returncode == 0, quiet.stderr
    assert not [n for n in (*NOISE, "Cannot enable progress bars") if n in quiet.stderr], quiet.stderr
    assert "window-step" in quiet.stderr and "extracting poses from the driving video" in quiet.stderr  # ours stay
    loud = run(*args, "--output", str(tmp_path / "b.mp4"), "-v")
    assert loud.returncode == 0 and "Loading weights" in loud.stderr and "XNNPACK" in loud.stderr
