"""``index-hdvila --caption-model``: decode tasks -> a pool of captioning actors -> write tasks, per shard.

A shard takes three steps, as a LAION-Pose shard does: a decode task (CPU) returns the decoded shard and the frames
of the clips to caption; batches of those go to the captioning actors (the model loaded once per actor, one actor
per GPU when the cluster has GPUs); a write task (CPU) puts the captions into the tar and the index. Only object
references pass through the driver. At most one shard per free CPU is being decoded, and at most that many plus two
per actor are decoded or decoding and wait for their captions, so the frames in Ray's object store stay bounded
however fast decoding is; a write task starts only when all of its shard's captions are back. A batch whose captions
were lost (its actor lost for good) loses its shard's work, which runs again like any lost work.

The captioner a folder was captioned with (model, revision or folder hash, prompt, frames, max tokens, dtype) is
kept in ``OUT/_work/captioner.json``; a resumed run whose captioner differs is refused before anything is decoded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from pipelines.ray_utils import ActorPool, ShardAttempts, is_lost_work, require_resources, worker_location
from pose_data.config import to_dict
from pose_data.files.atomic import write_json_atomic
from pose_data.hdvila.captioner import CaptionBatchRunner, CaptionerLoadError, CaptionResult, one_line_error
from pose_data.hdvila.config import HdvilaIndexConfig
from pose_data.hdvila.shard import ClipShardStats, DecodedShard, decode_shard, write_shard
from pose_data.progress import StatusProgress
from pose_data.shard_plan import ShardPlan

log = logging.getLogger(__name__)
CAPTIONER_FILE = "_work/captioner.json"


def _decode_task(shard_id: int, input_path: str, videos: dict, cfg_dict: dict):
    import pyarrow.parquet as pq

    from pose_data.config import from_dict

    cfg = from_dict(HdvilaIndexConfig, cfg_dict)
    decoded, frames = decode_shard(shard_id, pq.read_table(input_path), videos["paths"], cfg, missing=videos["missing"])
    return {"captions": len(frames)}, decoded, frames


def _write_task(decoded: DecodedShard, cfg_dict: dict, out_dir: str, caption_refs: list) -> ClipShardStats | str:
    """The shard's files, or, when a batch of its captions was lost (its actor lost for good, or unable to load the
    model again after a restart), nothing and the reason: the driver runs the shard again, as for any lost work.
    ``caption_refs`` (one per batch) come nested, so that Ray does not resolve them first; all are ready by now."""
    import ray

    from pose_data.config import from_dict

    cfg = from_dict(HdvilaIndexConfig, cfg_dict)
    captions: list[CaptionResult] = []
    for ref in caption_refs:
        try:
            captions += ray.get(ref)
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
            if is_lost_work(err) or isinstance(cause, CaptionerLoadError):
                return f"captions lost: {one_line_error(cause or err)}"
            raise
    stats = write_shard(decoded, cfg, Path(out_dir), captions=captions)
    stats = dataclasses.replace(stats, **worker_location())
    write_json_atomic(Path(out_dir) / "stats" / f"{stats.shard}.json", dataclasses.asdict(stats))
    return stats


def caption_workers(cfg: HdvilaIndexConfig) -> tuple[int, float, float]:
    """(actors, CPUs and GPUs each): one actor per GPU of the cluster when it has GPUs, else ``caption.workers``
    (default 1) CPU actors."""
    import ray

    c = cfg.caption
    gpus_in_cluster = int(ray.cluster_resources().get("GPU", 0))
    gpus = c.worker_gpus if c.worker_gpus is not None else (1.0 if gpus_in_cluster and c.device != "cpu" else 0.0)
    workers = c.workers if c.workers is not None else (max(1, int(gpus_in_cluster // gpus)) if gpus else 1)
    return workers, c.worker_cpus, gpus


def run_captioned_shards(todo, plan: ShardPlan, out_dir: Path, cfg: HdvilaIndexConfig, videos: dict, bar: StatusProgress) -> None:
    """Decode tasks -> captioning actors -> write tasks, streaming. Writes ``OUT/_work/captioner.json``: the
    captioner's identity and the captioning stage's timing (since the actors started; an actor that was restarted
    counts from its restart)."""
    import ray

    workers, cpus, gpus = caption_workers(cfg)
    require_resources(cpus=cpus * workers + 1, gpus=gpus * workers,
                      what=f"{workers} captioning worker(s) of {cpus:g} CPU(s) and {gpus:g} GPU(s) plus 1 CPU for decode/write tasks")  # fmt: skip
    actor_cls = ray.remote(CaptionBatchRunner).options(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=2)
    pool = ActorPool([actor_cls.remote(cfg.caption, num_threads=max(1, int(cpus)), exit_on_fatal=True) for _ in range(workers)], "caption")
    try:  # before any decoding: a model that cannot load stops the run here, in one line
        ray.get([actor.ready.remote() for actor in pool.actors])
        identity = ray.get(pool.actors[0].identity.remote())
    except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as err:
        cause = getattr(err, "cause", None)
        raise RuntimeError(str(cause) if isinstance(cause, CaptionerLoadError) else f"the captioning model could not be loaded: {err}") from None
    check_same_captioner(out_dir, identity)
    write_json_atomic(out_dir / CAPTIONER_FILE, {"captioner": identity})  # before any caption: a killed run's resume checks it
    decode = ray.remote(_decode_task).options(num_returns=3, num_cpus=1, max_retries=2, retry_exceptions=True)
    write = ray.remote(_write_task).options(num_cpus=1, max_retries=1, retry_exceptions=True)
    videos_ref, cfg_dict, batch = ray.put(videos), to_dict(cfg), cfg.caption.batch_size
    decoding_limit = max(1, int(ray.cluster_resources().get("CPU", 1) - cpus * workers))  # one decode per free CPU
    waiting_limit = decoding_limit + 2 * workers  # shards decoded or being decoded whose captions are not all back
    attempts = ShardAttempts(todo)  # a shard whose work a lost node or actor took with it is run again
    decoding: dict = {}  # summary ref -> (shard id, decoded ref, frames ref)
    captioning: dict = {}  # shard id -> (decoded ref, its caption refs not yet ready, all its caption refs)
    writing: dict = {}  # write ref -> shard id
    while todo or decoding or captioning or writing:
        while todo and len(decoding) < decoding_limit and len(decoding) + len(captioning) < waiting_limit:
            sid = todo.popleft()
            summary_ref, decoded_ref, frames_ref = decode.remote(sid, str(plan.input_path(sid)), videos_ref, cfg_dict)
            decoding[summary_ref] = (sid, decoded_ref, frames_ref)
        pending = {ref: sid for sid, (_, waiting, _) in captioning.items() for ref in waiting}
        ready, _ = ray.wait([*decoding, *pending, *writing], num_returns=1)
        for ref in ready:
            if ref in decoding:
                sid, decoded_ref, frames_ref = decoding.pop(ref)
                summary = attempts.result(sid, ref)
                if summary is not None:
                    n = summary["captions"]
                    refs = [pool.submit(frames_ref, i, min(i + batch, n)) for i in range(0, n, batch)]
                    captioning[sid] = (decoded_ref, set(refs), refs)
            elif ref in pending:
                captioning[pending[ref]][1].discard(ref)
            else:
                sid = writing.pop(ref)
                stats: ClipShardStats | str | None = attempts.result(sid, ref)
                if isinstance(stats, str):
                    attempts.requeue(sid, stats)
                elif stats is not None:
                    bar.update(stats.rows, stats.counts)
        for sid in [sid for sid, (_, waiting, _) in captioning.items() if not waiting]:  # every batch back: write it
            decoded_ref, _, refs = captioning.pop(sid)
            writing[write.remote(decoded_ref, cfg_dict, str(out_dir), refs)] = sid
    attempts.check()
    timings = []
    for actor in pool.actors:
        try:
            timings += [t] if (t := ray.get(actor.timing.remote()))["clips"] else []
        except ray.exceptions.RayError:  # an actor lost for good: its figures are gone with it
            continue
    span = (max(t["last_end"] for t in timings) - min(t["first_start"] for t in timings)) if timings else 0.0
    stage = {"clips": sum(t["clips"] for t in timings), "busy_s": round(sum(t["busy_s"] for t in timings), 3),
             "span_s": round(span, 3), "workers": workers}  # fmt: skip
    write_json_atomic(out_dir / CAPTIONER_FILE, {"captioner": identity, "caption_stage": stage})


def check_same_captioner(out_dir: Path, identity: dict) -> None:
    """A folder captioned before is resumed only with the same captioner: the same model files (folder hash or hub
    revision) and dtype, which the run's settings alone do not pin (a hub id, a folder, ``dtype: auto``)."""
    stored = out_dir / CAPTIONER_FILE
    if stored.is_file():
        before = json.loads(stored.read_text()).get("captioner")
        if before is not None and before != identity:
            changed = "; ".join(f"{k} {before.get(k)!r} -> {identity.get(k)!r}" for k in sorted(set(before) | set(identity)) if before.get(k) != identity.get(k))
            raise ValueError(f"{out_dir} was captioned with another captioner ({changed}); use another --output, or --overwrite to start it again")
