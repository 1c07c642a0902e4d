"""``pose-data extract-poses`` for real: the bundled driving video (a man in a car), MediaPipe, PyAV decoding and
H.264 writing; frame sampling by rate and stride; bad videos named while the others still run."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from pose_data.frame_sampling import RateSampler, StrideSampler, make_sampler, resampled_count
from pose_data.pose_sequence import read_pose_sequence, render_rows
from pose_data.video_decode import probe_video
from pose_data.video_writer import Mp4Writer, read_video_comment

BIN = Path(sys.executable).parent / "pose-data"
CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
LAION_PERSON_COLUMNS = ("num_persons", "bboxes", "person_scores", "keypoints", "status", "error", "width", "height")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "extract-poses", *args, "--no-progress"], capture_output=True, text=True, timeout=300)


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    out = tmp_path_factory.mktemp("poses")
    proc = run(str(CARPHONE), "--output", str(out), "--config", "tiny", "--fps", "8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_rate_and_stride_sampling():
    times = [i / 30 for i in range(120)]  # 4 s at 30 fps
    rate = RateSampler(8)
    kept = [k for i, t in enumerate(times) for k in rate.add(i, t)]
    assert len(kept) == resampled_count(times[0], times[-1], 8) == 32
    # each tick k/8 gets the nearest frame: tick 1 (0.125 s) -> frame 4 (0.133 s); tick 2 (0.25 s) lies midway
    # between frames 7 and 8: the earlier one wins
    assert kept[:4] == [0, 4, 7, 11]
    assert all(abs(times[i] - k / 8) <= 1 / 60 + 1e-9 for k, i in enumerate(kept))
    stride = StrideSampler(10)
    assert [k for i, t in enumerate(times) for k in stride.add(i, t)] == list(range(0, 120, 10))
    upsampled = RateSampler(60)  # faster than the source: frames repeat
    assert len([k for i, t in enumerate(times[:4]) for k in upsampled.add(i, t)]) == 7
    with pytest.raises(ValueError, match="not both"):
        make_sampler(8, 2)
    with pytest.raises(ValueError, match="positive"):
        RateSampler(0)
    # a timestamp a billion seconds on (a hostile file) closes a billion ticks: a limited sampler gives only the
    # ticks still wanted, at once
    limited = RateSampler(8, max_ticks=4)
    assert limited.add("a", 0.0) == ["a"] and limited.add("b", 1e9) == ["a", "a", "a"] and limited.add("c", 2e9) == []
    assert make_sampler(8, None, 5).max_ticks == 5
    with pytest.raises(ValueError, match="timestamps jump from 0.125 s to 1e\\+09 s"):  # with no limit, the gap itself is refused
        unlimited = RateSampler(8)
        [k for i, t in enumerate([0.0, 0.125, 1e9]) for k in unlimited.add(i, t)]


def test_extract_poses_writes_keypoints_and_a_matching_skeleton_video(extracted):
    out, proc = extracted
    folder = out / "carphone"
    table = pd.read_parquet(folder / "keypoints.parquet")
    assert len(table) == 32  # 4.004 s at 8 fps
    for column in ("frame", "time", *LAION_PERSON_COLUMNS):
        assert column in table.columns
    assert table["frame"].tolist()[:4] == [0, 4, 7, 11]  # nearest 29.97-fps frame to k / 8 s
    assert np.allclose(table["time"], table["frame"] / (30000 / 1001), atol=1e-6)
    assert (table["width"] == 176).all() and (table["height"] == 144).all()
    ok = table[table["status"] == "ok"]
    assert len(ok) >= 28, table["status"].value_counts()  # head and shoulders in (nearly) every frame
    assert (ok["num_persons"] == 1).all()
    nose = np.array([row[0][0] for row in ok["keypoints"]])  # (x, y, score) of person 0's nose
    assert (nose[:, 0] > 40).all() and (nose[:, 0] < 140).all() and (nose[:, 1] > 20).all() and (nose[:, 1] < 110).all()

    frames, fps = decode(folder / "skeleton.mp4")
    assert len(frames) == 32 and frames[0].shape == (144, 176, 3) and fps == 8
    assert read_video_comment(folder / "skeleton.mp4")["skeleton_style"] == "openpose"
    # the video shows exactly what the rows draw (up to H.264): skeletons where ok, black elsewhere
    sequence = read_pose_sequence(folder / "keypoints.parquet")
    assert sequence.info["skeleton_style"] == "openpose" and sequence.info["sampled_fps"] == 8
    drawn = list(render_rows(sequence.table, "openpose", sequence.info["min_keypoint_score"]))
    for frame, expected, status in zip(frames, drawn, table["status"]):
        assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 3.0
        assert (expected.max() > 0) == (status == "ok")

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert manifest["config"]["pose"]["backend"] == "mediapipe" and manifest["versions"]["av"]
    assert "32 frames at 8 fps" in proc.stdout


def test_rerun_skips_done_videos_and_changed_settings_redo_them(extracted, tmp_path):
    out, _ = extracted
    again = run(str(CARPHONE), "--output", str(out), "--config", "tiny", "--fps", "8")
    assert again.returncode == 0 and "(skipped)" in again.stdout
    # the tiny preset samples at 8 fps: --frame-stride on the command line replaces that
    stride = run(str(CARPHONE), "--output", str(tmp_path / "s"), "--config", "tiny", "--frame-stride", "10", "--max-frames", "5")
    assert stride.returncode == 0, stride.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "s" / "carphone" / "keypoints.parquet")
    assert table["frame"].tolist() == [0, 10, 20, 30, 40]
    frames, fps = decode(tmp_path / "s" / "carphone" / "skeleton.mp4")
    assert len(frames) == 5 and abs(fps - 2.997) < 0.01  # the source rate over the stride


def test_a_frame_without_a_person_keeps_its_row_and_is_black(tmp_path):
    video = tmp_path / "empty_room.mp4"
    with Mp4Writer(video, 10) as writer:
        for i in range(6):
            writer.add(np.full((96, 128, 3), 60 + 10 * i, np.uint8))
    proc = run(str(video), "--output", str(tmp_path / "o"), "--config", "tiny", "--set", "sampling.fps=null")  # every frame
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "o" / "empty_room" / "keypoints.parquet")
    assert len(table) == 6 and (table["num_persons"] == 0).all() and (table["status"] == "no_person").all()
    frames, _ = decode(tmp_path / "o" / "empty_room" / "skeleton.mp4")
    assert len(frames) == 6 and max(int(f.max()) for f in frames) <= 2


def test_bad_videos_are_named_and_the_others_still_run(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mp4"
    proc = run(str(text), str(CARPHONE), str(empty), str(missing), "--output", str(tmp_path / "o"), "--config", "tiny",
               "--max-frames", "4")  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pose-data extract-poses: error:")]
    assert len(errors) == 1 and "3 of 4 video(s) failed" in errors[0]
    for name in ("notes.mp4", "empty.mp4", "missing.mp4"):
        assert name in errors[0]
    assert "Traceback" not in proc.stderr
    assert len(pd.read_parquet(tmp_path / "o" / "carphone" / "keypoints.parquet")) == 4
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".lock", "carphone", "manifest.json"]
    entries = {e["name"]: e for e in json.loads((tmp_path / "o" / "manifest.json").read_text())["videos"]}
    assert entries["missing"]["status"] == "failed" and entries["missing"]["error"] == "no such file"
    assert "empty file" in entries["empty"]["error"] and entries["carphone"]["status"] == "ok"


def test_every_frame_by_flag_and_the_rate_a_preset_sets_gives_way_to_a_stride(tmp_path):
    # the default is fyp-generate's 8 fps (tests/test_official_release.py); --all-frames and --fps 0 keep every frame
    for flags, name in ((("--all-frames",), "a"), (("--fps", "0"), "b"), (("--config", "tiny", "--all-frames"), "c")):
        proc = run(str(CARPHONE), "--output", str(tmp_path / name), "--pose-backend", "mediapipe", "--max-frames", "5", *flags)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = read_pose_sequence(tmp_path / name / "carphone" / "keypoints.parquet").info
        assert info["sampling"] == {"fps": None, "frame_stride": None, "max_frames": 5}, flags
        assert abs(info["sampled_fps"] - 30000 / 1001) < 1e-3 and info["frames"] == 5
        assert pd.read_parquet(tmp_path / name / "carphone" / "keypoints.parquet")["frame"].tolist() == [0, 1, 2, 3, 4]
    # a stride given with --set replaces the preset's (and the default's) rate instead of clashing with it
    proc = run(str(CARPHONE), "--output", str(tmp_path / "d"), "--config", "tiny", "--set", "sampling.frame_stride=3", "--max-frames", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pd.read_parquet(tmp_path / "d" / "carphone" / "keypoints.parquet")["frame"].tolist() == [0, 3, 6]
    for flags, words in ((("--all-frames", "--fps", "8"), "--all-frames keeps every frame: give it without --fps"),
                         (("--all-frames", "--set", "sampling.frame_stride=2"), "without --set sampling.frame_stride"),
                         (("--fps", "0", "--frame-stride", "2"), "--fps 0 keeps every frame: give it without --frame-stride 2"),
                         (("--set", "sampling.fps=0", "--set", "sampling.frame_stride=2"), "without --set sampling.frame_stride=2")):  # fmt: skip
        proc = run(str(CARPHONE), "--output", str(tmp_path / "e"), *flags)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_bad_arguments_stop_early(tmp_path):
    proc = run(str(CARPHONE), "--output", str(tmp_path / "o"), "--fps", "8", "--frame-stride", "2")
    assert proc.returncode == 2 and "not both" in proc.stderr
    output_is_a_file = tmp_path / "a_file"
    output_is_a_file.write_text("x")
    proc = run(str(CARPHONE), "--output", str(output_is_a_file), "--config", "tiny")
    assert proc.returncode == 2 and "a_file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(str(CARPHONE), "--output", str(tmp_path / "o"), "--skeleton-style", "stickman")
    assert proc.returncode == 2 and "stickman" in proc.stderr
    same_name = tmp_path / "x" / "carphone.mp4"
    same_name.parent.mkdir()
    same_name.write_bytes(CARPHONE.read_bytes())
    proc = run(str(CARPHONE), str(same_name), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "rename one" in proc.stderr
    assert probe_video(CARPHONE).frame_count == 120


def test_rotation_variable_frame_rate_and_a_file_that_breaks_off(tmp_path):
    """Decoded as index-hdvila decodes: upright frames, true timestamps, a cut file keeps what decoded."""
    from broken_videos import VFR_TIMES, rotated_video, truncated_faststart, vfr_video

    rotated = rotated_video(tmp_path / "rotated.mp4", 90, num_frames=6, size=(64, 32))
    vfr = vfr_video(tmp_path / "vfr.mp4")
    cut = truncated_faststart(CARPHONE, tmp_path / "cut.mp4", 0.5)
    proc = run(str(rotated), str(vfr), str(cut), "--output", str(tmp_path / "o"), "--config", "tiny", "--set", "sampling.fps=null")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rot = pd.read_parquet(tmp_path / "o" / "rotated" / "keypoints.parquet")
    assert len(rot) == 6 and (rot["width"] == 32).all() and (rot["height"] == 64).all()  # display size, upright
    assert decode(tmp_path / "o" / "rotated" / "skeleton.mp4")[0][0].shape == (64, 32, 3)
    assert np.allclose(pd.read_parquet(tmp_path / "o" / "vfr" / "keypoints.parquet")["time"], VFR_TIMES, atol=1e-3)
    broken = pd.read_parquet(tmp_path / "o" / "cut" / "keypoints.parquet")
    assert 20 < len(broken) < 120 and (broken["status"] == "ok").sum() > 15


def test_a_pose_model_that_cannot_load_is_one_line_and_missing_videos_load_none(local_site, tmp_path):
    """Weights that cannot be fetched (a 404 on 127.0.0.1 stands in for an offline 'auto' download): one line naming
    the model and the way out, no traceback. A run whose only video is missing never loads the model."""
    weights = local_site.url("extract/no-such-weights.pth")
    model = ["--pose-backend", "mmpose", "--det-model", "rtmdet-tiny", "--det-checkpoint", weights, "--pose-checkpoint", "none"]
    proc = run(str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "a"), *model)
    assert proc.returncode == 2 and "missing.mp4: no such file" in proc.stderr
    assert local_site.hits.get("extract/no-such-weights.pth", 0) == 0 and "could not be loaded" not in proc.stderr
    proc = run(str(CARPHONE), "--output", str(tmp_path / "b"), *model)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "the pose model could not be loaded (mmpose detector rtmdet-tiny" in errors[0]
    assert "HTTP Error 404" in errors[0] and weights in errors[0] and "--pose-backend mediapipe" in errors[0]
