"""``pose-data extract-poses``: driving videos -> per video a ``keypoints.parquet`` and a ``skeleton.mp4``.

Layout::

    DIR/<name>/skeleton.mp4        the skeletons, one per sampled frame, at the sampled rate, the video's
                                   (upright) size; its comment tag records the skeleton style
    DIR/<name>/keypoints.parquet   one row per sampled frame (pose_data.pose_sequence); written last, so its
                                   presence marks the video done
    DIR/manifest.json              config, versions, every video's status / error / counts / timings

``<name>`` is the video's file name without its extension. Videos run one after the other in this
process with one pose model (a driving video is short next to a dataset; a cluster is not needed).
A missing or undecodable video becomes a ``failed`` entry naming the reason and the others still run.
Re-running the same command skips the videos already done with the same settings (``--overwrite``
starts again).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from pose_data.atomic import write_json_atomic
from pose_data.config import to_dict
from pose_data.extract_poses_config import ExtractPosesConfig
from pose_data.frame_sampling import RateSampler
from pose_data.manifest import package_versions
from pose_data.pose_sequence import extract_pose_sequence, read_pose_sequence
from pose_data.run_lock import LOCK_NAME, lock_output
from pose_data.video_decode import VideoDecodeError, probe_video
from pose_data.video_writer import Mp4Writer

log = logging.getLogger(__name__)
DONE, SKIPPED, FAILED = "ok", "skipped", "failed"


def video_names(videos: list[str]) -> dict[str, Path]:
    """name -> path; ValueError when two inputs would write the same folder."""
    names: dict[str, Path] = {}
    for video in videos:
        path = Path(video)
        name = path.stem
        if name in names and names[name].resolve() != path.resolve():
            raise ValueError(f"{names[name]} and {path} would both write <output>/{name}/: rename one of them")
        names[name] = path
    return names


def extract_poses(videos: list[str], output: str, cfg: ExtractPosesConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every video; returns the manifest (also written to ``output/manifest.json``). One run per DIR at a
    time (:mod:`pose_data.run_lock`)."""
    cfg.validate()
    if not videos:
        raise ValueError("no video given")
    out = Path(output)
    with lock_output(out, "pose-data extract-poses"):
        if overwrite:
            for child in out.iterdir():  # everything but the lock this run holds
                if child.is_dir():
                    shutil.rmtree(child)
                elif child.name != LOCK_NAME:
                    child.unlink()
        return _extract_all(videos, out, cfg, progress)


def _extract_all(videos: list[str], out: Path, cfg: ExtractPosesConfig, progress: bool) -> dict:
    names = video_names(videos)
    settings = to_dict(cfg)
    started = time.time()
    estimator = None
    entries = []
    try:
        for name, path in names.items():
            folder = out / name
            entry = {"name": name, "source": str(path), "output": str(folder)}
            done = _done_info(folder, path, settings)
            if done is not None:
                entries.append({**entry, "status": SKIPPED, **_summary(done)})
                continue
            if not path.is_file():  # before the model loads: a run of only missing files loads none
                log.error("%s: no such file", path)
                entries.append({**entry, "status": FAILED, "error": "no such file"})
                continue
            if estimator is None:  # PoseModelLoadError: one line, and the run stops
                from pose_data.pose_estimator import load_pose_estimator

                estimator = load_pose_estimator(cfg.pose)
            try:
                info = _extract_one(path, folder, estimator, cfg, settings, progress)
                entries.append({**entry, "status": DONE, **_summary(info)})
            except Exception as err:  # noqa: BLE001 - one video's failure is its entry; the others still run
                reason = err.reason if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}"
                log.error("%s: %s", path, reason)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()  # nothing was written for it
                entries.append({**entry, "status": FAILED, "error": reason})
    finally:
        if estimator is not None:
            estimator.close()
    counts = {s: sum(e["status"] == s for e in entries) for s in (DONE, SKIPPED, FAILED)}
    manifest = {
        "command": "pose-data extract-poses",
        "config": settings,
        "versions": package_versions(),
        "counts": counts,
        "videos": entries,
        "seconds": round(time.time() - started, 3),
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _summary(info: dict) -> dict:
    return {k: info.get(k) for k in ("frames", "sampled_fps", "counts", "decode_errors", "seconds")}


def _done_info(folder: Path, source: Path, settings: dict) -> dict | None:
    """The recorded info when the video was extracted before from the same file with the same settings, else None."""
    keypoints = folder / "keypoints.parquet"
    if not (keypoints.is_file() and (folder / "skeleton.mp4").is_file()):
        return None
    try:
        info = read_pose_sequence(keypoints).info
    except (ValueError, OSError):
        return None
    return info if info.get("source") == str(source) and info.get("settings") == settings else None


def _skeleton_fps(path: Path, cfg: ExtractPosesConfig) -> float:
    """The rate of the skeleton video: the sampling rate, else the header's rate over the stride (25 if unknown)."""
    if cfg.sampling.fps is not None:
        return RateSampler(cfg.sampling.fps).fps
    header = probe_video(path).fps or 25.0
    return header / (cfg.sampling.frame_stride or 1)


def _extract_one(path: Path, folder: Path, estimator, cfg: ExtractPosesConfig, settings: dict, progress: bool) -> dict:
    fps = _skeleton_fps(path, cfg)
    comment = {"format": "fyp-skeleton-video", "skeleton_style": cfg.skeleton_style, "source": str(path)}
    with tqdm(desc=path.name, unit="frame", disable=not progress, leave=False) as bar, \
            Mp4Writer(folder / "skeleton.mp4", fps, crf=cfg.crf, comment=comment) as writer:  # fmt: skip
        sequence = extract_pose_sequence(
            path, estimator, filter_cfg=cfg.filter, min_keypoint_score=cfg.min_keypoint_score,
            skeleton_style=cfg.skeleton_style, sampling=cfg.sampling, batch_size=cfg.pose.batch_size,
            on_skeleton=writer.add, progress=bar.update,
        )  # fmt: skip
    sequence.info["settings"] = settings
    sequence.info["skeleton_video_fps"] = fps
    sequence.save(folder / "keypoints.parquet")
    return sequence.info
