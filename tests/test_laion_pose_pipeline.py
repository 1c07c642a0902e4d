"""End to end: real img2dataset downloads from 127.0.0.1, real Ray, real MediaPipe, real photos."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import REPO, Route
from pose_data.config import load_config
from pose_data.laion.config import LaionPoseConfig, preset_or_file

SAMPLES = REPO / "pose_data" / "sample_data" / "laion"


def _photo(name: str) -> Image.Image:
    return Image.open(SAMPLES / name)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _astronaut_16bit_png() -> bytes:
    rgb = np.asarray(_photo("astronaut.jpg").convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return _encode(Image.fromarray(rgb), "PNG")


def _astronaut_rgba_png() -> bytes:
    im = _photo("astronaut.jpg").convert("RGBA")
    im.putalpha(255)
    return _encode(im, "PNG")


def _astronaut_rotated_jpeg() -> bytes:
    """Stored on its side with EXIF orientation 8 (rotate 90 CW to view): upright once honoured."""
    im = _photo("astronaut.jpg").transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    return _encode(im, "JPEG", exif=exif.tobytes())


# (name, body, content type, expected status); order = input order
CASES = [
    ("astronaut.jpg", lambda: (SAMPLES / "astronaut.jpg").read_bytes(), "image/jpeg", "ok"),
    # a head-and-shoulders portrait: 7 confident keypoints, the filter wants 8
    ("hopper.jpg", lambda: (SAMPLES / "grace_hopper.jpg").read_bytes(), "image/jpeg", "low_confidence"),
    ("coffee.jpg", lambda: (SAMPLES / "coffee.jpg").read_bytes(), "image/jpeg", "no_person"),
    ("dead.jpg", None, None, "download_failed"),
    ("page.jpg", lambda: b"<!DOCTYPE html><html><body>moved</body></html>", "text/html", "decode_failed"),
    ("empty.jpg", lambda: b"", "image/jpeg", "decode_failed"),
    ("truncated.jpg", lambda: (SAMPLES / "astronaut.jpg").read_bytes()[:3000], "image/jpeg", "decode_failed"),
    ("astronaut_cmyk.jpg", lambda: _encode(_photo("astronaut.jpg").convert("CMYK"), "JPEG"), "image/jpeg", "ok"),
    ("astronaut_gray.jpg", lambda: _encode(_photo("astronaut.jpg").convert("L"), "JPEG"), "image/jpeg", "ok"),
    ("astronaut_16bit.png", _astronaut_16bit_png, "image/png", "ok"),
    ("astronaut_rgba.png", _astronaut_rgba_png, "image/png", "ok"),
    ("astronaut_rotated.jpg", _astronaut_rotated_jpeg, "image/jpeg", "ok"),
    ("tiny.jpg", lambda: _encode(_photo("astronaut.jpg").resize((40, 40)), "JPEG"), "image/jpeg", "too_small"),
    ("bomb.png", lambda: _bomb(), "image/png", "decode_failed"),
]


def _bomb() -> bytes:
    from bad_images import decompression_bomb_png

    return decompression_bomb_png()


@pytest.fixture(scope="module")
def metadata(local_site, tmp_path_factory) -> Path:
    rows = []
    for k, (name, body, ctype, _status) in enumerate(CASES):
        if body is not None:
            local_site.add(f"lp/{name}", Route(body(), ctype))
        rows.append({"SAMPLE_ID": 5000 + k, "URL": local_site.url(f"lp/{name}"), "TEXT": f"caption of {name}", "similarity": 0.3 + k / 100})
    path = tmp_path_factory.mktemp("meta") / "laion.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def tiny_config(**overrides) -> LaionPoseConfig:
    cfg = load_config(LaionPoseConfig, preset_or_file("laion_pose-tiny"),
                      {"download": {"timeout": 3, "allow_private_addresses": True}, "preview_images": 4})  # fmt: skip
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def built(ray_local, metadata, tmp_path_factory):
    from pipelines.laion_pose import build_laion_pose

    out = tmp_path_factory.mktemp("lp") / "out"
    manifest = build_laion_pose([str(metadata)], str(out), tiny_config(), progress=False)
    return out, manifest


def test_every_input_row_has_one_output_row_with_the_right_status(built):
    out, manifest = built
    meta = pd.read_parquet(out / "meta").sort_values("key").reset_index(drop=True)
    assert len(meta) == len(CASES)
    got = dict(zip(meta["caption"], meta["status"]))
    expected = {f"caption of {name}": status for name, _b, _c, status in CASES}
    assert got == expected
    assert meta.loc[meta.status != "ok", "error"].notna().all()
    assert meta.loc[meta.status == "ok", "error"].isna().all()
    error = dict(zip(meta["caption"], meta["error"]))
    assert "decompression bomb: 30000x30000" in error["caption of bomb.png"]
    assert "7 keypoints >= 0.50, need 8" in error["caption of hopper.jpg"]
    assert "404" in error["caption of dead.jpg"]
    assert "40x40" in error["caption of tiny.jpg"]
    # carried input columns, and the shard each row belongs to
    assert sorted(meta["SAMPLE_ID"]) == [5000 + k for k in range(len(CASES))]
    assert set(meta["shard"]) == {"00000", "00001", "00002", "00003"}
    assert manifest["counts"]["ok"] == sum(1 for c in CASES if c[3] == "ok")
    assert sum(manifest["counts"].values()) == manifest["num_rows"] == len(CASES)


def test_webdataset_reads_the_kept_samples(built):
    import webdataset as wds

    out, manifest = built
    meta = pd.read_parquet(out / "meta")
    ds = wds.WebDataset(str(out / manifest["shard_pattern"]), shardshuffle=False, empty_check=False)
    samples = {s["__key__"]: s for s in ds}
    assert sorted(samples) == sorted(meta.loc[meta.status == "ok", "key"])
    for key, s in samples.items():
        assert set(s) >= {"jpg", "pose.png", "txt", "json"}
        image = Image.open(io.BytesIO(s["jpg"]))
        skeleton = Image.open(io.BytesIO(s["pose.png"]))
        info = json.loads(s["json"])
        assert image.mode == "RGB" and skeleton.size == image.size == (info["width"], info["height"])
        assert np.asarray(skeleton).max() > 0, "a kept sample has a visible skeleton"
        assert len(info["persons"]) >= 1 and len(info["persons"][0]["keypoints"]) == 17
        assert s["txt"].decode() == meta.set_index("key").loc[key, "caption"]


def test_odd_formats_give_the_same_pose_as_the_plain_photo(built):
    """CMYK, grayscale, 16-bit, RGBA and EXIF-rotated versions of one photo: nose within a few pixels."""
    out, _ = built
    meta = pd.read_parquet(out / "meta").set_index("caption")
    nose = {name: np.asarray(meta.loc[f"caption of {name}", "keypoints"][0][0][:2].tolist()) for name in (
        "astronaut.jpg", "astronaut_cmyk.jpg", "astronaut_gray.jpg", "astronaut_16bit.png", "astronaut_rgba.png", "astronaut_rotated.jpg")}
    for name, xy in nose.items():
        assert np.abs(xy - nose["astronaut.jpg"]).max() < 12, (name, xy, nose["astronaut.jpg"])


def test_manifest_and_preview(built):
    out, manifest = built
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"]
    assert on_disk["config"]["pose"]["backend"] == "mediapipe"
    assert on_disk["versions"]["mediapipe"] == "0.10.21"
    assert [s["rows"] for s in on_disk["shards"]] == [4, 4, 4, 2]
    preview = Image.open(out / "preview.png")
    assert preview.width >= 4 * 150


def _digest(out: Path) -> dict[str, str]:
    files = sorted([*out.glob("shards/*.tar"), *out.glob("meta/*.parquet")])
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_rerun_skips_finished_shards_and_gives_identical_output(built, metadata, local_site):
    from pipelines.laion_pose import build_laion_pose

    out, _ = built
    before = _digest(out)
    hits = dict(local_site.hits)
    build_laion_pose([str(metadata)], str(out), tiny_config(), progress=False)
    assert _digest(out) == before
    assert local_site.hits == hits, "nothing was downloaded again"


def test_killed_run_resumes_to_the_same_output(built, metadata, tmp_path):
    """SIGKILL the CLI once the first shard is written; the re-run completes it byte for byte."""
    from pipelines.laion_pose import build_laion_pose

    reference, _ = built
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipelines.cli", "build-laion-pose", str(metadata), "--output", str(out),
           "--config", "tiny", "--timeout", "3", "--no-progress", "--preview-images", "4", "--allow-private-addresses"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "meta" / "00000.parquet").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    assert len(list((out / "meta").glob("*.parquet"))) < 4
    build_laion_pose([str(metadata)], str(out), tiny_config(), progress=False)
    assert _digest(out) == _digest(reference)


def test_a_kill_between_a_shards_parquet_and_its_stats_is_redone(built, metadata, tmp_path):
    """The state a kill leaves after meta/NNNNN.parquet and before stats/NNNNN.json: the shard is not done."""
    import shutil

    from pipelines.laion_pose import build_laion_pose

    reference, _ = built
    out = tmp_path / "cut"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns(".lock"))
    (out / "stats" / "00001.json").unlink()
    (out / "manifest.json").unlink()
    manifest = build_laion_pose([str(metadata)], str(out), tiny_config(), progress=False)
    assert (out / "stats" / "00001.json").is_file() and manifest["num_rows"] == json.loads((reference / "manifest.json").read_text())["num_rows"]
    assert _digest(out) == _digest(reference)


def test_a_changed_config_is_refused_on_resume(built, metadata):
    from pipelines.laion_pose import build_laion_pose

    out, _ = built
    cfg = tiny_config()
    cfg.filter.max_persons = 1
    with pytest.raises(ValueError, match="filter.max_persons: 3 -> 1"):
        build_laion_pose([str(metadata)], str(out), cfg, progress=False)


def test_mmpose_backend_runs_in_the_actor_pool(ray_local, local_site, tmp_path):
    """RTMDet-tiny + RTMPose-m built from MMPose's/MMDet's own configs with random weights, in a Ray
    actor: plumbing only (random weights find nobody), every row gets its status and reason."""
    from pipelines.laion_pose import build_laion_pose

    urls = [local_site.add("mm/astronaut.jpg", Route((SAMPLES / "astronaut.jpg").read_bytes())), local_site.url("mm/dead.jpg")]
    meta = tmp_path / "m.csv"
    pd.DataFrame({"URL": urls, "TEXT": ["astronaut", "dead"]}).to_csv(meta, index=False)
    cfg = tiny_config()
    cfg.pose.backend, cfg.pose.det_model = "mmpose", "rtmdet-tiny"
    cfg.pose.det_checkpoint = cfg.pose.pose_checkpoint = None
    manifest = build_laion_pose([str(meta)], str(tmp_path / "out"), cfg, progress=False)
    rows = pd.read_parquet(tmp_path / "out" / "meta").set_index("caption")
    assert rows.loc["astronaut", "status"] == "no_person" and rows.loc["astronaut", "error"] == "no person detected"
    assert rows.loc["dead", "status"] == "download_failed"
    assert manifest["min_keypoint_score_used"] == 0.3  # the mmpose default, not mediapipe's 0.5


def test_a_pose_model_that_cannot_load_stops_the_run_before_any_download(ray_local, local_site, tmp_path):
    """Weights that cannot be fetched (a 404 on 127.0.0.1 stands in for an offline 'auto' download): one line
    naming the model and the way out, exit code 2, and not one image requested. A missing local path is refused
    before Ray even starts."""
    url = local_site.add("mmfail/astronaut.jpg", Route((SAMPLES / "astronaut.jpg").read_bytes()))
    meta = tmp_path / "m.csv"
    pd.DataFrame({"URL": [url], "TEXT": ["astronaut"]}).to_csv(meta, index=False)
    weights = local_site.url("mmfail/no-such-weights.pth")
    cmd = [sys.executable, "-m", "pipelines.cli", "build-laion-pose", str(meta), "--output", str(tmp_path / "o"), "--config", "tiny",
           "--pose-backend", "mmpose", "--det-model", "rtmdet-tiny", "--det-checkpoint", weights, "--pose-checkpoint", "none",
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "the pose model could not be loaded" in errors[0] and "HTTP Error 404" in errors[0] and weights in errors[0]
    assert "--pose-backend mediapipe" in errors[0]
    assert local_site.hits.get("mmfail/astronaut.jpg", 0) == 0  # stopped before downloading
    cmd[cmd.index(weights)] = str(tmp_path / "missing.pth")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "missing.pth' does not exist" in proc.stderr and "(PoseBatchRunner" not in proc.stderr


def test_mmpose_skeleton_style_is_written(built, ray_local, metadata, tmp_path):
    """Same input with --skeleton-style mmpose: same statuses, skeletons drawn in MMPose's colours."""
    import webdataset as wds

    from pipelines.laion_pose import build_laion_pose

    reference, _ = built
    cfg = tiny_config()
    cfg.skeleton_style = "mmpose"
    manifest = build_laion_pose([str(metadata)], str(tmp_path / "mm"), cfg, progress=False)
    a = pd.read_parquet(reference / "meta").set_index("key")["status"]
    b = pd.read_parquet(tmp_path / "mm" / "meta").set_index("key")["status"]
    assert a.equals(b)
    for s in wds.WebDataset(str(tmp_path / "mm" / manifest["shard_pattern"]), shardshuffle=False, empty_check=False):
        skeleton = np.asarray(Image.open(io.BytesIO(s["pose.png"])).convert("RGB")).reshape(-1, 3)
        colours = {tuple(c) for c in np.unique(skeleton, axis=0)}
        assert (0, 255, 0) in colours or (255, 128, 0) in colours  # MMPose's COCO link colours
        assert json.loads(s["json"])["skeleton_style"] == "mmpose"
