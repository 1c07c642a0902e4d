"""``fyp-eval``'s work: score generated videos, one row each, into ``DIR/metrics.parquet`` and ``DIR/summary.json``.

Per video (an :class:`model.evaluation.inputs.EvalItem`; :mod:`model.evaluation.video_scoring`): decode every frame
(PyAV; for a side-by-side video only the generated right-hand part) and hand the frames on as they come, in batches
(:class:`model.evaluation.video_scoring.FrameBatches`: at most a batch of frames is held, however long or large the
video), to

- CLIP: CLIP score and frame consistency (:mod:`model.evaluation.clip_metrics`, ``100 * cosine``);
- the pose backend: ``person_found`` is the share of frames where it finds someone;
- the requested pose frame of each frame (:mod:`model.evaluation.inputs`; a driving video's poses are extracted with
  the same backend, at the video's frame rate, and kept in ``DIR/poses/``), and COCO keypoint AP
  (:mod:`model.evaluation.pose_accuracy`) over the frames that have one; where the requested poses have hands and
  the backend finds hands (a whole-body one), COCO-WholeBody's hand AP beside it (:mod:`model.evaluation.hand_accuracy`).

``DIR/metrics.parquet`` columns (one row per video):

================= ================ ===========================================================================
column            type             meaning
================= ================ ===========================================================================
path              string           the video
origin            string           where it was listed: its sidecar, or FILE.jsonl:LINE
prompt            string           its prompt
status            string           ``ok`` or ``failed`` (the video could not be scored at all)
reason            string           why it failed (null when ok)
frames            int32            frames decoded (and scored)
fps               float64          the sidecar's frame rate, else the decoded one
width, height     int32            size of the scored frames (the generated part of a side-by-side video)
clip_score        float64          100 * mean text-frame CLIP cosine
frame_consistency float64          100 * mean CLIP cosine of consecutive frames (null for one frame)
pose_ap           float64          COCO keypoint AP (0-1) against the requested pose (null: see pose_reason)
person_found      float64          share of frames where the pose backend found a person (0-1)
pose_frames       int32            frames compared with a requested pose frame (its row ``ok``: a person was shown)
pose_reason       string           why pose_ap is null (no pose given, a skeleton video without keypoints, ...)
pose_source       string           the pose the video was asked to follow
hand_ap           float64          COCO-WholeBody hand AP (0-1): the mean of the left- and right-hand keypoint APs,
                                   persons matched by side with the hand sigmas (null: see hand_reason)
hand_reason       string           why hand_ap is null (the requested poses have no hands, the backend finds
                                   none, scored before hand AP existed, ...)
frame_clip_scores list<float64>    100 * text-frame cosine, per frame
frame_persons     list<int32>      persons found, per frame
frame_oks         list<float64>    best OKS of any found person with any visible requested one, per frame
                                   that has a requested pose frame (null: not compared, or no one found)
seconds           float64          time spent on this video
================= ================ ===========================================================================

Resuming (:mod:`model.evaluation.resume_journal`): every scored video is appended to ``DIR/scored.jsonl`` as it
finishes; a run over the same inputs with the same models takes a video from there when its file (size, modification
time), prompt, pose files and model files (a local folder's, a hub model's cached revision) are unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from model.evaluation.clip_metrics import ClipModelLoadError, exact_mean
from model.evaluation.config import EvalConfig
from model.evaluation.hand_accuracy import NO_HANDS_ASKED, SCORED_BEFORE, hand_ap, whole_hand_fields
from model.evaluation.inputs import EvalItem
from model.evaluation.pose_accuracy import keypoint_ap
from model.evaluation.resume_journal import ends_a_line, fingerprint, item_stamp, load_scored, resume_key
from model.evaluation.video_scoring import FAILED, OK, SCHEMA, Models, score_video
from pose_data.files.atomic import atomic_path, write_json_atomic
from pose_data.files.utf8_text import utf8_text
from pose_data.pose.estimator import PoseModelLoadError

log = logging.getLogger(__name__)
FORMAT = "fyp-eval"
SCALES = {
    "clip_score": "100 x cosine of CLIP text and frame embeddings, averaged over frames (the paper's scale)",
    "frame_consistency": "100 x cosine of CLIP embeddings of consecutive frames, averaged (a percentage)",
    "pose_ap": "COCO keypoint AP, OKS 0.50:0.95, 0-1 (xtcocotools COCOeval)",
    "hand_ap": "COCO-WholeBody hand AP: mean of the left- and right-hand keypoint APs, OKS 0.50:0.95 with the hand sigmas "
               "and the person's scale, 0-1 (xtcocotools COCOeval keypoints_lefthand / keypoints_righthand)",
    "person_found": "share of frames with a person found, 0-1",
}


def evaluate_videos(items: list[EvalItem], cfg: EvalConfig, output: str | os.PathLike, *, inputs: list[str] | None = None,
                    progress: bool = True) -> tuple[dict, pa.Table]:  # fmt: skip
    """Score ``items`` into ``output`` (module doc); returns the summary (also ``output/summary.json``) and the
    table (``output/metrics.parquet``). Only a model that cannot be loaded stops the run."""
    from pose_data.config import to_dict
    from pose_data.files.manifest import package_versions
    from pose_data.progress import StatusProgress

    started = time.perf_counter()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    scored_file = out / "scored.jsonl"
    done = load_scored(scored_file)
    ends_a_line(scored_file)
    models, identity = Models(cfg), fingerprint(cfg)
    rows, reused = [], 0
    try:
        with open(scored_file, "a", encoding="utf-8") as journal, \
                StatusProgress(total=len(items), initial=0, statuses=(OK, FAILED), enabled=progress, unit="video") as bar:  # fmt: skip
            for item in items:
                stamp = item_stamp(item)
                key = resume_key(stamp, identity)
                if key is not None and key in done and whole_hand_fields(done[key]):
                    row, reused = _reused(done[key], item), reused + 1
                else:
                    row = _score_or_fail(item, models, out / "poses")
                    if key is not None and row["status"] == OK:
                        identity = fingerprint(cfg)  # as loaded: a hub model downloaded just now has its revision
                        journal.write(json.dumps({"key": resume_key(stamp, identity), "row": row}) + "\n")
                        journal.flush()
                rows.append(row)
                bar.update(1, {row["status"]: 1})
    finally:
        models.close()
    table = pa.Table.from_pylist([{f.name: _storable(r.get(f.name), f.type) for f in SCHEMA} for r in rows], schema=SCHEMA)
    with atomic_path(out / "metrics.parquet") as tmp:
        pq.write_table(table, tmp)
    summary = {
        "format": FORMAT,
        "inputs": inputs,
        "config": to_dict(cfg),
        "models": {"clip": cfg.clip_model, "clip_revision": identity["clip_revision"], "clip_files": identity["clip_files"],
                   "pose": _pose_model_name(cfg)},  # fmt: skip
        "scales": SCALES,
        "counts": {"videos": len(rows), OK: sum(r["status"] == OK for r in rows), FAILED: sum(r["status"] == FAILED for r in rows),
                   "with_pose_ap": sum(r.get("pose_ap") is not None for r in rows), "reused": reused},  # fmt: skip
        "overall": overall(rows),
        "versions": package_versions(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(out / "summary.json", summary)
    return summary, table


def _storable(value, kind: pa.DataType | None = None):
    """``value`` as a column of ``kind`` can hold it: text for a string column (a prompt that was no string, from an
    item built by hand), and a file name that is not UTF-8 (Python keeps its bytes as lone surrogates) with those
    bytes escaped (``caf\\udce9.mp4``)."""
    if kind is not None and pa.types.is_string(kind) and value is not None and not isinstance(value, str):
        value = repr(value)
    return utf8_text(value) if isinstance(value, str) else value


def _reused(row: dict, item: EvalItem) -> dict:
    """A journal row for ``item``; one written before hand AP existed has no hand fields: null, with that reason."""
    row = {**row, "origin": item.origin}
    if "hand_ap" not in row and "hand_reason" not in row:
        row.update(hand_ap=None, hand_reason=SCORED_BEFORE)
    return row


def _score_or_fail(item: EvalItem, models: Models, poses_dir: Path) -> dict:
    """:func:`~model.evaluation.video_scoring.score_video`, with anything unforeseen in one video's data made that video's failed row (the models
    failing to load is not about one video: it stops the run)."""
    try:
        return score_video(item, models, poses_dir)
    except (ClipModelLoadError, PoseModelLoadError):
        raise
    except Exception as err:  # noqa: BLE001 - never a crash for one bad video
        log.warning("%s could not be scored: %s: %s", _storable(item.video), type(err).__name__, _storable(str(err))[:300])
        log.debug("the error's traceback", exc_info=True)
        return {"path": item.video, "origin": item.origin, "prompt": item.prompt, "pose_source": item.pose or item.keypoints,
                "status": FAILED, "reason": f"unexpected error: {type(err).__name__}: {err}"}  # fmt: skip


def _pose_model_name(cfg: EvalConfig) -> str:
    if cfg.pose.backend == "mediapipe":
        return "mediapipe BlazePose full"
    if cfg.pose.backend == "mediapipe-holistic":
        return "mediapipe Holistic"
    return f"{cfg.pose.backend} {cfg.pose.det_model} ({cfg.pose.det_checkpoint}) + {cfg.pose.pose_model} ({cfg.pose.pose_checkpoint})"


def overall(rows: list[dict]) -> dict:
    """The figures over every scored video: CLIP score over all frames (the paper averages over frames), frame
    consistency over all consecutive pairs, pose AP pooled over all paired frames (one COCOeval), hand AP pooled
    likewise over the videos whose backend finds hands (one COCOeval per side), and the means of the per-video
    figures."""
    ok = [r for r in rows if r["status"] == OK]
    frame_scores = [s for r in ok for s in r["frame_clip_scores"]]
    pairs = [(r["frame_consistency"], r["_pairs"]) for r in ok if r.get("frame_consistency") is not None]
    posed = [r for r in ok if r.get("pose_ap") is not None]
    compared = [r for r in ok if r.get("_compared")]  # with the detections of videos whose requested persons are all unseen
    pooled = keypoint_ap([(r["_compared"], r["_requested"], r["_detected"]) for r in compared]) if compared else None
    handed = [(r["_compared"], r["_hand_requested"], r["_hand_detected"])
              for r in compared if r.get("_hand_requested") is not None]  # fmt: skip
    hands = hand_ap(handed) if handed else None
    return {
        "clip_score": exact_mean(frame_scores),
        "frame_consistency": math.fsum(fc * n for fc, n in pairs) / sum(n for _, n in pairs) if pairs else None,
        "pose_ap": pooled.ap if pooled else None,
        "hand_ap": hands.ap if hands else None,
        "person_found": exact_mean(r["person_found"] for r in ok),
        "clip_score_mean_per_video": exact_mean(r["clip_score"] for r in ok),
        "frame_consistency_mean_per_video": exact_mean(fc for fc, _ in pairs),
        "pose_ap_mean_per_video": exact_mean(r["pose_ap"] for r in posed),
        "hand_ap_mean_per_video": exact_mean(r["hand_ap"] for r in ok if r.get("hand_ap") is not None),
        "frames": len(frame_scores),
        "pose_frames": sum(r["pose_frames"] for r in compared),
    }


def format_table(summary: dict, rows: pa.Table) -> str:
    """The per-video table (``metrics.parquet``'s) and the overall line, for the terminal."""

    def num(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"{'video':<32} {'frames':>6} {'CLIP':>6} {'consist':>7} {'pose AP':>7} {'hand AP':>7} {'person':>6}  note"]
    for r in rows.to_pylist():
        name = Path(r["path"]).name[-32:]
        hand_note = r["hand_reason"] if r["hand_reason"] not in (NO_HANDS_ASKED, SCORED_BEFORE) else None  # most poses have no hands: not worth a note
        note = r["reason"] if r["status"] == FAILED else (r["pose_reason"] or hand_note or "")
        lines.append(f"{name:<32} {r['frames'] if r['frames'] is not None else '-':>6} {num(r['clip_score']):>6} "
                     f"{num(r['frame_consistency']):>7} {num(r['pose_ap'], 3):>7} {num(r['hand_ap'], 3):>7} "
                     f"{num(r['person_found']):>6}  {note}")  # fmt: skip
    o, c = summary["overall"], summary["counts"]
    lines.append(f"{'overall (' + str(c[OK]) + ' of ' + str(c['videos']) + ' videos)':<32} {o['frames']:>6} {num(o['clip_score']):>6} "
                 f"{num(o['frame_consistency']):>7} {num(o['pose_ap'], 3):>7} {num(o.get('hand_ap'), 3):>7} "
                 f"{num(o['person_found']):>6}")  # fmt: skip
    return "\n".join(lines)
