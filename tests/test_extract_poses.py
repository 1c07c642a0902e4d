"""``pose-data extract-poses`` for real: the bundled driving video (a man in a car), MediaPipe, PyAV decoding and
H.264 writing; frame sampling by rate and stride; bad videos named while the others still run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from pose_data.extract_poses.sequence import read_pose_sequence, render_rows
from pose_data.media.frame_sampling import RateSampler, StrideSampler, make_sampler, resampled_count
from pose_data.media.video_probe import probe_video
from pose_data.media.video_writer import Mp4Writer, read_video_comment

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


def copy_of_carphone(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CARPHONE.read_bytes())
    return path


def half_results(out: Path) -> list[str]:
    """Folders under ``out`` holding one of extract-poses' two files without the other."""
    return [p.name for p in out.iterdir() if p.is_dir() and (p / "skeleton.mp4").exists() != (p / "keypoints.parquet").exists()]


def test_overwrite_deletes_only_what_extract_poses_wrote(tmp_path):
    """Issue 18 item 2: --overwrite deleted everything in --output, the input video included. Now it deletes only
    extract-poses' own video folders and manifest; a folder of another command is refused whole."""
    out = tmp_path / "o"
    video = copy_of_carphone(out / "carphone.mp4")  # the input lives in DIR itself
    walk = copy_of_carphone(tmp_path / "walk.mp4")
    first = run(str(video), str(walk), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "notes.txt").write_text("mine\n")
    (out / "photos").mkdir()
    (out / "photos" / "keep.txt").write_text("mine too\n")
    (out / "empty").mkdir()
    copy_of_carphone(out / "clip" / "clip.mp4")  # a video in the folder its poses would go to
    (out / "walk" / "my_notes.txt").write_text("written into an output folder by hand\n")

    again = run(str(video), str(out / "clip" / "clip.mp4"), "--output", str(out), "--config", "tiny", "--max-frames", "2",
                "--overwrite")  # fmt: skip
    assert video.is_file() and video.read_bytes() == CARPHONE.read_bytes(), "--overwrite deleted the input video"
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "photos" / "keep.txt").is_file() and (out / "empty").is_dir()
    assert (out / "clip" / "clip.mp4").read_bytes() == CARPHONE.read_bytes() and sorted(os.listdir(out / "clip")) == ["clip.mp4"]
    assert sorted(os.listdir(out / "walk")) == ["keypoints.parquet", "my_notes.txt", "skeleton.mp4"]  # not only ours: kept
    assert len(pd.read_parquet(out / "carphone" / "keypoints.parquet")) == 2  # redone with the new settings
    error = [line for line in again.stderr.splitlines() if line.startswith("pose-data extract-poses: error:")][0]
    assert f"{out / 'clip'} holds files pose-data extract-poses did not write (clip.mp4)" in error and "another --output" in error
    entries = {e["name"]: e for e in json.loads((out / "manifest.json").read_text())["videos"]}
    assert entries["carphone"]["status"] == "ok" and entries["clip"]["status"] == "failed"

    # a video folder of an earlier run that holds only extract-poses' files goes; the rest of DIR stays
    (out / "walk" / "my_notes.txt").unlink()
    third = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "2", "--overwrite")
    assert third.returncode == 0, third.stderr[-2000:]
    assert sorted(os.listdir(out)) == [".lock", "carphone", "carphone.mp4", "clip", "empty", "manifest.json", "notes.txt", "photos"]

    # the folder of another command: its manifest is never overwritten, with or without --overwrite
    laion = tmp_path / "laion"
    laion.mkdir()
    (laion / "manifest.json").write_text(json.dumps({"command": "pose-data build-laion-pose"}))
    (laion / "shards").mkdir()
    for flags in ((), ("--overwrite",)):
        proc = run(str(CARPHONE), "--output", str(laion), "--config", "tiny", "--max-frames", "2", *flags)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"{laion / 'manifest.json'} is written by pose-data build-laion-pose; use another --output" in proc.stderr
    assert sorted(os.listdir(laion)) == [".lock", "manifest.json", "shards"]
    assert json.loads((laion / "manifest.json").read_text()) == {"command": "pose-data build-laion-pose"}


def test_dotted_names_stay_inside_output_and_colliding_names_are_refused(tmp_path):
    """Issue 18 item 5: ``...mp4`` wrote into DIR's parent and ``..mp4`` into DIR itself. Folder names are made safe
    (leading dots -> ``_``, the manifest's own name avoided) and recorded in the manifest."""
    work = tmp_path / "work"
    videos = [copy_of_carphone(tmp_path / "in" / name) for name in ("...mp4", "..mp4", ".hidden.mp4", "manifest.json.mp4")]
    out = work / "o"
    proc = run(*map(str, videos), "--output", str(out), "--config", "tiny", "--max-frames", "2")
    assert os.listdir(work) == ["o"], "written outside --output"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == [".lock", "_", "__", "_hidden", "manifest.json", "manifest.json_"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["name"]: e["source"] for e in manifest["videos"]} == {
        "__": str(videos[0]), "_": str(videos[1]), "_hidden": str(videos[2]), "manifest.json_": str(videos[3])}  # fmt: skip
    for entry in manifest["videos"]:
        assert entry["status"] == "ok" and entry["output"] == str(out / entry["name"])
        assert sorted(os.listdir(out / entry["name"])) == ["keypoints.parquet", "skeleton.mp4"]
        assert read_pose_sequence(out / entry["name"] / "keypoints.parquet").info["source"] == entry["source"]
        assert read_video_comment(out / entry["name"] / "skeleton.mp4")["source"] == entry["source"]

    # two videos that would share a folder: a.mp4 and a.mov, .b.mp4 and _b.mp4; refused before DIR is touched
    for pair in (("a.mp4", "a.mov"), (".b.mp4", "_b.mp4")):
        first, second = (copy_of_carphone(tmp_path / "in" / name) for name in pair)
        proc = run(str(first), str(second), "--output", str(tmp_path / "pair"), "--config", "tiny")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"{first} and {second} would both write <output>/{pair[1][:-4]}/: rename one of them" in proc.stderr
        assert not (tmp_path / "pair").exists()


def test_a_video_changed_at_the_same_path_is_redone(tmp_path):
    """Issue 18 item 11: a re-run reused the output of a video that had changed at the same path. The keypoints
    record the file's size, mtime and the hash of its head; any of them changed and the video is redone."""
    video = copy_of_carphone(tmp_path / "clip.mp4")
    out = tmp_path / "o"
    assert run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3").returncode == 0
    unchanged = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert unchanged.returncode == 0 and "(skipped)" in unchanged.stdout

    with Mp4Writer(video, 10) as writer:  # another video under the same name
        for i in range(6):
            writer.add(np.full((96, 128, 3), 60 + 10 * i, np.uint8))
    changed = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert changed.returncode == 0 and "(ok)" in changed.stdout, changed.stdout + changed.stderr[-2000:]
    table = pd.read_parquet(out / "clip" / "keypoints.parquet")
    assert (table["width"] == 128).all() and (table["status"] == "no_person").all()
    assert decode(out / "clip" / "skeleton.mp4")[0][0].shape == (96, 128, 3)
    stamp = read_pose_sequence(out / "clip" / "keypoints.parquet").info["source_file"]
    assert stamp["bytes"] == video.stat().st_size and stamp["mtime_ns"] == video.stat().st_mtime_ns

    # the same size and mtime, one byte of the head different (the handler name in the header): redone too
    copy_of_carphone(video)
    assert run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3").returncode == 0
    before = video.stat()
    data = CARPHONE.read_bytes()
    assert data.count(b"VideoHandler") == 1
    video.write_bytes(data.replace(b"VideoHandler", b"VideoHandleR"))
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    edited = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert edited.returncode == 0 and "(ok)" in edited.stdout, edited.stdout + edited.stderr[-2000:]
    assert json.loads((out / "manifest.json").read_text())["videos"][0]["source_file"]["bytes"] == before.st_size


def test_a_non_utf8_file_name_is_stored_escaped_and_never_half_written(tmp_path):
    """Issue 18 item 13: a file name that is not UTF-8 failed in pyarrow and left skeleton.mp4 without
    keypoints.parquet. Its name is stored escaped (``caf\\udce9``, as fyp-eval stores it), folder name too."""
    video = copy_of_carphone(tmp_path / os.fsdecode(b"caf\xe9.mp4"))
    out = tmp_path / "o"
    proc = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert half_results(out) == []
    assert proc.returncode == 0, proc.stderr[-2000:]
    escaped = str(tmp_path / "caf\\udce9.mp4")  # a backslash and the letters udce9
    assert f"{escaped}: 3 frames at 8 fps -> {out}/caf\\udce9 (ok)" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_bytes().decode("utf-8"))
    assert manifest["videos"][0]["name"] == "caf\\udce9" and manifest["videos"][0]["source"] == escaped
    sequence = read_pose_sequence(out / "caf\\udce9" / "keypoints.parquet")
    assert sequence.info["source"] == escaped and len(sequence.table) == 3
    assert read_video_comment(out / "caf\\udce9" / "skeleton.mp4")["source"] == escaped
    again = run(str(video), "--output", str(out), "--config", "tiny", "--max-frames", "3")
    assert again.returncode == 0 and "(skipped)" in again.stdout


def test_a_killed_run_leaves_no_half_video_folder(tmp_path):
    """Issue 18 item 13: a video's files are written into a hidden temp folder renamed into place when both are
    there; a run killed while it writes leaves no ``DIR/<name>/``, and the next run sweeps the temp folder."""
    out = tmp_path / "o"
    proc = subprocess.Popen([str(BIN), "extract-poses", str(CARPHONE), "--output", str(out), "--config", "tiny", "--all-frames",
                             "--batch-size", "1", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("**/.skeleton.mp4.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # some frames in
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []  # no video folder, no manifest
    rerun = run(str(CARPHONE), "--output", str(out), "--config", "tiny", "--max-frames", "2")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(os.listdir(out)) == [".lock", "carphone", "manifest.json"]
    assert sorted(os.listdir(out / "carphone")) == ["keypoints.parquet", "skeleton.mp4"]


def test_video_folder_names_are_safe_and_short_enough():
    from pose_data.extract_poses.output import video_folder_name

    cases = {"...mp4": "__", "..mp4": "_", ".mp4": "_mp4", ".clip.mov": "_clip", "a.b.mp4": "a.b", "manifest.json.mp4": "manifest.json_",
             "dir/dance.mp4": "dance", os.fsdecode(b"caf\xe9.mp4"): "caf\\udce9"}  # fmt: skip
    assert {video: video_folder_name(video) for video in cases} == cases
    long_a, long_b = os.fsdecode(b"\xff" * 240 + b"a.mp4"), os.fsdecode(b"\xff" * 240 + b"b.mp4")  # 1,441 characters escaped
    name_a, name_b = video_folder_name(long_a), video_folder_name(long_b)
    assert len(name_a.encode()) <= 200 and name_a.startswith("\\udcff\\udcff") and name_a != name_b
