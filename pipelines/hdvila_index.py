"""``pose-data index-hdvila``: HD-VILA-100M metadata + video files -> decoded clip index (+ clip shards).

The clips are planned into shards (``OUT/_work``, as the LAION-Pose builder does, so runs resume);
missing videos are optionally fetched first (yt-dlp, one Ray task per video); then one Ray task
per shard opens and decodes every clip span (PyAV, seeking to the keyframe before the span) and
writes ``OUT/index/NNNNN.parquet`` and, with ``--write-clips``, ``OUT/clips/NNNNN.tar``.

With ``--caption-model`` a shard takes three steps, as a LAION-Pose shard does: a decode task (CPU) returns the
decoded shard and the frames of the clips to caption; batches of those go to a pool of captioning actors (the
model loaded once per actor, one actor per GPU when the cluster has GPUs); a write task (CPU) puts the captions
into the tar and the index. Only object references pass through the driver, and at most as many shards as the
plain path runs at once are between decode and write.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from pipelines.hdvila_captions import CAPTIONER_FILE, run_captioned_shards
from pipelines.ray_utils import ShardAttempts, is_lost_work, ray_session, worker_location
from pose_data.config import to_dict
from pose_data.files.atomic import write_json_atomic
from pose_data.files.manifest import count_statuses, package_versions, print_summary
from pose_data.hdvila.config import HdvilaIndexConfig
from pose_data.hdvila.metadata import metadata_files, read_captions, read_hdvila_metadata
from pose_data.hdvila.shard import INDEX_FIELDS, ClipShardStats, index_shard
from pose_data.progress import StatusProgress
from pose_data.run_lock import lock_output
from pose_data.shard_plan import ShardPlan, make_or_load_plan, prepare_output, sweep_temp_files
from pose_data.statuses import HDVILA_STATUSES

log = logging.getLogger(__name__)
SUBFOLDERS = ("index", "clips", "stats")
OUTPUTS = ("index", "clips", "stats", "manifest.json", "preview.png")
PLAN_COLUMNS = pa.schema([
    pa.field("key", pa.string()), pa.field("clip_id", pa.string()), pa.field("video_id", pa.string()),
    pa.field("url", pa.string()), pa.field("span_start", pa.float64()), pa.field("span_end", pa.float64()),
    pa.field("caption", pa.string()), pa.field("status", pa.string()), pa.field("error", pa.string()),
    pa.field("source", pa.string()),
])  # fmt: skip


def clip_tables(files: list[Path], captions: dict[str, str], batch: int = 10_000) -> Iterator[pa.Table]:
    """The metadata as planned rows, in order: one row per clip, malformed lines included."""
    rows: list[dict] = []
    for n, row in enumerate(read_hdvila_metadata(files)):
        # a bad row may repeat a clip id (duplicates) or have none: give it a key of its own
        key = row.key if row.status is None else f"bad_metadata_{n}"
        rows.append({
            "key": key, "clip_id": row.clip_id, "video_id": row.video_id, "url": row.url,
            "span_start": row.span_start, "span_end": row.span_end, "caption": captions.get(row.clip_id or "", ""),
            "status": row.status, "error": row.error, "source": row.source,
        })  # fmt: skip
        if len(rows) >= batch:
            yield pa.Table.from_pylist(rows, schema=PLAN_COLUMNS)
            rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=PLAN_COLUMNS)


def _index_task(shard_id: int, input_path: str, videos: dict, cfg_dict: dict, out_dir: str) -> ClipShardStats:
    import pyarrow.parquet as pq

    from pose_data.config import from_dict

    cfg = from_dict(HdvilaIndexConfig, cfg_dict)
    stats = index_shard(shard_id, pq.read_table(input_path), videos["paths"], cfg, Path(out_dir), missing=videos["missing"])
    stats = dataclasses.replace(stats, **worker_location())
    write_json_atomic(Path(out_dir) / "stats" / f"{stats.shard}.json", dataclasses.asdict(stats))
    return stats


def _download_task(url: str, video_id: str, folder: str, guards: dict) -> tuple[str, str | None, str | None]:
    from pose_data.hdvila.video_download import VideoDownloadError, download_video

    try:
        return video_id, str(download_video(url, video_id, Path(folder), **guards)), None
    except VideoDownloadError as err:
        return video_id, None, f"download failed: {err.reason}"


def _todo(plan: ShardPlan, out_dir: Path, cfg: HdvilaIndexConfig) -> list[int]:
    """Shards not done: done means the clips tar (when written), the index parquet and the stats file (written in
    that order, each atomically) are all there, so a run killed between any two redoes the shard."""
    def done(s: int) -> bool:
        index = (out_dir / "index" / f"{s:05d}.parquet").exists() and (out_dir / "stats" / f"{s:05d}.json").exists()
        return index and (not cfg.clips.write_clips or (out_dir / "clips" / f"{s:05d}.tar").exists())

    return [s for s in range(plan.num_shards) if not done(s)]


def build_hdvila_index(
    metadata: list[str],
    videos: str,
    output: str,
    cfg: HdvilaIndexConfig,
    *,
    captions: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run the indexer; returns the manifest (also written to ``OUT/manifest.json``). One run per OUT at a time
    (:mod:`pose_data.run_lock`)."""
    with lock_output(Path(output).resolve(), "pose-data index-hdvila"):
        return _build_hdvila_index(metadata, videos, output, cfg, captions=captions, overwrite=overwrite, progress=progress)


def _build_hdvila_index(metadata, videos, output, cfg: HdvilaIndexConfig, *, captions, overwrite: bool, progress: bool) -> dict:
    import pyarrow.parquet as pq

    from pose_data.hdvila.video_lookup import VideoIndex

    started = time.time()
    cfg.validate()
    files = metadata_files(metadata)
    videos_dir = Path(videos).resolve()
    if not videos_dir.is_dir() and not cfg.download:
        raise FileNotFoundError(f"--videos folder not found: {videos_dir}")
    caption_file = Path(captions) if captions else None
    if caption_file is not None and not caption_file.is_file():
        raise FileNotFoundError(f"--captions file not found: {caption_file}")
    caption_map = read_captions(caption_file) if caption_file else {}
    out_dir = Path(output).resolve()
    if cfg.caption.model is not None and Path(cfg.caption.model).expanduser().is_dir():  # a folder: the same on every node
        cfg.caption.model = str(Path(cfg.caption.model).expanduser().resolve())
    fingerprint = to_dict(cfg)
    for k in ("ray_address", "preview_clips", "download_timeout", "allow_private_addresses", "max_video_bytes", "max_video_duration"):
        fingerprint.pop(k)
    if cfg.caption.model is None:  # no captioner: its settings change nothing (and earlier folders resume)
        fingerprint.pop("caption")
    else:  # where the captioner runs changes no caption
        for k in ("workers", "worker_cpus", "worker_gpus", "device"):
            fingerprint["caption"].pop(k)
    plan = make_or_load_plan(
        [*files, *([caption_file] if caption_file else [])],
        out_dir,
        shard_size=cfg.shard_size,
        tables=lambda: clip_tables(files, caption_map),
        fingerprint=fingerprint,
        overwrite=overwrite,
        outputs=OUTPUTS,
    )
    prepare_output(out_dir, SUBFOLDERS)
    todo = collections.deque(_todo(plan, out_dir, cfg))
    done = plan.num_rows - sum(plan.shard_rows(s) for s in todo)
    with StatusProgress(total=plan.num_rows, initial=done, statuses=HDVILA_STATUSES, enabled=progress, unit="clip") as bar:
        if todo:
            wanted = {}
            for s in todo:
                for vid, url in zip(*pq.read_table(plan.input_path(s), columns=["video_id", "url"]).to_pydict().values()):
                    if vid:
                        wanted[vid] = url
            index = VideoIndex(videos_dir) if videos_dir.is_dir() else None
            video_paths = {vid: str(p) for vid in wanted if index is not None and (p := index.lookup(vid)) is not None}
            missing: dict[str, str] = {}
            with ray_session(cfg.ray_address):
                if cfg.download:
                    fetched, missing = _download_missing(wanted, video_paths, videos_dir / "_downloaded", cfg)
                    video_paths.update(fetched)
                if cfg.caption.model is None:
                    _run_shards(todo, plan, out_dir, cfg, {"paths": video_paths, "missing": missing}, bar)
                else:
                    run_captioned_shards(todo, plan, out_dir, cfg, {"paths": video_paths, "missing": missing}, bar)
            sweep_temp_files(out_dir, SUBFOLDERS)  # writes cut short on a node that left mid-run
    manifest = write_manifest(out_dir, plan, cfg, inputs=[str(f) for f in files], captions=caption_file, wall_s=time.time() - started)
    if cfg.preview_clips > 0:
        from pose_data.preview import write_hdvila_preview

        write_hdvila_preview(out_dir, manifest["counts"], max_clips=cfg.preview_clips)
    print_summary(manifest["counts"], manifest["num_rows"], title=f"HD-VILA index: {out_dir}")
    return manifest


def _download_missing(wanted: dict, found: dict, folder: Path, cfg: HdvilaIndexConfig) -> tuple[dict[str, str], dict[str, str]]:
    """yt-dlp for every wanted video not on disk, as Ray tasks; returns (new paths, failure reasons)."""
    import ray

    folder.mkdir(parents=True, exist_ok=True)
    task = ray.remote(_download_task).options(num_cpus=1)
    guards = {"timeout": cfg.download_timeout, "allow_private_addresses": cfg.allow_private_addresses,
              "max_bytes": cfg.max_video_bytes, "max_duration": cfg.max_video_duration}  # fmt: skip
    refs = [task.remote(url, vid, str(folder), guards) for vid, url in wanted.items() if vid not in found and url]
    paths, errors, lost = {}, {}, []
    for ref in refs:
        try:
            vid, path, error = ray.get(ref)
        except ray.exceptions.RayError as err:
            if not is_lost_work(err):
                raise
            lost.append(type(err).__name__)
            continue
        if path:
            paths[vid] = path
        else:
            errors[vid] = error
            log.warning("%s: %s", vid, error)
    if lost:  # downloads come before any shard: stop here, and a re-run fetches only what is still missing
        raise RuntimeError(f"{len(lost)} video download task(s) lost by the Ray cluster ({lost[0]}); the videos "
                           f"already fetched are kept in {folder}: run the same command again to resume")  # fmt: skip
    return paths, errors


def _run_shards(todo, plan: ShardPlan, out_dir: Path, cfg: HdvilaIndexConfig, videos: dict, bar: StatusProgress) -> None:
    import ray

    task = ray.remote(_index_task).options(num_cpus=1, max_retries=2, retry_exceptions=True)
    videos_ref = ray.put(videos)
    cfg_dict = to_dict(cfg)
    limit = 2 * int(ray.cluster_resources().get("CPU", 1))
    attempts = ShardAttempts(todo)  # a shard whose task a lost node took with it is run again
    running: dict = {}
    while todo or running:
        while todo and len(running) < limit:
            sid = todo.popleft()
            running[task.remote(sid, str(plan.input_path(sid)), videos_ref, cfg_dict, str(out_dir))] = sid
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            sid = running.pop(ref)
            stats: ClipShardStats | None = attempts.result(sid, ref)
            if stats is not None:
                bar.update(stats.rows, stats.counts)
    attempts.check()


def write_manifest(out_dir: Path, plan: ShardPlan, cfg: HdvilaIndexConfig, *, inputs: list[str], captions: Path | None, wall_s: float) -> dict:
    """``OUT/manifest.json``: config, versions, counts by status, timings, shards. Written last."""
    import pyarrow.dataset as ds

    shards, seconds, frames = [], 0.0, 0
    for s in range(plan.num_shards):
        stats = json.loads((out_dir / "stats" / f"{s:05d}.json").read_text())
        seconds += stats["seconds"]["index"]
        frames += stats["frames_decoded"]
        entry = {"index": f"index/{stats['shard']}.parquet", "rows": stats["rows"], "ok": stats["counts"].get("ok", 0)}
        if cfg.clips.write_clips:
            entry.update(clips=f"clips/{stats['shard']}.tar", tar_bytes=stats["tar_bytes"])
        shards.append(entry)
    counts = count_statuses(out_dir / "index", HDVILA_STATUSES)
    files = sorted(str(p) for p in (out_dir / "index").glob("*.parquet"))  # the schema fills columns an older run lacks
    index = ds.dataset(files, format="parquet", schema=pa.schema(INDEX_FIELDS)).to_table(
        columns=["caption", "status", "span_clipped", "caption_source", "caption_error"]
    ).to_pydict()
    captioner_file = out_dir / CAPTIONER_FILE  # the captioner every run on this folder had (a resume checks it)
    captioning = json.loads(captioner_file.read_text()) if cfg.caption.model is not None and captioner_file.is_file() else {}
    ok = [n for n, status in enumerate(index["status"]) if status == "ok"]
    for n, (source, caption) in enumerate(zip(index["caption_source"], index["caption"])):
        if source is None:  # a shard written before captions had a source: what it holds came from the CSV
            index["caption_source"][n] = "csv" if caption else ""
    manifest = {
        "format": "hdvila-clip-index",
        "format_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "captions": str(captions) if captions else None,
        "num_rows": plan.num_rows,
        "num_ok": counts.get("ok", 0),
        "counts": counts,
        "clips_without_caption": sum(1 for c, st in zip(index["caption"], index["status"]) if st == "ok" and not c),
        "caption_counts": {  # the ok clips by where their caption comes from, and the captioner's failures
            "csv": sum(1 for n in ok if index["caption_source"][n] == "csv"),
            "model": sum(1 for n in ok if index["caption_source"][n] == "model"),
            "none": sum(1 for n in ok if not index["caption_source"][n]),
            "failed": sum(1 for n in ok if index["caption_error"][n]),
        },
        "captioner": captioning.get("captioner"),
        "spans_clipped": sum(1 for c in index["span_clipped"] if c),
        "shards": shards,
        "clip_pattern": f"clips/{{00000..{plan.num_shards - 1:05d}}}.tar" if cfg.clips.write_clips and plan.num_shards else None,
        "timings": {"last_run_wall_s": round(wall_s, 3), "index_seconds_summed_over_shards": round(seconds, 3), "frames_decoded": frames,
                    **({"caption_stage": captioning["caption_stage"]} if captioning.get("caption_stage") else {})},
        "config": to_dict(cfg),
        "versions": package_versions(),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
