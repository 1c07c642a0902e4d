"""Index one shard of HD-VILA clips: find each clip's video, decode its span, filter, and write
``OUT/index/NNNNN.parquet`` (every clip) plus, with ``--write-clips``, ``OUT/clips/NNNNN.tar``.

A clip is decoded once: the clip encoder (or frame sampler) receives the kept frames as the span
is decoded. The tar is written before the parquet, which is the shard's completion marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pose_data.files.atomic import atomic_path
from pose_data.hdvila.config import ClipFilterConfig, HdvilaIndexConfig
from pose_data.media.clip_writer import ClipEncoder, FrameSampler
from pose_data.media.span_decoder import SpanOutOfRange
from pose_data.media.video_decode import decode_span
from pose_data.media.video_probe import VideoDecodeError
from pose_data.statuses import BAD_METADATA, DECODE_FAILED, FILTERED, OK, SPAN_OUT_OF_RANGE, TOO_SHORT, VIDEO_MISSING

INDEX_FIELDS = [
    pa.field("key", pa.string()),
    pa.field("clip_id", pa.string()),
    pa.field("video_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("span_start", pa.float64()),
    pa.field("span_end", pa.float64()),
    pa.field("caption", pa.string()),
    pa.field("video_path", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("fps", pa.float64()),
    pa.field("num_frames", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("decoded_start", pa.float64()),
    pa.field("decoded_end", pa.float64()),
    pa.field("decoded_duration", pa.float64()),
    pa.field("span_clipped", pa.bool_()),
    pa.field("frames_decoded", pa.int32()),
    pa.field("decode_errors", pa.int32()),
    pa.field("rotation", pa.int32()),
    pa.field("source", pa.string()),
    pa.field("shard", pa.string()),
]
DECODED = ("fps", "num_frames", "width", "height", "decoded_start", "decoded_end", "decoded_duration", "frames_decoded", "decode_errors", "rotation")


@dataclass
class ClipShardStats:
    shard: str
    rows: int
    counts: dict[str, int]
    tar_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)
    frames_decoded: int = 0
    finished_at: float = 0.0
    host: str = ""  # the machine that wrote the shard, and its Ray node id (empty outside Ray)
    ray_node: str = ""


def filter_clip(result, cfg: ClipFilterConfig) -> tuple[str, str | None]:
    """``ok``, ``too_short`` (duration or frames below the minimum) or ``filtered`` (too long, too small)."""
    if result.num_frames == 0 or result.num_frames < cfg.min_frames:  # a span between two frames decodes none
        return TOO_SHORT, f"{result.num_frames} frames decoded, min_frames {cfg.min_frames}"
    if result.decoded_duration < cfg.min_duration:
        return TOO_SHORT, f"{result.decoded_duration:.3f} s decoded, min_duration {cfg.min_duration:g} s"
    if cfg.max_duration is not None and result.decoded_duration > cfg.max_duration:
        return FILTERED, f"{result.decoded_duration:.3f} s decoded, max_duration {cfg.max_duration:g} s"
    if min(result.width, result.height) < cfg.min_resolution:
        return FILTERED, f"{result.width}x{result.height}, shorter side < min_resolution {cfg.min_resolution}"
    return OK, None


def _clip_sink(cfg: HdvilaIndexConfig):
    c = cfg.clips
    if not c.write_clips:
        return None
    if c.frames is not None:
        return FrameSampler(c.frames, c.stride, size=c.size, center_crop=c.square)
    return ClipEncoder(size=c.size, center_crop=c.square, fps=c.fps, crf=c.crf)


def index_clip(row: dict, video_path: Path | None, cfg: HdvilaIndexConfig, missing_reason: str | None = None) -> tuple[dict, object | None]:
    """One clip row -> (the decoded/status fields, the encoded clip or frames when kept)."""
    out: dict = {k: None for k in DECODED}
    out.update(video_path=str(video_path) if video_path else None, span_clipped=False)
    if row["status"] == BAD_METADATA:
        return {**out, "status": BAD_METADATA, "error": row["error"]}, None
    if video_path is None:
        return {**out, "status": VIDEO_MISSING, "error": missing_reason or f"no video file for video_id {row['video_id']!r}"}, None
    sink = _clip_sink(cfg)
    try:
        fields = _decode_and_filter(row, video_path, cfg, out, sink)
        return fields, (sink.finish() if sink is not None and fields["status"] == OK else None)
    finally:
        if sink is not None and hasattr(sink, "close"):
            sink.close()  # a clip that was not kept is discarded


class _TooManyFrames(Exception):
    pass


def _decode_and_filter(row: dict, video_path: Path, cfg: HdvilaIndexConfig, out: dict, sink) -> dict:
    start, end, bounds = row["span_start"], row["span_end"], cfg.filter
    if bounds.max_duration is not None and end - start > bounds.max_duration:  # known before decoding anything
        return {**out, "status": FILTERED, "error": f"span of {end - start:.3f} s > max_duration {bounds.max_duration:g} s (not decoded)"}
    kept = [0]

    def on_frame(frame, t):
        kept[0] += 1
        if kept[0] > bounds.max_frames:
            raise _TooManyFrames
        if sink is not None:
            sink.add(frame, t)

    try:
        result = decode_span(video_path, start, end, on_frame=on_frame)
    except _TooManyFrames:
        return {**out, "status": FILTERED, "error": f"more than max_frames {bounds.max_frames} frames in the span; decoding stopped"}
    except SpanOutOfRange as err:
        return {**out, "status": SPAN_OUT_OF_RANGE, "error": err.reason}
    except VideoDecodeError as err:
        return {**out, "status": DECODE_FAILED, "error": err.reason}
    out.update({k: getattr(result, k) for k in DECODED})
    error = None
    if result.truncated:
        message = f"span ends at {row['span_end']:.3f} s, past the video's end at {result.video_end:.3f} s"
        if not cfg.clip_spans_to_video:
            return {**out, "status": SPAN_OUT_OF_RANGE, "error": message}
        out["span_clipped"] = True
        error = f"clipped: {message}"
    status, reason = filter_clip(result, cfg.filter)
    return {**out, "status": status, "error": reason or error}


def _index_rows(rows: list[dict], video_paths: dict[str, str], missing: dict[str, str], cfg: HdvilaIndexConfig, name: str, tar) -> tuple[dict, dict, int]:
    columns: dict[str, list] = {f.name: [] for f in INDEX_FIELDS}
    counts: dict[str, int] = {}
    frames_decoded = 0
    for row in rows:
        path = video_paths.get(row["video_id"] or "")
        fields, clip = index_clip(row, Path(path) if path else None, cfg, missing.get(row["video_id"] or ""))
        frames_decoded += fields["frames_decoded"] or 0
        record = {**row, **fields, "shard": name}
        if tar is not None and fields["status"] == OK:
            meta = {k: record[k] for k in ("key", "clip_id", "video_id", "url", "span_start", "span_end", *DECODED, "span_clipped")}
            sample = {"__key__": row["key"], "txt": row["caption"] or "", "json": meta}
            if isinstance(clip, bytes):
                sample["mp4"] = clip
            else:  # sampled frames: <key>.000.jpg, <key>.001.jpg, ...
                sample.update({f"{k:03d}.jpg": jpg for k, jpg in enumerate(clip)})
            tar.write(sample)
        counts[fields["status"]] = counts.get(fields["status"], 0) + 1
        for f in INDEX_FIELDS:
            columns[f.name].append(record.get(f.name))
    return columns, counts, frames_decoded


def index_shard(
    shard_id: int, inputs: pa.Table, video_paths: dict[str, str], cfg: HdvilaIndexConfig, out_dir: Path, missing: dict[str, str] | None = None
) -> ClipShardStats:
    """Every clip of ``inputs`` (the planned shard) -> index parquet (+ clips tar); returns stats.

    ``video_paths``: video_id -> file; ``missing``: video_id -> why it is not there (a failed download).
    """
    missing = missing or {}
    import webdataset as wds

    start = time.perf_counter()
    name = f"{shard_id:05d}"
    rows = inputs.to_pylist()
    tar_bytes = 0
    if cfg.clips.write_clips:
        tar_path = out_dir / "clips" / f"{name}.tar"
        with atomic_path(tar_path) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as tar:
            columns, counts, frames_decoded = _index_rows(rows, video_paths, missing, cfg, name, tar)
        tar_bytes = tar_path.stat().st_size
    else:
        columns, counts, frames_decoded = _index_rows(rows, video_paths, missing, cfg, name, None)
    table = pa.table(columns, schema=pa.schema(INDEX_FIELDS))
    with atomic_path(out_dir / "index" / f"{name}.parquet") as tmp:
        pq.write_table(table, tmp)
    return ClipShardStats(
        shard=name, rows=len(rows), counts=counts, tar_bytes=tar_bytes,
        seconds={"index": time.perf_counter() - start}, frames_decoded=frames_decoded, finished_at=time.time(),
    )  # fmt: skip
