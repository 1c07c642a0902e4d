"""Index one shard of HD-VILA clips: find each clip's video, decode its span, filter, and write
``OUT/index/NNNNN.parquet`` (every clip) plus, with ``--write-clips``, ``OUT/clips/NNNNN.tar``.

A clip is decoded once: the clip encoder (or frame sampler) receives the kept frames as the span
is decoded, and, with a captioner, a few of the frames it keeps are collected for the captioner.
Decoding (:func:`decode_shard`) and writing (:func:`write_shard`) are two steps so that captions
made elsewhere (the captioning actors) go into the files; :func:`index_shard` runs both.
The tar is written before the parquet, which is the shard's completion marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pose_data.files.atomic import atomic_path
from pose_data.hdvila.caption_frames import ClipFrames, KeptFrames
from pose_data.hdvila.captioner import CaptionResult
from pose_data.hdvila.config import ClipFilterConfig, HdvilaIndexConfig
from pose_data.media.clip_writer import ClipEncoder, FrameSampler, frame_to_rgb
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
    pa.field("caption_source", pa.string()),  # "csv", "model" or "" (no caption)
    pa.field("caption_error", pa.string()),  # why the captioner gave no caption; "" otherwise
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


def _clip_sink(cfg: HdvilaIndexConfig, on_kept=None):
    c = cfg.clips
    if not c.write_clips:
        return None
    if c.frames is not None:
        return FrameSampler(c.frames, c.stride, size=c.size, center_crop=c.square, on_kept=on_kept)
    return ClipEncoder(size=c.size, center_crop=c.square, fps=c.fps, crf=c.crf, on_kept=on_kept)


def index_clip(row: dict, video_path: Path | None, cfg: HdvilaIndexConfig, missing_reason: str | None = None,
               caption_frames: KeptFrames | None = None) -> tuple[dict, object | None]:  # fmt: skip
    """One clip row -> (the decoded/status fields, the encoded clip or frames when kept). ``caption_frames`` collects
    frames of the clip for the captioner: those the clip writer keeps, or the decoded ones without ``--write-clips``."""
    out: dict = {k: None for k in DECODED}
    out.update(video_path=str(video_path) if video_path else None, span_clipped=False)
    if row["status"] == BAD_METADATA:
        return {**out, "status": BAD_METADATA, "error": row["error"]}, None
    if video_path is None:
        return {**out, "status": VIDEO_MISSING, "error": missing_reason or f"no video file for video_id {row['video_id']!r}"}, None
    sink = _clip_sink(cfg, on_kept=caption_frames.add if caption_frames is not None else None)
    try:
        fields = _decode_and_filter(row, video_path, cfg, out, sink, caption_frames)
        return fields, (sink.finish() if sink is not None and fields["status"] == OK else None)
    finally:
        if sink is not None and hasattr(sink, "close"):
            sink.close()  # a clip that was not kept is discarded


def writer_fps(fields: dict, cfg: HdvilaIndexConfig) -> float:
    """The frame rate of the frames the clip writer keeps (what the captioner's frame indices count)."""
    c = cfg.clips
    if not c.write_clips:
        return fields["fps"]
    if c.frames is not None:
        return fields["fps"] / c.stride
    return c.fps if c.fps is not None else fields["fps"]


class _TooManyFrames(Exception):
    pass


def _decode_and_filter(row: dict, video_path: Path, cfg: HdvilaIndexConfig, out: dict, sink, caption_frames: KeptFrames | None) -> dict:
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
        elif caption_frames is not None:  # no clip written: the decoded frames themselves, converted only when kept
            caption_frames.add(lambda: frame_to_rgb(frame))

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


@dataclass
class DecodedShard:
    """One shard decoded, not yet written: the index columns (captions from the caption CSV), the tar samples of the
    kept clips, and which rows wait for a caption from the captioner."""

    name: str
    columns: dict[str, list]
    samples: list[dict]
    counts: dict[str, int]
    frames_decoded: int
    seconds: float
    caption_rows: list[int] = field(default_factory=list)  # row numbers, in the order of the frames returned


def wants_caption(row: dict, cfg: HdvilaIndexConfig) -> bool:
    return cfg.caption.model is not None and (cfg.caption.recaption or not row["caption"])


def decode_shard(shard_id: int, inputs: pa.Table, video_paths: dict[str, str], cfg: HdvilaIndexConfig,
                 missing: dict[str, str] | None = None, tar=None) -> tuple[DecodedShard, list[ClipFrames]]:  # fmt: skip
    """Decode, filter and encode every clip of the planned shard ``inputs``; returns the shard and the frames the
    captioner is to see of each clip that wants a caption (an ``ok`` clip without one, or any with ``recaption``).
    With ``tar`` (a ``webdataset.TarWriter``) each kept clip is written there as it is decoded instead of being kept
    in the returned shard (no captioner: nothing waits for its caption)."""
    start = time.perf_counter()
    missing = missing or {}
    name = f"{shard_id:05d}"
    columns: dict[str, list] = {f.name: [] for f in INDEX_FIELDS}
    samples, counts, frames_decoded = [], {}, 0
    caption_rows, caption_inputs = [], []
    for n, row in enumerate(inputs.to_pylist()):
        path = video_paths.get(row["video_id"] or "")
        collector = KeptFrames(cfg.caption.frames, cfg.caption.max_side) if wants_caption(row, cfg) else None
        fields, clip = index_clip(row, Path(path) if path else None, cfg, missing.get(row["video_id"] or ""), collector)
        frames_decoded += fields["frames_decoded"] or 0
        caption = row["caption"] or ""
        record = {**row, **fields, "shard": name, "caption_source": "csv" if caption else "", "caption_error": ""}
        if fields["status"] == OK:
            frames = collector.clip_frames(writer_fps(fields, cfg)) if collector is not None else None
            if frames is not None:
                caption_rows.append(n)
                caption_inputs.append(frames)
            elif collector is not None:
                record["caption_error"] = "no frame was kept for the captioner"
            if cfg.clips.write_clips:
                meta = {k: record[k] for k in ("key", "clip_id", "video_id", "url", "span_start", "span_end", *DECODED, "span_clipped")}
                sample = {"__key__": row["key"], "txt": caption, "json": meta}
                if isinstance(clip, bytes):
                    sample["mp4"] = clip
                else:  # sampled frames: <key>.000.jpg, <key>.001.jpg, ...
                    sample.update({f"{k:03d}.jpg": jpg for k, jpg in enumerate(clip)})
                if tar is not None:
                    tar.write(sample)
                else:
                    samples.append(sample)
        counts[fields["status"]] = counts.get(fields["status"], 0) + 1
        for f in INDEX_FIELDS:
            columns[f.name].append(record.get(f.name))
    decoded = DecodedShard(name, columns, samples, counts, frames_decoded, time.perf_counter() - start, caption_rows)
    return decoded, caption_inputs


def apply_captions(decoded: DecodedShard, captions: list[CaptionResult]) -> None:
    """The captioner's results into the index columns and the tar samples' ``.txt``. A failed caption keeps the
    CSV caption a ``recaption`` run had (its reason in ``caption_error``), and is empty otherwise."""
    if len(captions) != len(decoded.caption_rows):
        raise ValueError(f"shard {decoded.name}: {len(captions)} caption(s) for {len(decoded.caption_rows)} clip(s)")
    samples = {s["__key__"]: s for s in decoded.samples}
    columns = decoded.columns
    for n, result in zip(decoded.caption_rows, captions):
        if result.error:
            columns["caption_error"][n] = result.error
            continue
        columns["caption"][n], columns["caption_source"][n] = result.caption, "model"
        if columns["key"][n] in samples:
            samples[columns["key"][n]]["txt"] = result.caption


def write_shard(decoded: DecodedShard, cfg: HdvilaIndexConfig, out_dir: Path, captions: list[CaptionResult] | None = None) -> ClipShardStats:
    """The shard's files with the captioner's ``captions`` in them: the clips tar (with ``--write-clips``), then the
    index parquet; returns its stats."""
    import webdataset as wds

    start = time.perf_counter()
    if captions is not None:
        apply_captions(decoded, captions)
    tar_bytes = 0
    if cfg.clips.write_clips:
        tar_path = out_dir / "clips" / f"{decoded.name}.tar"
        with atomic_path(tar_path) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as tar:
            for sample in decoded.samples:
                tar.write(sample)
        tar_bytes = tar_path.stat().st_size
    return _write_index(decoded, out_dir, tar_bytes, time.perf_counter() - start)


def _write_index(decoded: DecodedShard, out_dir: Path, tar_bytes: int, write_s: float) -> ClipShardStats:
    start = time.perf_counter()
    table = pa.table(decoded.columns, schema=pa.schema(INDEX_FIELDS))
    with atomic_path(out_dir / "index" / f"{decoded.name}.parquet") as tmp:
        pq.write_table(table, tmp)
    return ClipShardStats(
        shard=decoded.name, rows=table.num_rows, counts=decoded.counts, tar_bytes=tar_bytes,
        seconds={"index": decoded.seconds + write_s + time.perf_counter() - start}, frames_decoded=decoded.frames_decoded,
        finished_at=time.time(),
    )  # fmt: skip


def index_shard(
    shard_id: int, inputs: pa.Table, video_paths: dict[str, str], cfg: HdvilaIndexConfig, out_dir: Path, missing: dict[str, str] | None = None
) -> ClipShardStats:
    """Every clip of ``inputs`` (the planned shard) -> index parquet (+ clips tar, written as the clips are decoded),
    without a captioner; returns stats.

    ``video_paths``: video_id -> file; ``missing``: video_id -> why it is not there (a failed download).
    """
    import webdataset as wds

    if not cfg.clips.write_clips:
        return _write_index(decode_shard(shard_id, inputs, video_paths, cfg, missing)[0], out_dir, 0, 0.0)
    tar_path = out_dir / "clips" / f"{shard_id:05d}.tar"
    with atomic_path(tar_path) as tmp, wds.TarWriter(str(tmp), mtime=0.0) as tar:
        decoded, _frames = decode_shard(shard_id, inputs, video_paths, cfg, missing, tar=tar)
    return _write_index(decoded, out_dir, tar_path.stat().st_size, 0.0)
