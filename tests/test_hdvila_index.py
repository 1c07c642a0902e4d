"""index-hdvila end to end on the bundled real videos: real PyAV decoding, real Ray, real yt-dlp."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import av
import pandas as pd
import pytest

from conftest import REPO, Route
from pose_data.config import load_config
from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file

SAMPLES = REPO / "pose_data" / "sample_data" / "hdvila"
EXPECTED = {  # clip id -> status, for the bundled metadata with the tiny preset
    "bikes.1.mp4": "ok",
    "bikes.2.mp4": "ok",
    "bikes.3.mp4": "span_out_of_range",  # 8 s - 12 s of a 10 s video
    "bikes.4.mp4": "too_short",  # 0.1 s, min_duration 0.5 s
    "bigbuckbunny.1.mp4": "ok",
    "bigbuckbunny.2.mp4": "bad_metadata",  # reversed span
    "Qx0notHere1.1.mp4": "video_missing",
}


def all_frame_times(path) -> list[float]:
    """Independent count: decode the whole file and list every frame's time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * stream.time_base) for f in container.decode(stream)]


def tiny_config(**overrides) -> HdvilaIndexConfig:
    cfg = load_config(HdvilaIndexConfig, preset_or_file("tiny"))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def indexed(ray_local, tmp_path_factory):
    from pipelines.hdvila_index import build_hdvila_index

    out = tmp_path_factory.mktemp("hdvila") / "out"
    manifest = build_hdvila_index(
        [str(SAMPLES / "hdvila_sample.jsonl")], str(SAMPLES), str(out), tiny_config(),
        captions=str(SAMPLES / "captions_sample.csv"), progress=False,
    )  # fmt: skip
    return out, manifest


def test_every_clip_gets_a_row_with_the_right_status(indexed):
    out, manifest = indexed
    index = pd.read_parquet(out / "index")
    by_clip = dict(zip(index["clip_id"], index["status"]))
    assert {k: by_clip.get(k) for k in EXPECTED} == EXPECTED
    bad = index[index.status == "bad_metadata"]
    assert len(bad) == 2  # the reversed span and the truncated last line
    assert bad["error"].str.contains("hdvila_sample.jsonl").any()  # names the file (and line)
    assert index.loc[index.status != "ok", "error"].notna().all()
    assert sum(manifest["counts"].values()) == len(index) == manifest["num_rows"]
    assert manifest["clips_without_caption"] == 0
    assert index.set_index("clip_id").loc["bikes.1.mp4", "caption"] == "people ride bicycles past a row of trees"


def test_decoded_truth_matches_an_independent_count(indexed):
    out, _ = indexed
    index = pd.read_parquet(out / "index").set_index("clip_id")
    times = {"bikes": all_frame_times(SAMPLES / "bikes.mp4"), "bigbuckbunny": all_frame_times(SAMPLES / "bigbuckbunny.mp4")}
    for clip in ("bikes.1.mp4", "bikes.2.mp4", "bigbuckbunny.1.mp4"):
        row = index.loc[clip]
        inside = [t for t in times[row.video_id] if row.span_start <= t < row.span_end]
        assert row.num_frames == len(inside)
        assert row.decoded_start == pytest.approx(inside[0], abs=1e-6)
        assert row.decoded_end == pytest.approx(inside[-1], abs=1e-6)
        assert row.fps == pytest.approx(25.0, rel=1e-3)
    assert (index.loc["bikes.1.mp4", "width"], index.loc["bikes.1.mp4", "height"]) == (640, 272)
    assert (index.loc["bigbuckbunny.1.mp4", "width"], index.loc["bigbuckbunny.1.mp4", "height"]) == (1280, 720)


def test_clip_shards_hold_decodable_square_clips(indexed):
    import webdataset as wds

    out, manifest = indexed
    index = pd.read_parquet(out / "index")
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / manifest["clip_pattern"]), shardshuffle=False, empty_check=False)}
    assert sorted(samples) == sorted(index.loc[index.status == "ok", "key"])
    for key, s in samples.items():
        assert "." not in key
        meta = json.loads(s["json"])
        with av.open(io.BytesIO(s["mp4"])) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
        assert (frames[0].width, frames[0].height) == (128, 128)
        assert len(frames) == pytest.approx(meta["decoded_duration"] * 8, abs=1.5)  # --fps 8
        assert s["txt"].decode() == index.set_index("key").loc[key, "caption"]


def test_rerun_skips_finished_shards(indexed):
    from pipelines.hdvila_index import build_hdvila_index

    out, _ = indexed
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted([*out.glob("index/*"), *out.glob("clips/*")])}  # noqa: E731
    before = digest()
    manifest = build_hdvila_index(
        [str(SAMPLES / "hdvila_sample.jsonl")], str(SAMPLES), str(out), tiny_config(),
        captions=str(SAMPLES / "captions_sample.csv"), progress=False,
    )  # fmt: skip
    assert digest() == before and manifest["timings"]["frames_decoded"] > 0


def test_a_kill_between_a_shards_index_and_its_stats_is_redone(indexed, tmp_path):
    import shutil

    from pipelines.hdvila_index import build_hdvila_index

    reference, first = indexed
    out = tmp_path / "cut"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns(".lock"))
    (out / "stats" / "00000.json").unlink()  # a kill after index/00000.parquet, before its stats
    (out / "manifest.json").unlink()
    manifest = build_hdvila_index(
        [str(SAMPLES / "hdvila_sample.jsonl")], str(SAMPLES), str(out), tiny_config(),
        captions=str(SAMPLES / "captions_sample.csv"), progress=False,
    )  # fmt: skip
    assert (out / "stats" / "00000.json").is_file() and manifest["counts"] == first["counts"]
    assert manifest["timings"]["frames_decoded"] > 0  # the shard was decoded again


def test_download_fetches_a_missing_video_with_yt_dlp(ray_local, local_site, tmp_path):
    from pipelines.hdvila_index import build_hdvila_index

    url = local_site.add("videos/dl_bikes.mp4", Route((SAMPLES / "bikes.mp4").read_bytes(), "video/mp4"))
    meta = tmp_path / "m.jsonl"
    meta.write_text(json.dumps({"video_id": "dlBikes0001", "url": url, "clip": [{"clip_id": "dlBikes0001.1.mp4", "span": ["00:00:01.000", "00:00:02.000"]}]}) + "\n"
                    + json.dumps({"video_id": "dlGone00001", "url": local_site.url("videos/gone.mp4"), "clip": [{"clip_id": "dlGone00001.1.mp4", "span": ["0", "1"]}]}) + "\n")  # fmt: skip
    videos = tmp_path / "videos"
    videos.mkdir()
    cfg = tiny_config(download=True, allow_private_addresses=True)  # served on 127.0.0.1
    cfg.clips.write_clips = False
    build_hdvila_index([str(meta)], str(videos), str(tmp_path / "out"), cfg, progress=False)
    index = pd.read_parquet(tmp_path / "out" / "index").set_index("clip_id")
    assert index.loc["dlBikes0001.1.mp4", "status"] == "ok" and index.loc["dlBikes0001.1.mp4", "num_frames"] == 25
    assert (videos / "_downloaded").is_dir()
    assert index.loc["dlGone00001.1.mp4", "status"] == "video_missing"
    assert "404" in index.loc["dlGone00001.1.mp4", "error"]


def test_missing_videos_folder_is_named(tmp_path):
    from pipelines.hdvila_index import build_hdvila_index

    with pytest.raises(FileNotFoundError, match="--videos folder not found"):
        build_hdvila_index([str(SAMPLES / "hdvila_sample.jsonl")], str(tmp_path / "nope"), str(tmp_path / "o"), tiny_config())
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def test_broken_and_odd_videos_each_become_a_row(ray_local, tmp_path):
    """Truncated, not-a-video, audio-only, rotated, variable frame rate, clipped spans, duplicates, zero-length
    spans, frames instead of clips: statuses and reasons, nothing dropped, the run completes."""
    import broken_videos as bv
    from pipelines.hdvila_index import build_hdvila_index

    videos = tmp_path / "videos"
    (videos / "nested" / "deeper").mkdir(parents=True)
    bv.truncated_faststart(SAMPLES / "bikes.mp4", videos / "truncVideo1.mp4")
    bv.random_bytes(videos / "randomBytes.mp4")
    bv.audio_only(videos / "audioOnly01.mp4")
    bv.rotated_video(videos / "nested" / "rotated0001.mp4", degrees=90, num_frames=25, size=(64, 32))
    bv.vfr_video(videos / "nested" / "deeper" / "vfrVideo001.mkv")
    shutil.copy(SAMPLES / "bikes.mp4", videos / "bikesCopy01.webm")  # any extension: found by id

    def line(vid, *spans, clip_ids=None):
        ids = clip_ids or [f"{vid}.{k}.mp4" for k in range(1, len(spans) + 1)]
        return json.dumps({"video_id": vid, "url": f"https://www.youtube.com/watch?v={vid}",
                           "clip": [{"clip_id": c, "span": list(s)} for c, s in zip(ids, spans)]})  # fmt: skip

    meta = tmp_path / "m.jsonl"
    meta.write_text("\n".join([
        line("truncVideo1", ("00:00:07.000", "00:00:09.000")),
        line("randomBytes", ("0", "1")),
        line("audioOnly01", ("0", "0.5")),
        line("rotated0001", ("0", "0.6")),
        line("vfrVideo001", ("0", "1.1")),
        line("bikesCopy01", ("00:00:08.000", "00:00:12.000"), ("3", "3"), ("1", "2"), clip_ids=["bikesCopy01.1.mp4", "bikesCopy01.2.mp4", "bikesCopy01.1.mp4"]),
        "{not json",
    ]) + "\n")  # fmt: skip
    cfg = tiny_config(clip_spans_to_video=True)
    cfg.clips.frames, cfg.clips.stride = 3, 2
    cfg.filter.min_frames, cfg.filter.min_duration = 1, 0.0
    manifest = build_hdvila_index([str(meta)], str(videos), str(tmp_path / "out"), cfg, progress=False)
    index = pd.read_parquet(tmp_path / "out" / "index")
    assert len(index) == 9 == manifest["num_rows"]
    row = {(r.clip_id, r.source.rsplit(":", 1)[-1]): r for r in index.itertuples()}
    status = {k[0]: r.status for k, r in row.items() if k[0]}
    assert status["truncVideo1.1.mp4"] == "decode_failed"
    assert status["randomBytes.1.mp4"] == "decode_failed"
    assert status["audioOnly01.1.mp4"] == "decode_failed"
    assert status["rotated0001.1.mp4"] == "ok" and status["vfrVideo001.1.mp4"] == "ok"
    from broken_videos import VFR_TIMES

    vfr = index.set_index("clip_id").loc["vfrVideo001.1.mp4"]
    kept = [t for t in VFR_TIMES if t < 1.1]
    assert vfr.num_frames == len(kept) and vfr.fps == pytest.approx((len(kept) - 1) / (kept[-1] - kept[0]))
    rotated = index.set_index("clip_id").loc["rotated0001.1.mp4"]
    assert (rotated.width, rotated.height, rotated.rotation) == (32, 64, 90)  # display size after a quarter turn
    clipped = index[(index.clip_id == "bikesCopy01.1.mp4") & (index.status == "ok")].iloc[0]
    assert bool(clipped.span_clipped) and clipped.decoded_end == pytest.approx(9.96) and "clipped" in clipped.error
    bad = index[index.status == "bad_metadata"]
    assert len(bad) == 3  # the zero-length span, the duplicate clip id, the broken line
    assert bad.error.str.contains("duplicate clip_id").sum() == 1 and bad.error.str.contains("m.jsonl:7").sum() == 1
    assert manifest["spans_clipped"] == 1
    import webdataset as wds

    for s in wds.WebDataset(str(tmp_path / "out" / manifest["clip_pattern"]), shardshuffle=False, empty_check=False):
        jpgs = sorted(k for k in s if k.endswith(".jpg"))
        assert 1 <= len(jpgs) <= 3 and "mp4" not in s  # --frames 3 --stride 2: frames, not a clip


def test_long_spans_are_filtered_before_decoding_and_frames_per_clip_are_bounded(tmp_path):
    """A 99-hour span used to be decoded whole before max_duration was looked at."""
    from broken_videos import long_video
    from pose_data.hdvila.shard import index_clip

    video = long_video(tmp_path / "long.mp4", seconds=30)
    row = {"status": None, "error": None, "video_id": "long", "span_start": 0.0, "span_end": 99 * 3600.0}
    fields, clip = index_clip(row, video, load_config(HdvilaIndexConfig, preset_or_file("tiny"), {"filter": {"max_duration": 60.0}}))
    assert fields["status"] == "filtered" and "not decoded" in fields["error"] and fields["frames_decoded"] is None
    row = {**row, "span_end": 20.0}  # 500 frames at 25 fps
    cfg = load_config(HdvilaIndexConfig, preset_or_file("tiny"), {"filter": {"max_frames": 100}, "clips": {"write_clips": True}})
    fields, clip = index_clip(row, video, cfg)
    assert fields["status"] == "filtered" and "max_frames 100" in fields["error"] and clip is None
    fields, clip = index_clip({**row, "span_end": 3.0}, video, cfg)  # 75 frames: within the bound
    assert fields["status"] == "ok" and fields["num_frames"] == 75 and clip
