"""``index-hdvila --caption-model`` on the bundled real videos with a tiny captioner, on the real local Ray: which
clips are captioned and from where, the frames the captioner sees, failed batches, a killed captioning actor, and
the captioner's settings on resume."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from actor_kill import actor_pids, run_and_kill_mid_run
from conftest import REPO
from model.nets.tiny_captioner import make_tiny_captioner
from pose_data.config import load_config
from pose_data.hdvila import shard as shard_module
from pose_data.hdvila.caption_frames import KeptFrames, downscaled
from pose_data.hdvila.captioner import CaptionBatchRunner
from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file
from pose_data.hdvila.shard import decode_shard, write_shard

SAMPLES = REPO / "pose_data" / "sample_data" / "hdvila"
OK_CLIPS = ["bikes.1.mp4", "bikes.2.mp4", "bigbuckbunny.1.mp4"]
VIDEOS = {"bikes": str(SAMPLES / "bikes.mp4"), "bigbuckbunny": str(SAMPLES / "bigbuckbunny.mp4")}


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory) -> Path:
    return make_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny", seed=0)


def config(captioner: Path | None, **caption) -> HdvilaIndexConfig:
    layer = {"preview_clips": 0, "caption": {"model": str(captioner) if captioner else None, "max_tokens": 12, **caption}}
    return load_config(HdvilaIndexConfig, preset_or_file("tiny"), layer)


def run(out: Path, cfg: HdvilaIndexConfig, captions: Path | None = None, metadata: Path = SAMPLES / "hdvila_sample.jsonl") -> dict:
    from pipelines.hdvila_index import build_hdvila_index

    return build_hdvila_index([str(metadata)], str(SAMPLES), str(out), cfg, captions=str(captions) if captions else None, progress=False)


def sample_rows():
    """The bundled metadata as the rows of one planned shard."""
    from pipelines.hdvila_index import clip_tables
    from pose_data.hdvila.metadata import metadata_files

    return next(clip_tables(metadata_files([str(SAMPLES / "hdvila_sample.jsonl")]), {}))


def tar_captions(out: Path) -> dict[str, str]:
    samples = wds.WebDataset(sorted(str(p) for p in (out / "clips").glob("*.tar")), shardshuffle=False)
    return {s["__key__"]: s["txt"].decode("utf-8") for s in samples}


def index_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "index").set_index("clip_id")


def test_every_kept_clip_without_a_caption_is_captioned_by_the_model(ray_local, captioner_dir, tmp_path):
    manifest = run(tmp_path / "a", config(captioner_dir))
    index = index_of(tmp_path / "a")
    ok = index[index["status"] == "ok"]
    assert sorted(ok.index) == sorted(OK_CLIPS)
    assert (ok["caption"].str.len() > 0).all() and set(ok["caption_source"]) == {"model"} and set(ok["caption_error"]) == {""}
    assert ok.loc["bikes.1.mp4", "caption"] != ok.loc["bigbuckbunny.1.mp4", "caption"]  # the frames reach the model
    assert set(index.loc[index["status"] != "ok", "caption_source"]) == {""}  # nothing to caption there
    assert tar_captions(tmp_path / "a") == dict(zip(ok["key"], ok["caption"]))  # the trainer reads what the index says
    assert manifest["caption_counts"] == {"csv": 0, "model": 3, "none": 0, "failed": 0}
    assert manifest["captioner"]["model"] == str(captioner_dir) and len(manifest["captioner"]["folder_sha256"]) == 64
    assert manifest["captioner"]["prompt"].startswith("Describe this video") and manifest["captioner"]["max_tokens"] == 12
    # greedy decoding: a second run writes the same captions
    run(tmp_path / "b", config(captioner_dir))
    assert index_of(tmp_path / "b")["caption"].equals(index["caption"])


def test_csv_captions_are_kept_and_only_the_others_generated_unless_recaption(ray_local, captioner_dir, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text('part_id,clip_id,caption\n0,bikes.1.mp4,"people ride bicycles past a row of trees"\n')
    manifest = run(tmp_path / "a", config(captioner_dir), captions)
    index = index_of(tmp_path / "a")
    assert index.loc["bikes.1.mp4", "caption"] == "people ride bicycles past a row of trees"
    assert index.loc["bikes.1.mp4", "caption_source"] == "csv"
    assert list(index.loc[["bikes.2.mp4", "bigbuckbunny.1.mp4"], "caption_source"]) == ["model", "model"]
    assert manifest["caption_counts"] == {"csv": 1, "model": 2, "none": 0, "failed": 0}
    generated = index.loc["bikes.2.mp4", "caption"]

    manifest = run(tmp_path / "re", config(captioner_dir, recaption=True), captions)
    again = index_of(tmp_path / "re")
    assert set(again.loc[OK_CLIPS, "caption_source"]) == {"model"} and manifest["caption_counts"]["model"] == 3
    assert again.loc["bikes.1.mp4", "caption"] != "people ride bicycles past a row of trees"
    assert again.loc["bikes.2.mp4", "caption"] == generated
    # without a captioner: the CSV's captions, the rest empty, as before
    plain = run(tmp_path / "plain", config(None), captions)
    assert plain["caption_counts"] == {"csv": 1, "model": 0, "none": 2, "failed": 0} and plain["captioner"] is None


def test_the_captioner_sees_frames_the_clip_writer_kept(captioner_dir, monkeypatch):
    kept: list[list[np.ndarray]] = []

    class RecordingKeptFrames(KeptFrames):
        def __init__(self, *args):
            super().__init__(*args)
            kept.append([])

        def add(self, rgb):
            kept[-1].append(rgb)  # the writer hands over every frame it writes
            super().add(rgb)

    monkeypatch.setattr(shard_module, "KeptFrames", RecordingKeptFrames)
    decoded, frames = decode_shard(0, sample_rows(), VIDEOS, config(captioner_dir, frames=4, max_side=64))
    # one collector per row wanting a caption (all 8: no caption CSV), in row order; rows 0, 1 and 4 are kept
    assert len(frames) == 3 and len(kept) == 8 and decoded.caption_rows == [0, 1, 4]
    for clip_frames, written, sample in zip(frames, [kept[n] for n in decoded.caption_rows], decoded.samples):
        with av.open(io.BytesIO(sample["mp4"])) as container:
            assert sum(1 for _ in container.decode(video=0)) == len(written)  # what was recorded is the clip's frames
        assert len(clip_frames.indices) == 4 and clip_frames.fps == 8.0  # the writer's rate (--fps 8)
        for index, frame in zip(clip_frames.indices, clip_frames.frames):
            assert np.array_equal(frame, downscaled(written[index], 64)) and max(frame.shape[:2]) == 64
        assert clip_frames.indices[0] < len(written) / 4 and clip_frames.indices[-1] >= 3 * len(written) / 4  # spread


def test_a_failing_batch_gives_its_clips_the_reason_and_the_rest_are_captioned(captioner_dir, tmp_path, monkeypatch):
    cfg = config(captioner_dir, batch_size=2)
    decoded, frames = decode_shard(0, sample_rows(), VIDEOS, cfg)
    runner = CaptionBatchRunner(cfg.caption)
    real = runner.captioner.caption_batch
    calls = []

    def first_batch_fails(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise ValueError("the frames could not be processed")
        return real(batch)

    monkeypatch.setattr(runner.captioner, "caption_batch", first_batch_fails)
    results = runner.caption(frames, 0, len(frames))
    for folder in ("index", "clips"):
        (tmp_path / folder).mkdir()
    stats = write_shard(decoded, cfg, tmp_path, captions=results)
    index = pd.read_parquet(tmp_path / "index").set_index("clip_id")
    assert calls == [2, 1] and stats.counts["ok"] == 3
    assert list(index.loc[OK_CLIPS, "caption_error"]) == ["ValueError: the frames could not be processed"] * 2 + [""]
    assert list(index.loc[OK_CLIPS, "caption"][:2]) == ["", ""] and index.loc["bigbuckbunny.1.mp4", "caption_source"] == "model"
    assert tar_captions(tmp_path)[index.loc["bikes.1.mp4", "key"]] == ""


def test_a_captioning_actor_killed_mid_run_is_replaced_and_every_clip_captioned_once(ray_local, captioner_dir, tmp_path):
    spans = [(start, start + 1.0) for start in np.arange(0.0, 8.5, 0.5)]  # 17 one-second clips of a real video
    metadata = tmp_path / "many.jsonl"
    metadata.write_text(json.dumps({"video_id": "bikes", "url": "https://www.youtube.com/watch?v=bikes", "clip": [
        {"clip_id": f"bikes.{n}.mp4", "span": [f"00:00:{a:06.3f}", f"00:00:{b:06.3f}"]} for n, (a, b) in enumerate(spans)]}) + "\n")  # fmt: skip
    cfg = config(captioner_dir, max_tokens=24, batch_size=1)
    cfg.shard_size = 1
    reference = run(tmp_path / "reference", cfg, metadata=metadata)
    # a few shards done: mid-run
    manifest, workers = run_and_kill_mid_run(lambda: run(tmp_path / "out", cfg, metadata=metadata), tmp_path / "out" / "index" / "00002.parquet",
                                             "CaptionBatchRunner")  # fmt: skip
    index = pd.read_parquet(tmp_path / "out" / "index").sort_values("key").reset_index(drop=True)
    expected = pd.read_parquet(tmp_path / "reference" / "index").sort_values("key").reset_index(drop=True)
    assert len(index) == 17 and index["key"].is_unique and (index["caption_source"] == "model").all()
    columns = ["key", "status", "caption", "caption_source", "caption_error", "num_frames"]
    pd.testing.assert_frame_equal(index[columns], expected[columns])
    assert tar_captions(tmp_path / "out") == tar_captions(tmp_path / "reference")
    assert manifest["caption_counts"] == reference["caption_counts"] == {"csv": 0, "model": 17, "none": 0, "failed": 0}
    assert not (actor_pids("CaptionBatchRunner") & workers)
    # the actor that finished the run is a restarted one: it captioned only what was left after the kill
    assert 0 < manifest["timings"]["caption_stage"]["clips"] < 17


def test_a_changed_caption_setting_on_resume_is_refused(ray_local, captioner_dir, tmp_path):
    model = tmp_path / "captioner"
    shutil.copytree(captioner_dir, model)
    run(tmp_path / "out", config(model))
    for changed in ({"frames": 4}, {"prompt": "What happens here?"}, {"max_tokens": 20}, {"recaption": True}):
        with pytest.raises(ValueError, match="was started with other inputs or settings") as err:
            run(tmp_path / "out", config(model, **changed))
        assert f"fingerprint.caption.{next(iter(changed))}: " in str(err.value)  # the message names the key that changed
    with pytest.raises(ValueError, match="was started with other inputs or settings"):
        run(tmp_path / "out", config(None))
    # the same settings but other model files: the captioner the folder was captioned with is checked too
    shutil.rmtree(tmp_path / "out" / "stats")  # (a shard left to do, so that the actors start)
    (model / "generation_config.json").write_text((model / "generation_config.json").read_text().replace("{", '{"note": 1,', 1))
    with pytest.raises(ValueError, match="was captioned with another captioner \\(folder_sha256 "):
        run(tmp_path / "out", config(model))
    with pytest.raises(ValueError, match="caption.recaption \\(--recaption\\) needs caption.model"):
        config(None, recaption=True).validate()



def test_the_manifest_counts_csv_captions_of_shards_written_before_caption_sources(ray_local, tmp_path):
    run(tmp_path / "out", config(None), SAMPLES / "captions_sample.csv")
    for path in (tmp_path / "out" / "index").glob("*.parquet"):  # as index-hdvila wrote them before this column existed
        pq.write_table(pq.read_table(path).drop_columns(["caption_source", "caption_error"]), path)
    manifest = run(tmp_path / "out", config(None), SAMPLES / "captions_sample.csv")
    assert manifest["caption_counts"] == {"csv": 3, "model": 0, "none": 0, "failed": 0}
