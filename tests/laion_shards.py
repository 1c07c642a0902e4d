"""A real LAION-Pose output for the training tests: five real photos (two bundled ones and variants of them) served
by a local HTTP site, run through the real build-laion-pose pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

from conftest import REPO, Route

SAMPLES = REPO / "pose_data" / "sample_data" / "laion"


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def build_laion_pose_shards(out: Path, local_site, *, shard_size: int = 4) -> Path:
    """build-laion-pose (tiny preset) into ``out``: 5 kept samples, ``shard_size`` input rows per shard."""
    from pipelines.laion_pose import build_laion_pose
    from pose_data.config import load_config
    from pose_data.laion.config import LaionPoseConfig
    from pose_data.laion.config import preset_or_file as data_preset

    astronaut, cameraman = Image.open(SAMPLES / "astronaut.jpg"), Image.open(SAMPLES / "cameraman.jpg")
    photos = {
        "astronaut": astronaut, "cameraman": cameraman, "astronaut_mirror": ImageOps.mirror(astronaut),
        "cameraman_mirror": ImageOps.mirror(cameraman), "astronaut_wide": ImageOps.expand(astronaut, (96, 0), fill=(40, 40, 40)),
    }  # fmt: skip
    urls = [local_site.add(f"{out.name}/{name}.jpg", Route(_jpeg(im))) for name, im in photos.items()]
    meta = out.parent / f"{out.name}-meta.parquet"
    pd.DataFrame({"URL": urls, "TEXT": [f"a photo of the {n.replace('_', ' ')}" for n in photos]}).to_parquet(meta)
    layers = [data_preset("tiny"), {"preview_images": 0, "download": {"allow_private_addresses": True}, "input": {"shard_size": shard_size}}]
    manifest = build_laion_pose([str(meta)], str(out), load_config(LaionPoseConfig, *layers), progress=False)
    assert manifest["counts"]["ok"] == len(photos)
    return out
