"""``pose-data demo``: the whole LAION-Pose builder offline on the bundled sample photos.

The photos are served on 127.0.0.1 (the stand-in for the web), the bundled LAION-style metadata
is pointed at them, and the builder runs with the tiny preset (MediaPipe pose on CPU).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pose_data.config import load_config
from pose_data.laion_pose_config import LaionPoseConfig, preset_or_file
from pose_data.local_http import serve_directory


def sample_dir() -> Path:
    return Path(str(resources.files("pose_data") / "sample_data" / "laion"))


def run_demo(output: str, *, progress: bool = True) -> Path:
    from pipelines.laion_pose import build_laion_pose

    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(LaionPoseConfig, preset_or_file("laion_pose-tiny"))
    with serve_directory(sample_dir()) as base_url:
        table = pa_csv.read_csv(sample_dir() / "laion_sample.csv")
        urls = [base_url + name for name in table.column("URL").to_pylist()]
        table = table.set_column(table.column_names.index("URL"), "URL", pa.array(urls))
        metadata = out / "laion_sample.parquet"
        pq.write_table(table, metadata)
        # the port changes every run: start the LAION-Pose folder afresh each time
        manifest = build_laion_pose([str(metadata)], str(out / "laion_pose"), cfg, overwrite=True, progress=progress)
    lp = out / "laion_pose"
    print(
        "\nDemo done. Look at:\n"
        f"  {lp / 'preview.png'}   kept images with skeletons, counts by status\n"
        f"  {lp / 'manifest.json'}   config, versions, counts, timings\n"
        f"  pandas:     pd.read_parquet('{lp / 'meta'}')\n"
        f"  webdataset: webdataset.WebDataset('{lp}/{manifest['shard_pattern']}')"
    )
    return out
