"""Hands and face from extraction to generation, as a user runs it: ``extract-poses`` with MediaPipe Holistic and the
``openpose_full`` style on the bundled driving video, ``build-laion-pose`` with the same flags on the demo photos, a
stage-1 run on those shards that records the style, and ``fyp-generate`` from the extracted ``keypoints.parquet``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import Route
from pose_data.pose.keypoints import PARTS, PersonPose
from pose_data.skeleton.render import render_skeleton

BIN = Path(sys.executable).parent
SAMPLES = Path(str(resources.files("pose_data") / "sample_data"))
CARPHONE = SAMPLES / "driving" / "carphone.mp4"
HOLISTIC_PHOTOS = Path(__file__).parent / "data" / "holistic"
FLAGS = ["--pose-backend", "mediapipe-holistic", "--skeleton-style", "openpose_full"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wb_extract")
    run(BIN / "pose-data", "extract-poses", CARPHONE, "--output", out, "--config", "tiny", *FLAGS, "--max-frames", "12", "--no-progress")
    return out / "carphone"


def test_extract_poses_writes_hands_and_face_and_draws_them(extracted):
    table = pq.read_table(extracted / "keypoints.parquet")
    info = json.loads(table.schema.metadata[b"fyp_pose_sequence"])
    assert info["skeleton_style"] == "openpose_full" and table.num_rows == 12
    rows = table.to_pylist()
    faces = [face for row in rows for face in row["face"] or [] if face is not None]
    assert len(faces) >= 6, "Holistic finds the man's face in most frames of the driving video"
    for row in rows:
        for kps, face in zip(row["keypoints"], row["face"]):
            if face is not None:  # face points lie around the body's nose
                nose = np.asarray(kps[0][:2])
                assert np.median(np.linalg.norm(np.asarray(face)[:, :2] - nose, axis=1)) < 0.25 * max(row["width"], row["height"])
    # skeleton.mp4 frames are the openpose_full drawings of the rows (lossy H.264: compare where the face dots are white)
    with av.open(str(extracted / "skeleton.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12
    row = next(r for r in rows if r["status"] == "ok" and any(f is not None for f in r["face"]))
    people = [PersonPose((0, 0, 1, 1), 1.0, kps, **{p: row[p][i] for p in PARTS}) for i, kps in enumerate(row["keypoints"])]
    drawn = render_skeleton("openpose_full", people, row["width"], row["height"], info["min_keypoint_score"])
    white = (drawn == 255).all(axis=2)
    assert white.sum() > 50
    assert frames[rows.index(row)][white].mean() > 180  # the face dots are there in the video


@pytest.fixture(scope="module")
def shards(ray_local, local_site, tmp_path_factory) -> Path:
    from pipelines.laion_pose import build_laion_pose
    from pose_data.config import load_config
    from pose_data.laion.config import LaionPoseConfig, preset_or_file

    photos = {name: SAMPLES / "laion" / name for name in ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg", "coffee.jpg")}
    photos["messi5.jpg"] = HOLISTIC_PHOTOS / "messi5.jpg"  # both hands visible (the demo photos show none)
    names = list(photos)
    urls = [local_site.add(f"wb/{name}", Route(path.read_bytes())) for name, path in photos.items()]
    meta = tmp_path_factory.mktemp("wb_meta") / "m.parquet"
    pd.DataFrame({"URL": urls, "TEXT": [f"a photo, {n}" for n in names]}).to_parquet(meta)
    out = tmp_path_factory.mktemp("wb_laion") / "laion_pose"
    cfg = load_config(LaionPoseConfig, preset_or_file("tiny"), {
        "preview_images": 0, "download": {"allow_private_addresses": True},
        "pose": {"backend": "mediapipe-holistic"}, "skeleton_style": "openpose_full"})  # fmt: skip
    manifest = build_laion_pose([str(meta)], str(out), cfg, progress=False)
    assert manifest["counts"]["ok"] >= 3, manifest["counts"]
    return out


def test_build_laion_pose_keeps_parts_in_meta_and_draws_them_in_the_shards(shards):
    import webdataset as wds
    from PIL import Image

    meta = pd.read_parquet(shards / "meta").set_index("url")
    ok = meta[meta.status == "ok"]
    assert set(PARTS) <= set(meta.columns)
    faces = [f for row in ok.face for f in row if f is not None]
    assert faces and all(np.stack(list(f)).shape == (68, 3) for f in faces)
    messi = meta.loc[[u for u in meta.index if u.endswith("messi5.jpg")][0]]
    assert messi.status == "ok" and all(np.stack(list(h[0])).shape == (21, 3) for h in (messi.hand_left, messi.hand_right))
    tars = sorted(str(p) for p in (shards / "shards").glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert len(samples) == (meta.status == "ok").sum()
    for sample in samples:
        record = json.loads(sample["json"])
        assert record["skeleton_style"] == "openpose_full"
        people = [PersonPose.from_record(p) for p in record["persons"]]
        skeleton = np.asarray(Image.open(__import__("io").BytesIO(sample["pose.png"])).convert("RGB"))
        assert np.array_equal(skeleton, render_skeleton("openpose_full", people, record["width"], record["height"], 0.5))


@pytest.fixture(scope="module")
def encoder(shards, tmp_path_factory) -> Path:
    from model.nets.tiny_base import make_tiny_base

    root = tmp_path_factory.mktemp("wb_stage1")
    base = make_tiny_base(root / "tiny-sd", seed=0)
    run(BIN / "fyp-train", "stage1", "--config", "stage1-tiny", f"data.shards={shards}", f"model.base={base}",
        f"output_dir={root / 'run'}", "max_steps=1", "validation.every=0")  # fmt: skip
    return root


def test_stage1_records_openpose_full_and_fyp_generate_draws_the_keypoints_in_it(encoder, extracted, tmp_path):
    config = json.loads((encoder / "run" / "pose_encoder" / "config.json").read_text())
    assert config["skeleton_style"] == "openpose_full"
    out = tmp_path / "video.mp4"
    run(BIN / "fyp-generate", "--base", encoder / "tiny-sd", "--pose-encoder", encoder / "run" / "pose_encoder",
        "--pose", extracted / "keypoints.parquet", "--prompt", "a man on the phone", "--num-frames", "4", "--steps", "2",
        "--height", "64", "--width", "64", "--side-by-side", "--output", out, "--no-progress")  # fmt: skip
    sidecar = json.loads(out.with_suffix(".mp4.json").read_text())
    assert sidecar["pose"]["kind"] == "keypoints" and sidecar["pose"]["skeleton_style"] == "openpose_full"
    with av.open(str(out)) as container:  # side by side: the skeleton the model was given | the frame
        poses = [f.to_ndarray(format="rgb24")[:, :64] for f in container.decode(video=0)]
    assert len(poses) == 4
    # near-white pixels are face dots: no body or hand colour of openpose_full has all three channels high
    assert max(int((pose.min(axis=2) > 180).sum()) for pose in poses) >= 3
    # an openpose (body-only) skeleton video is refused for this encoder, naming both styles
    body = tmp_path / "body"
    run(BIN / "pose-data", "extract-poses", CARPHONE, "--output", body, "--config", "tiny", "--max-frames", "4", "--no-progress")
    refused = subprocess.run([str(BIN / "fyp-generate"), "--base", str(encoder / "tiny-sd"), "--pose-encoder",
                              str(encoder / "run" / "pose_encoder"), "--pose", str(body / "carphone" / "skeleton.mp4"), "--prompt", "a",
                              "--num-frames", "4", "--steps", "2", "--height", "64", "--width", "64", "--output", str(tmp_path / "x.mp4"),
                              "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "openpose_full" in refused.stderr and "'openpose'" in refused.stderr
    # the body-only keypoints are drawn in the encoder's style all the same, with a warning that says what is missing
    drawn = subprocess.run([str(BIN / "fyp-generate"), "--base", str(encoder / "tiny-sd"), "--pose-encoder",
                            str(encoder / "run" / "pose_encoder"), "--pose", str(body / "carphone" / "keypoints.parquet"), "--prompt",
                            "a", "--num-frames", "3", "--steps", "2", "--height", "64", "--width", "64", "--output",
                            str(tmp_path / "y.mp4"), "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert "has no hand or face keypoints, so its openpose_full skeletons show bodies only" in drawn.stderr
    # a driving video, its poses extracted on the fly by the whole-body backend and kept next to the output
    driven = tmp_path / "driven.mp4"
    run(BIN / "fyp-generate", "--base", encoder / "tiny-sd", "--pose-encoder", encoder / "run" / "pose_encoder", "--pose", CARPHONE,
        "--pose-backend", "mediapipe-holistic", "--prompt", "a", "--num-frames", "3", "--steps", "2", "--height", "64", "--width",
        "64", "--output", driven, "--no-progress")  # fmt: skip
    sidecar = json.loads(driven.with_suffix(".mp4.json").read_text())
    assert sidecar["pose"]["kind"] == "driving_video" and sidecar["pose"]["skeleton_style"] == "openpose_full"
    faces = pq.read_table(tmp_path / "driven.mp4.keypoints.parquet").column("face").to_pylist()
    assert sum(face is not None for row in faces for face in row) >= 2


def test_min_hand_keypoints_keeps_the_photo_with_hands(ray_local, local_site, tmp_path):
    from pipelines.laion_pose import build_laion_pose
    from pose_data.config import load_config
    from pose_data.laion.config import LaionPoseConfig, preset_or_file

    photos = {"messi5.jpg": HOLISTIC_PHOTOS / "messi5.jpg", "astronaut.jpg": SAMPLES / "laion" / "astronaut.jpg"}
    urls = [local_site.add(f"hands/{name}", Route(path.read_bytes())) for name, path in photos.items()]
    meta = tmp_path / "m.parquet"
    pd.DataFrame({"URL": urls, "TEXT": list(photos)}).to_parquet(meta)
    cfg = load_config(LaionPoseConfig, preset_or_file("tiny"), {
        "preview_images": 0, "download": {"allow_private_addresses": True}, "pose": {"backend": "mediapipe-holistic"},
        "skeleton_style": "openpose_full", "filter": {"min_hand_keypoints": 21}})  # fmt: skip
    manifest = build_laion_pose([str(meta)], str(tmp_path / "out"), cfg, progress=False)
    rows = pd.read_parquet(tmp_path / "out" / "meta").set_index("caption")
    assert rows.loc["messi5.jpg", "status"] == "ok"
    assert rows.loc["astronaut.jpg", "status"] == "no_hand"
    assert rows.loc["astronaut.jpg", "error"] == "1 person kept, no hand found, min_hand_keypoints 21"
    assert manifest["counts"]["no_hand"] == 1 and manifest["counts"]["ok"] == 1


def test_fyp_eval_reports_hand_ap_of_a_real_video_asked_to_follow_its_own_hands(tmp_path):
    """A real photo with both hands (as a 4-frame video), its poses extracted with Holistic, then fyp-eval with the
    same backend: body and hand AP 1.0; with the body-only backend the hand AP is null and the reason names the way out."""
    from PIL import Image

    from pose_data.media.video_writer import write_video

    photo = np.asarray(Image.open(HOLISTIC_PHOTOS / "messi5.jpg").convert("RGB"))
    video = write_video([photo] * 4, tmp_path / "messi.mp4", 8.0)
    run(BIN / "pose-data", "extract-poses", video, "--output", tmp_path / "poses", "--config", "tiny", *FLAGS, "--no-progress")
    keypoints = tmp_path / "poses" / "messi" / "keypoints.parquet"
    rows = pq.read_table(keypoints).to_pylist()
    assert all(row["hand_left"][0] is not None and row["hand_right"][0] is not None for row in rows)
    run(BIN / "fyp-train", "make-tiny-clip", tmp_path / "clip")
    lines = tmp_path / "videos.jsonl"
    lines.write_text(json.dumps({"video": str(video), "prompt": "a football player", "pose": str(keypoints)}) + "\n")
    for backend in ("mediapipe-holistic", "mediapipe"):
        out = tmp_path / f"eval-{backend}"
        run(BIN / "fyp-eval", lines, "--output", out, "--clip-model", tmp_path / "clip", "--pose-backend", backend, "--device", "cpu",
            "--no-progress")  # fmt: skip
        row = pd.read_parquet(out / "metrics.parquet").iloc[0]
        summary = json.loads((out / "summary.json").read_text())
        assert row["pose_ap"] == pytest.approx(1.0)
        if backend == "mediapipe-holistic":
            assert row["hand_ap"] == pytest.approx(1.0) and summary["overall"]["hand_ap"] == pytest.approx(1.0)
        else:
            assert pd.isna(row["hand_ap"]) and "mediapipe-holistic" in row["hand_reason"]
