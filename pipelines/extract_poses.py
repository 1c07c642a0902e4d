"""``pose-data extract-poses``: driving videos -> per video a ``keypoints.parquet`` and a ``skeleton.mp4``.

Layout::

    DIR/<name>/skeleton.mp4        the skeletons, one per sampled frame, at the sampled rate, the video's
                                   (upright) size; its comment tag records the skeleton style
    DIR/<name>/keypoints.parquet   one row per sampled frame (pose_data.extract_poses.sequence); records the source
                                   file (size, mtime, head hash) and the settings a re-run compares
    DIR/manifest.json              config, versions, every video's status / error / counts / timings

``<name>`` is the video's file name without its extension, made safe (:mod:`pose_data.extract_poses.output`:
never DIR itself or outside it, never hidden; a non-UTF-8 name escaped) and recorded in the manifest. A video's two
files are written into a hidden temp folder renamed into place when both are there, so a killed or failed video
leaves no half result. Videos run one after the other in this process with one pose model (a driving video is short
next to a dataset; a cluster is not needed). A missing or undecodable video becomes a ``failed`` entry naming the
reason and the others still run. Re-running the same command skips the videos already done from the same file (its
size, mtime and head) with the same settings and redoes the others; ``--overwrite`` deletes what extract-poses wrote
in DIR (its video folders and manifest; never the videos or anything else there) and starts again.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from pose_data.config import to_dict
from pose_data.extract_poses.config import ExtractPosesConfig
from pose_data.extract_poses.output import (
    COMMAND,
    KEYPOINTS_FILE,
    MANIFEST_FILE,
    SKELETON_FILE,
    check_manifest,
    check_replaceable,
    move_into_place,
    new_video_folder,
    remove_outputs,
    source_stamp,
    sweep_temp_folders,
    video_folder_name,
    write_pose_folder,
)
from pose_data.extract_poses.sequence import read_pose_sequence
from pose_data.files.atomic import write_json_atomic
from pose_data.files.manifest import package_versions
from pose_data.files.utf8_text import utf8_text
from pose_data.media.video_probe import VideoDecodeError
from pose_data.run_lock import lock_output
from pose_data.shard_plan import setting_differences

log = logging.getLogger(__name__)
DONE, SKIPPED, FAILED = "ok", "skipped", "failed"


def video_names(videos: list[str]) -> dict[str, Path]:
    """folder name -> path (:func:`video_folder_name`); ValueError when two inputs would write the same folder."""
    names: dict[str, Path] = {}
    for video in videos:
        path = Path(video)
        name = video_folder_name(path)
        if name in names and names[name].resolve() != path.resolve():
            raise ValueError(f"{utf8_text(str(names[name]))} and {utf8_text(str(path))} would both write <output>/{name}/: "
                             "rename one of them")  # fmt: skip
        names[name] = path
    return names


def extract_poses(videos: list[str], output: str, cfg: ExtractPosesConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Run every video; returns the manifest (also written to ``output/manifest.json``). One run per DIR at a
    time (:mod:`pose_data.run_lock`)."""
    cfg.validate()
    if not videos:
        raise ValueError("no video given")
    names = video_names(videos)  # before anything in DIR changes
    out = Path(output)
    with lock_output(out, COMMAND):
        check_manifest(out)
        sweep_temp_folders(out)
        if overwrite:  # what extract-poses wrote, nothing else (the lock this run holds stays)
            removed = remove_outputs(out)
            log.info("--overwrite: removed %d video folder(s)%s from %s", len(removed) - (MANIFEST_FILE in removed),
                     f" and {MANIFEST_FILE}" if MANIFEST_FILE in removed else "", utf8_text(str(out)))  # fmt: skip
        return _extract_all(names, out, cfg, progress)


def _extract_all(names: dict[str, Path], out: Path, cfg: ExtractPosesConfig, progress: bool) -> dict:
    settings = to_dict(cfg)
    started = time.time()
    estimator = None
    entries = []
    try:
        for name, path in names.items():
            folder = out / name
            source = utf8_text(str(path))  # what the manifest, the keypoints and the skeleton video record
            entry = {"name": name, "source": source, "output": utf8_text(str(folder))}
            if not path.is_file():  # before the model loads: a run of only missing files loads none
                log.error("%s: no such file", source)
                entries.append({**entry, "status": FAILED, "error": "no such file"})
                continue
            try:
                stamp = source_stamp(path)
                recorded = _recorded_info(folder)
                done = _done_info(recorded, source, stamp, settings)
                if done is None:
                    check_replaceable(folder)  # before the model loads too
            except (ValueError, OSError) as err:
                log.error("%s: %s", source, utf8_text(str(err)))
                entries.append({**entry, "status": FAILED, "error": utf8_text(str(err))})
                continue
            if done is not None:
                entries.append({**entry, "status": SKIPPED, **_summary(done)})
                continue
            if estimator is None:  # PoseModelLoadError: one line, and the run stops
                from pose_data.pose.backends import load_pose_estimator

                estimator = load_pose_estimator(cfg.pose)
            built = new_video_folder(out)  # renamed to `folder` once both files are there; removed otherwise
            try:
                info = _extract_one(path, built, estimator, cfg, settings, source, stamp, progress)
                _warn_if_replacing_another_source(folder, recorded, source)
                move_into_place(built, folder)
                entries.append({**entry, "status": DONE, **_summary(info)})
            except Exception as err:  # noqa: BLE001 - one video's failure is its entry; the others still run
                reason = utf8_text(err.reason if isinstance(err, VideoDecodeError) else f"{type(err).__name__}: {err}")
                log.error("%s: %s", source, reason)
                entries.append({**entry, "status": FAILED, "error": reason})
            finally:
                if built.exists():
                    shutil.rmtree(built)
    finally:
        if estimator is not None:
            estimator.close()
    counts = {s: sum(e["status"] == s for e in entries) for s in (DONE, SKIPPED, FAILED)}
    manifest = {
        "command": COMMAND,
        "config": settings,
        "versions": package_versions(),
        "counts": counts,
        "videos": entries,
        "seconds": round(time.time() - started, 3),
    }
    write_json_atomic(out / MANIFEST_FILE, manifest)
    return manifest


def _summary(info: dict) -> dict:
    return {k: info.get(k) for k in ("frames", "sampled_fps", "counts", "decode_errors", "seconds", "source_file")}


def _recorded_info(folder: Path) -> dict | None:
    """What an earlier run recorded in ``folder`` (its keypoints' info) when both its files are there, else None."""
    keypoints = folder / KEYPOINTS_FILE
    if not (keypoints.is_file() and (folder / SKELETON_FILE).is_file()):
        return None
    try:
        return read_pose_sequence(keypoints).info
    except (ValueError, OSError):
        return None


def _done_info(recorded: dict | None, source: str, stamp: dict, settings: dict) -> dict | None:
    """``recorded`` when the video was extracted before from the same path, with the file there unchanged (size,
    mtime, head: :func:`source_stamp`) and the same settings; else None."""
    if recorded is None:
        return None
    before = recorded.get("settings")
    same = (recorded.get("source") == source and recorded.get("source_file") == stamp and isinstance(before, dict)
            and not setting_differences(before, settings))  # a setting added since (absent there) counts as its null default
    return recorded if same else None


def _warn_if_replacing_another_source(folder: Path, recorded: dict | None, source: str) -> None:
    """A folder made from another file (``a.mov`` after ``a.mp4`` of an earlier run) is replaced, said in a warning."""
    before = None if recorded is None else recorded.get("source")
    if before is not None and before != source:
        log.warning("%s held the poses of %s; now those of %s", utf8_text(str(folder)), before, source)


def _extract_one(path: Path, folder: Path, estimator, cfg: ExtractPosesConfig, settings: dict, source: str, stamp: dict,
                 progress: bool) -> dict:  # fmt: skip
    """Write the video's ``skeleton.mp4`` and ``keypoints.parquet`` into ``folder``; returns the recorded info."""
    with tqdm(desc=utf8_text(path.name), unit="frame", disable=not progress, leave=False) as bar:
        return write_pose_folder(path, folder, estimator, cfg, {"source": source, "source_file": stamp, "settings": settings},
                                 progress=bar.update)  # fmt: skip
