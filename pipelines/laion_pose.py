"""``pose-data build-laion-pose`` as a streaming Ray pipeline.

Per input shard: a download task (img2dataset) -> pose batches on an actor pool (one model load
per actor, GPU actors with ``--device cuda``) -> an assemble task (filter, render, write tar +
parquet). The driver only moves object references: images travel from the download task to the
actors and the writer through Ray's object store. At most ``shards_in_flight`` shards are between
download and write at any time, so memory stays bounded while downloads, inference and writing
overlap.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from pathlib import Path

from pipelines.ray_utils import ActorPool, ShardAttempts, ray_session, require_resources, worker_location
from pose_data.config import to_dict
from pose_data.files.atomic import write_json_atomic
from pose_data.files.manifest import count_statuses, package_versions, print_summary
from pose_data.files.metadata_reader import expand_inputs, read_metadata_tables
from pose_data.laion.config import LaionPoseConfig
from pose_data.laion.download import DownloadOptions, download_shard
from pose_data.laion.pose_batch import PoseBatchRunner
from pose_data.laion.shard import ShardStats, assemble_shard, shard_name
from pose_data.pose.estimator import DEFAULT_MIN_KEYPOINT_SCORE, PoseModelLoadError, describe_load_failure
from pose_data.progress import StatusProgress
from pose_data.run_lock import lock_output
from pose_data.shard_plan import ShardPlan, make_or_load_plan, prepare_output, sweep_temp_files
from pose_data.statuses import LAION_POSE_STATUSES

log = logging.getLogger(__name__)
SUBFOLDERS = ("shards", "meta", "stats")
OUTPUTS = ("shards", "meta", "stats", "manifest.json", "preview.png")


def min_keypoint_score(cfg: LaionPoseConfig) -> float:
    """The configured threshold, or the backend's default (RTMPose scores are not probabilities)."""
    if cfg.filter.min_keypoint_score is not None:
        return cfg.filter.min_keypoint_score
    return DEFAULT_MIN_KEYPOINT_SCORE[cfg.pose.backend]


def download_options(cfg: LaionPoseConfig) -> DownloadOptions:
    d = cfg.download
    return DownloadOptions(
        image_size=d.image_size,
        resize_mode=d.resize_mode,
        resize_only_if_bigger=d.resize_only_if_bigger,
        encode_quality=d.encode_quality,
        threads=d.threads,
        timeout=d.timeout,
        retries=d.retries,
        max_image_area=d.max_image_area,
        user_agent_token=d.user_agent_token,
        respect_robots_headers=d.respect_robots_headers,
        min_image_size=cfg.filter.min_image_size,
        allow_private_addresses=d.allow_private_addresses,
        max_image_bytes=d.max_image_bytes,
        deadline=d.deadline,
    )


def output_fingerprint(cfg: LaionPoseConfig) -> dict:
    """Every setting that changes what is written (not how fast): a resumed run must match it."""
    d = to_dict(cfg)
    for k in ("threads", "processes"):
        d["download"].pop(k)
    for k in ("device", "batch_size"):
        d["pose"].pop(k, None)
    d.pop("ray")
    d.pop("preview_images")
    return d


# ---- the three stages as Ray-free functions (the remote wrappers below call them) ----


def _download_stage(shard_id: int, input_path: str, url_col: str, options: DownloadOptions):
    import pyarrow.parquet as pq

    urls = pq.read_table(input_path, columns=[url_col]).column(url_col).to_pylist()
    shard = download_shard(shard_id, [None if u is None else str(u) for u in urls], options)
    return {"pending": shard.pending(), "rows": len(shard)}, shard


def _assemble_stage(shard_id: int, input_path: str, cfg_dict: dict, out_dir: str, downloaded, *pose_results) -> ShardStats:
    import pyarrow.parquet as pq

    from pose_data.config import from_dict

    cfg = from_dict(LaionPoseConfig, cfg_dict)
    stats = assemble_shard(
        shard_id=shard_id,
        shard_size=cfg.input.shard_size,
        inputs=pq.read_table(input_path),
        url_col=cfg.input.url_col,
        caption_col=cfg.input.caption_col,
        downloaded=downloaded,
        pose_results=list(pose_results),
        filter_cfg=cfg.filter,
        min_keypoint_score=min_keypoint_score(cfg),
        skeleton_style=cfg.skeleton_style,
        out_dir=Path(out_dir),
    )
    stats = dataclasses.replace(stats, **worker_location())
    write_json_atomic(Path(out_dir) / "stats" / f"{stats.shard}.json", dataclasses.asdict(stats))
    return stats


def _todo_shards(plan: ShardPlan, out_dir: Path) -> list[int]:
    """Shards not done. Done means every file the manifest needs is there: the tar, then the parquet, then the
    stats file, each written atomically in that order, so a run killed between any two redoes the shard."""
    def done(s: int) -> bool:
        name = shard_name(s)
        return all(p.exists() for p in (out_dir / "shards" / f"{name}.tar", out_dir / "meta" / f"{name}.parquet", out_dir / "stats" / f"{name}.json"))

    return [s for s in range(plan.num_shards) if not done(s)]


def build_laion_pose(
    inputs: list[str], output: str, cfg: LaionPoseConfig, *, overwrite: bool = False, progress: bool = True
) -> dict:
    """Run the whole builder; returns the manifest (also written to ``DIR/manifest.json``). One run per DIR at a
    time (:mod:`pose_data.run_lock`)."""
    with lock_output(Path(output).resolve(), "pose-data build-laion-pose"):
        return _build_laion_pose(inputs, output, cfg, overwrite=overwrite, progress=progress)


def _build_laion_pose(inputs: list[str], output: str, cfg: LaionPoseConfig, *, overwrite: bool, progress: bool) -> dict:
    started = time.time()
    cfg.validate()
    files = expand_inputs(inputs)
    out_dir = Path(output).resolve()
    required = {"--url-col": cfg.input.url_col, "--caption-col": cfg.input.caption_col}
    plan = make_or_load_plan(
        files,
        out_dir,
        shard_size=cfg.input.shard_size,
        tables=lambda: read_metadata_tables(files, required),
        fingerprint=output_fingerprint(cfg),
        overwrite=overwrite,
        outputs=OUTPUTS,
    )
    prepare_output(out_dir, SUBFOLDERS)
    todo = collections.deque(_todo_shards(plan, out_dir))
    done_rows = plan.num_rows - sum(plan.shard_rows(s) for s in todo)
    log.info("%d rows in %d shards; %d shards to do", plan.num_rows, plan.num_shards, len(todo))
    with StatusProgress(total=plan.num_rows, initial=done_rows, statuses=LAION_POSE_STATUSES, enabled=progress) as bar:
        if todo:
            with ray_session(cfg.ray.address):
                _run_shards(todo, plan, out_dir, cfg, bar)
            sweep_temp_files(out_dir, SUBFOLDERS)  # writes cut short on a node that left mid-run

    manifest = write_manifest(out_dir, plan, cfg, inputs=[str(f) for f in files], wall_s=time.time() - started)
    if cfg.preview_images > 0:
        from pose_data.preview import write_laion_pose_preview

        write_laion_pose_preview(out_dir, manifest["counts"], max_images=cfg.preview_images)
    print_summary(manifest["counts"], manifest["num_rows"], title=f"LAION-Pose: {out_dir}")
    return manifest


def _run_shards(todo: collections.deque, plan: ShardPlan, out_dir: Path, cfg: LaionPoseConfig, bar: StatusProgress) -> None:
    import ray

    gpus = cfg.pose_worker_gpus
    require_resources(  # the actors hold their CPUs for the whole run: leave one for download/write tasks
        cpus=cfg.ray.pose_worker_cpus * cfg.ray.num_pose_workers + 1,
        gpus=gpus * cfg.ray.num_pose_workers,
        what=f"{cfg.ray.num_pose_workers} pose worker(s) of {cfg.ray.pose_worker_cpus:g} CPU(s) plus 1 CPU for download/write tasks",
    )
    actor_cls = ray.remote(PoseBatchRunner).options(
        # a worker that dies (a node lost, the OOM killer) comes back, on another node if need be, and redoes its batch
        num_cpus=cfg.ray.pose_worker_cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=2
    )
    pool = ActorPool(
        [actor_cls.remote(cfg.pose, num_threads=max(1, int(cfg.ray.pose_worker_cpus))) for _ in range(cfg.ray.num_pose_workers)], "estimate"
    )
    wait_for_pose_models(pool.actors, cfg)  # before any download: a model that cannot load stops the run here
    download = ray.remote(_download_stage).options(num_returns=2, num_cpus=1, max_retries=2, retry_exceptions=True)
    assemble = ray.remote(_assemble_stage).options(num_cpus=1, max_retries=1, retry_exceptions=True)
    options = download_options(cfg)
    cfg_dict = to_dict(cfg)
    limit = cfg.shards_in_flight

    attempts = ShardAttempts(todo)  # a shard whose work a lost node or worker took with it is run again
    downloading: dict = {}  # summary ref -> (shard id, shard ref)
    assembling: dict = {}  # assemble ref -> shard id
    while todo or downloading or assembling:
        while todo and len(downloading) < cfg.download.processes and len(downloading) + len(assembling) < limit:
            sid = todo.popleft()
            summary_ref, shard_ref = download.remote(sid, str(plan.input_path(sid)), cfg.input.url_col, options)
            downloading[summary_ref] = (sid, shard_ref)
        ready, _ = ray.wait([*downloading, *assembling], num_returns=1)
        for ref in ready:
            if ref in downloading:
                sid, shard_ref = downloading.pop(ref)
                summary = attempts.result(sid, ref)
                if summary is None:
                    continue
                pending = summary["pending"]
                batches = [pending[i : i + cfg.pose.batch_size] for i in range(0, len(pending), cfg.pose.batch_size)]
                pose_refs = [pool.submit(shard_ref, b) for b in batches]
                a_ref = assemble.remote(sid, str(plan.input_path(sid)), cfg_dict, str(out_dir), shard_ref, *pose_refs)
                assembling[a_ref] = sid
            else:
                sid = assembling.pop(ref)
                stats: ShardStats | None = attempts.result(sid, ref)
                if stats is not None:
                    bar.update(stats.rows, stats.counts)
    attempts.check()


def wait_for_pose_models(actors: list, cfg: LaionPoseConfig) -> None:
    """Every pose actor has loaded its model, or RuntimeError in one line: the model, where its weights come
    from, why it failed (the last line of the worker's error), and the way out."""
    import ray

    try:
        ray.get([actor.ready.remote() for actor in actors])
    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
        cause = getattr(err, "cause", None)  # the worker's own exception, when Ray kept it
        if isinstance(cause, PoseModelLoadError):
            raise RuntimeError(str(cause)) from None
        raise RuntimeError(describe_load_failure(cfg.pose, str(cause) if cause is not None else str(err))) from None


def write_manifest(out_dir: Path, plan: ShardPlan, cfg: LaionPoseConfig, *, inputs: list[str], wall_s: float) -> dict:
    """``DIR/manifest.json``: config, versions, counts by status, timings, shard list. Written last."""
    import json

    shards, seconds = [], collections.Counter()
    for s in range(plan.num_shards):
        stats = json.loads((out_dir / "stats" / f"{shard_name(s)}.json").read_text())
        seconds.update(stats["seconds"])
        shards.append(
            {
                "shard": f"shards/{stats['shard']}.tar",
                "meta": f"meta/{stats['shard']}.parquet",
                "rows": stats["rows"],
                "ok": stats["counts"].get("ok", 0),
                "tar_bytes": stats["tar_bytes"],
            }
        )
    counts = count_statuses(out_dir / "meta", LAION_POSE_STATUSES)
    manifest = {
        "format": "laion-pose",
        "format_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": inputs,
        "num_rows": plan.num_rows,
        "num_ok": counts.get("ok", 0),
        "counts": counts,
        "min_keypoint_score_used": min_keypoint_score(cfg),
        "shards": shards,
        "shard_pattern": f"shards/{{00000..{plan.num_shards - 1:05d}}}.tar" if plan.num_shards else None,
        "timings": {
            "last_run_wall_s": round(wall_s, 3),
            "stage_seconds_summed_over_shards": {k: round(v, 3) for k, v in seconds.items()},
        },
        "config": to_dict(cfg),
        "versions": package_versions(),
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
