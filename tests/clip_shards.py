"""HD-VILA clip shards for the stage-2 tests: built by the real index-hdvila pipeline from the bundled real videos,
plus hand-made shards with bad samples."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import REPO

SAMPLES = REPO / "pose_data" / "sample_data" / "hdvila"
# 1.5 s spans of the two bundled videos: at 8 fps each clip has 12 or 13 frames.
SPANS = {"bikes": [(0.0, 1.5), (2.0, 3.5), (4.0, 5.5), (6.0, 7.5)], "bigbuckbunny": [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]}


def write_metadata(path: Path) -> Path:
    lines = []
    for video, spans in SPANS.items():
        clips = [{"clip_id": f"{video}.{i}.mp4", "span": [f"00:00:{a:06.3f}", f"00:00:{b:06.3f}"]} for i, (a, b) in enumerate(spans)]
        lines.append(json.dumps({"video_id": video, "url": f"https://www.youtube.com/watch?v={video}", "clip": clips}))
    path.write_text("\n".join(lines) + "\n")
    return path


def build_clip_shards(out: Path, *, frames: int | None = None, shard_size: int = 4) -> Path:
    """``index-hdvila --write-clips`` over the bundled videos: 64-px square clips at 8 fps (or ``frames`` JPEGs),
    ``shard_size`` clips per shard (7 clips)."""
    from pipelines.hdvila_index import build_hdvila_index
    from pose_data.config import load_config
    from pose_data.hdvila.config import HdvilaIndexConfig, preset_or_file

    layers = [preset_or_file("tiny"), {"shard_size": shard_size, "preview_clips": 0, "clips": {"size": 64, "frames": frames, "stride": 2}}]
    cfg = load_config(HdvilaIndexConfig, *layers)
    meta = write_metadata(out.parent / f"{out.name}-meta.jsonl")
    manifest = build_hdvila_index([str(meta)], str(SAMPLES), str(out), cfg, captions=None, progress=False)
    assert manifest["num_ok"] == 7, manifest["counts"]
    return out


def write_shard(path: Path, samples: list[dict]) -> Path:
    import webdataset as wds

    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as tar:
        for sample in samples:
            tar.write(sample)
    return path


def raw_samples(shard: Path) -> list[dict]:
    import webdataset as wds

    return [dict(s) for s in wds.WebDataset(str(shard), shardshuffle=False)]


def jpeg(color=(200, 30, 30), size=(64, 64)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()
