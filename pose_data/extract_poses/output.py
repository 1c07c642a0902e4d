"""The output folder of ``pose-data extract-poses``: one folder per video, named safely, written whole or not at all,
and nothing in it touched that the command did not write.

- :func:`video_folder_name`: a video's folder is its file name without the extension, made safe: leading dots
  become ``_`` (``..mp4`` would be DIR itself, ``...mp4`` DIR's parent, ``.clip.mp4`` a hidden folder), bytes that
  are not UTF-8 are escaped as ``fyp-eval`` escapes them (``caf\\udce9``, :mod:`pose_data.files.utf8_text`), the name of
  the command's own file (``manifest.json``) gets a ``_``, and a name too long for a file system is cut and ends
  with a hash. The manifest records each video's folder name.
- :func:`new_video_folder` / :func:`move_into_place`: a video's two files are written into a hidden temp folder,
  renamed into place once both are there; a killed or failed video leaves no ``skeleton.mp4`` without its
  ``keypoints.parquet``. :func:`sweep_temp_folders` removes the temp folders a killed run left.
- :func:`written_here`: a folder that holds extract-poses' files and nothing else (checked by content: a pose
  sequence, a tagged skeleton video). Only such folders are replaced by a re-run or deleted by ``--overwrite``,
  with ``manifest.json`` when extract-poses wrote it; the input videos and any other file or folder stay.
- :func:`write_pose_folder`: one video's ``skeleton.mp4`` and ``keypoints.parquet`` (what ``extract-poses`` and
  ``fyp-app`` both run).
- :func:`source_stamp`: a video's size, modification time and the hash of its first MiB, so a re-run redoes a video
  whose file changed at the same path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from pose_data.files.json_file import read_json
from pose_data.files.utf8_text import utf8_text
from pose_data.media.frame_sampling import RateSampler
from pose_data.media.video_probe import VideoDecodeError, probe_video
from pose_data.media.video_writer import Mp4Writer

SKELETON_FILE = "skeleton.mp4"
KEYPOINTS_FILE = "keypoints.parquet"
MANIFEST_FILE = "manifest.json"
COMMAND = "pose-data extract-poses"
SKELETON_VIDEO_FORMAT = "fyp-skeleton-video"  # the "format" of a skeleton video's comment tag (model/generation/pose_source.py)
TEMP_PREFIX = ".extract-poses.tmp-"  # a video's folder while it is written, or an old one while it is replaced
MAX_NAME_BYTES = 200  # file systems allow 255; the rest is room for a suffix
HEAD_BYTES = 1 << 20


def video_folder_name(video: str | os.PathLike) -> str:
    """The name of ``video``'s folder under DIR (module doc): never empty, ``.``, ``..``, hidden or ``manifest.json``."""
    name = utf8_text(Path(video).stem)
    dots = len(name) - len(name.lstrip("."))
    name = "_" * dots + name[dots:] or "_"
    if name == MANIFEST_FILE:
        name += "_"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:12]
        name = name.encode("utf-8")[: MAX_NAME_BYTES - len(digest) - 1].decode("utf-8", "ignore") + "-" + digest
    return name


def source_stamp(video: str | os.PathLike) -> dict:
    """What says the file at ``video`` is still the one a folder was made from: bytes, mtime and its head's SHA-256."""
    stat = os.stat(video)
    with open(video, "rb") as f:
        head = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_sha256": head}


def _is_output_or_its_temp(name: str) -> bool:
    return name in (SKELETON_FILE, KEYPOINTS_FILE) or name.startswith((f".{SKELETON_FILE}.tmp-", f".{KEYPOINTS_FILE}.tmp-"))


def _is_pose_sequence(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pose_data.extract_poses.sequence import METADATA_KEY

    if path.is_symlink() or not path.is_file():
        return False
    try:
        return METADATA_KEY in (pq.read_schema(path).metadata or {})
    except (pa.ArrowException, OSError):
        return False


def _is_skeleton_video(path: Path) -> bool:
    from pose_data.media.video_writer import read_video_comment

    if path.is_symlink() or not path.is_file():
        return False
    return (read_video_comment(path) or {}).get("format") == SKELETON_VIDEO_FORMAT


def written_here(folder: Path) -> bool:
    """True when ``folder`` is a folder (not a link) holding extract-poses' files and nothing else: a
    ``keypoints.parquet`` that is a pose sequence, a ``skeleton.mp4`` tagged as a skeleton video (one of them at
    least), and the temp files of their writes."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    names = [p.name for p in folder.iterdir()]
    if not all(_is_output_or_its_temp(n) for n in names) or not ({SKELETON_FILE, KEYPOINTS_FILE} & set(names)):
        return False
    return (KEYPOINTS_FILE not in names or _is_pose_sequence(folder / KEYPOINTS_FILE)) and (
        SKELETON_FILE not in names or _is_skeleton_video(folder / SKELETON_FILE)
    )


def check_replaceable(folder: Path) -> None:
    """ValueError naming ``folder`` and the way out unless a new output may take its place: nothing there, an empty
    folder, or a folder extract-poses wrote."""
    if not (folder.exists() or folder.is_symlink()):
        return
    way_out = "move it away, or use another --output"
    if folder.is_symlink():
        raise ValueError(f"{utf8_text(str(folder))} is a link, not a folder pose-data extract-poses wrote; {way_out}")
    if not folder.is_dir():
        raise ValueError(f"{utf8_text(str(folder))} is a file, not a folder pose-data extract-poses wrote; {way_out}")
    names = sorted(p.name for p in folder.iterdir())
    if names and not written_here(folder):
        shown = ", ".join(utf8_text(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ValueError(f"{utf8_text(str(folder))} holds files pose-data extract-poses did not write ({shown}); "
                         "move them away, or use another --output")  # fmt: skip


def new_video_folder(out: Path) -> Path:
    """A new hidden temp folder in ``out`` to write one video's files into (then :func:`move_into_place`)."""
    folder = out / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder


def move_into_place(built: Path, folder: Path) -> None:
    """Rename the finished temp folder ``built`` to ``folder``, replacing what is there (:func:`check_replaceable`
    allowed it). A run killed between the renames leaves no ``folder`` and the old one as a temp folder: the next
    run sweeps it and redoes the video."""
    old = None
    if folder.exists() or folder.is_symlink():
        old = folder.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}")
        os.rename(folder, old)
    os.rename(built, folder)
    if old is not None:
        shutil.rmtree(old)


def sweep_temp_folders(out: Path) -> int:
    """Delete the temp folders a killed run left in ``out`` (only while holding its run lock); returns how many."""
    stale = [p for p in out.glob(f"{TEMP_PREFIX}*") if not p.is_symlink() and p.is_dir()
             and all(_is_output_or_its_temp(c.name) for c in p.iterdir())]  # fmt: skip
    for folder in stale:
        shutil.rmtree(folder)
    return len(stale)


def check_manifest(out: Path) -> None:
    """ValueError unless ``out/manifest.json`` is absent or extract-poses wrote it: a folder of another command
    (``build-laion-pose``, ``index-hdvila``) or the user's own file is never overwritten."""
    path = out / MANIFEST_FILE
    if not (path.exists() or path.is_symlink()):
        return
    command = None
    if path.is_file() and not path.is_symlink():
        try:
            data = read_json(path)
            command = data.get("command") if isinstance(data, dict) else None
        except ValueError:
            command = None
    if command != COMMAND:
        whose = f"written by {command}" if isinstance(command, str) else "not one pose-data extract-poses wrote"
        raise ValueError(f"{utf8_text(str(path))} is {whose}; use another --output for extract-poses")


def remove_outputs(out: Path) -> list[str]:
    """``--overwrite``: delete what extract-poses wrote in ``out`` (its video folders, its manifest) and nothing
    else; returns the names deleted. :func:`check_manifest` has passed."""
    removed = []
    for child in sorted(out.iterdir()):
        if written_here(child):
            shutil.rmtree(child)
            removed.append(child.name)
    manifest = out / MANIFEST_FILE
    if manifest.is_file():
        manifest.unlink()
        removed.append(MANIFEST_FILE)
    return removed


def skeleton_fps(path: Path, cfg) -> float:
    """The rate of the skeleton video: the sampling rate, else the header's rate over the stride (25 if unknown)."""
    if cfg.sampling.fps is not None:
        return RateSampler(cfg.sampling.fps).fps
    header = probe_video(path).fps or 25.0
    return header / (cfg.sampling.frame_stride or 1)


def write_pose_folder(path: Path, folder: Path, estimator, cfg, info: dict, *, progress=None) -> dict:
    """Write the video ``path``'s ``skeleton.mp4`` and ``keypoints.parquet`` into ``folder`` with ``estimator`` and
    the :class:`ExtractPosesConfig` ``cfg``; ``info`` (its ``source`` at least) is added to the keypoints' recorded
    info, which is returned. ``progress(n)``: called as frames are done. VideoDecodeError when no frame was sampled."""
    from pose_data.extract_poses.sequence import extract_pose_sequence

    fps = skeleton_fps(path, cfg)
    comment = {"format": SKELETON_VIDEO_FORMAT, "skeleton_style": cfg.skeleton_style, "source": info["source"]}
    with Mp4Writer(folder / SKELETON_FILE, fps, crf=cfg.crf, comment=comment) as writer:
        sequence = extract_pose_sequence(
            path, estimator, filter_cfg=cfg.filter, min_keypoint_score=cfg.min_keypoint_score,
            skeleton_style=cfg.skeleton_style, sampling=cfg.sampling, batch_size=cfg.pose.batch_size,
            on_skeleton=writer.add, progress=progress,
        )  # fmt: skip
    if not (folder / SKELETON_FILE).is_file():
        raise VideoDecodeError("no frame was sampled, so there is no skeleton video")
    sequence.info.update(info)
    sequence.info["skeleton_video_fps"] = fps
    sequence.save(folder / KEYPOINTS_FILE)
    return sequence.info
