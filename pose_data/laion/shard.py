"""Assemble and write one LAION-Pose output shard: filter, render skeletons, tar + parquet.

Layout (binding for the trainers)::

    DIR/shards/NNNNN.tar     kept samples: <key>.jpg, <key>.pose.png, <key>.txt, <key>.json
    DIR/meta/NNNNN.parquet   one row per input row, kept or not (written last: the shard's
                             completion marker)

``bboxes``/``keypoints``/``hand_left``/``hand_right``/``face``/``num_persons`` in the parquet hold the kept persons for ``ok`` rows and
every detected person for ``no_person``/``low_confidence``/``too_many_persons`` rows, so a user can
see why a row was dropped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pose_data.files.atomic import atomic_path
from pose_data.laion.download import DownloadedShard
from pose_data.laion.pose_batch import PoseBatchResult
from pose_data.pose.filtering import FilterConfig, filter_persons
from pose_data.pose.keypoints import PART_FIELDS, PARTS, PersonPose
from pose_data.skeleton.render import encode_png, render_skeleton
from pose_data.statuses import DECODE_FAILED, OK

# Reserved output columns; an input column of the same name is carried as "input_<name>".
META_FIELDS = [
    pa.field("key", pa.string()),
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("num_persons", pa.int32()),
    pa.field("bboxes", pa.list_(pa.list_(pa.float32()))),
    pa.field("person_scores", pa.list_(pa.float32())),
    pa.field("keypoints", pa.list_(pa.list_(pa.list_(pa.float32())))),
    *PART_FIELDS,
    pa.field("shard", pa.string()),
]
RESERVED = {f.name for f in META_FIELDS}


def shard_name(shard_id: int) -> str:
    return f"{shard_id:05d}"


def sample_key(shard_id: int, row: int, shard_size: int) -> str:
    """img2dataset's key scheme: shard id then row, zero-padded; digits only (a valid WebDataset key)."""
    digits = max(1, math.ceil(math.log10(max(shard_size, 2))))
    return f"{shard_id:05d}{row:0{digits}d}"


def carried_name(column: str) -> str:
    return f"input_{column}" if column in RESERVED else column


@dataclass
class ShardStats:
    shard: str
    rows: int
    counts: dict[str, int]
    tar_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    finished_at: float = 0.0  # time.time() when the shard's files were complete
    host: str = ""  # the machine that wrote the shard, and its Ray node id (empty outside Ray)
    ray_node: str = ""


def assemble_shard(
    *,
    shard_id: int,
    shard_size: int,
    inputs: pa.Table,
    url_col: str,
    caption_col: str,
    downloaded: DownloadedShard,
    pose_results: list[PoseBatchResult],
    filter_cfg: FilterConfig,
    min_keypoint_score: float,
    skeleton_style: str,
    out_dir: Path,
) -> ShardStats:
    """Decide each row's status, render skeletons of kept rows, write tar then parquet atomically."""
    import webdataset as wds

    start = time.perf_counter()
    n = inputs.num_rows
    if len(downloaded) != n:
        raise ValueError(f"shard {shard_id}: {n} input rows but {len(downloaded)} download results")
    name = shard_name(shard_id)
    urls = [None if u is None else str(u) for u in inputs.column(url_col).to_pylist()]
    captions = ["" if c is None else str(c) for c in inputs.column(caption_col).to_pylist()]

    persons_of: dict[int, list[dict] | None] = {}
    decode_error: dict[int, str] = {}
    for res in pose_results:
        for i, people, err in zip(res.indices.tolist(), res.persons, res.errors):
            persons_of[i] = people
            if err is not None:
                decode_error[i] = err

    cols: dict[str, list] = {f.name: [] for f in META_FIELDS}
    counts: dict[str, int] = {}
    render_s = 0.0
    with atomic_path(out_dir / "shards" / f"{name}.tar") as tar_tmp:
        with wds.TarWriter(str(tar_tmp), mtime=0.0) as tar:
            for i in range(n):
                status, error = downloaded.status[i], downloaded.error[i]
                width, height = int(downloaded.width[i]), int(downloaded.height[i])
                people: list[PersonPose] = []
                if status is None:
                    if i in decode_error:
                        status, error = DECODE_FAILED, decode_error[i]
                    elif persons_of.get(i) is None:
                        raise RuntimeError(f"shard {shard_id}: row {i} was downloaded but got no pose result")
                    else:
                        detected = [PersonPose.from_record(r) for r in persons_of[i]]
                        result = filter_persons(detected, width, height, filter_cfg, min_keypoint_score)
                        status, error = result.status, result.error
                        people = result.persons if status == OK else detected
                key = sample_key(shard_id, i, shard_size)
                records = [p.to_record() for p in people]
                if status == OK:
                    t0 = time.perf_counter()
                    skeleton = render_skeleton(skeleton_style, people, width, height, min_keypoint_score)
                    sample = {
                        "__key__": key,
                        "jpg": downloaded.image_bytes(i),
                        "pose.png": encode_png(skeleton),
                        "txt": captions[i],
                        "json": {
                            "key": key,
                            "url": urls[i],
                            "caption": captions[i],
                            "width": width,
                            "height": height,
                            "original_width": int(downloaded.original_width[i]),
                            "original_height": int(downloaded.original_height[i]),
                            "skeleton_style": skeleton_style,
                            "persons": records,
                        },
                    }
                    render_s += time.perf_counter() - t0
                    tar.write(sample)
                counts[status] = counts.get(status, 0) + 1
                row = {
                    "key": key,
                    "url": urls[i],
                    "caption": captions[i],
                    "status": status,
                    "error": error,
                    "width": width if width >= 0 else None,
                    "height": height if height >= 0 else None,
                    "original_width": int(downloaded.original_width[i]) if downloaded.original_width[i] >= 0 else None,
                    "original_height": int(downloaded.original_height[i]) if downloaded.original_height[i] >= 0 else None,
                    "num_persons": len(records),
                    "bboxes": [r["bbox"] for r in records],
                    "person_scores": [r["score"] for r in records],
                    "keypoints": [r["keypoints"] for r in records],
                    **{part: [r.get(part) for r in records] for part in PARTS},
                    "shard": name,
                }
                for k, v in row.items():
                    cols[k].append(v)
        tar_bytes = tar_tmp.stat().st_size

    table = pa.table(cols, schema=pa.schema(META_FIELDS))
    for column in inputs.column_names:
        if column in (url_col, caption_col):
            continue
        table = table.append_column(pa.field(carried_name(column), inputs.schema.field(column).type), inputs.column(column))
    with atomic_path(out_dir / "meta" / f"{name}.parquet") as meta_tmp:
        pq.write_table(table, meta_tmp)
    return ShardStats(
        shard=name,
        rows=n,
        counts=counts,
        tar_bytes=tar_bytes,
        seconds={
            "download": downloaded.seconds,
            "pose": sum(r.seconds for r in pose_results),
            "render": render_s,
            "write": time.perf_counter() - start - render_s,
        },
        finished_at=time.time(),
    )
