"""Fetch one missing video with yt-dlp (``pose-data index-hdvila --download``; optional dependency).

``download_video(url, video_id, out_dir)`` saves ``out_dir/<video_id>.<ext>`` (a name
:class:`pose_data.video_lookup.VideoIndex` finds) and returns its path; any failure raises
:class:`VideoDownloadError` with yt-dlp's reason in words (``HTTP Error 404: Not Found``, ``Video
unavailable``, ...), for the indexer to record as the clip's error.

Default format: video only, H.264 first, at most 720p (HD-VILA's resolution), because stage 2
trains on frames without sound and merging separate video and audio streams needs an ``ffmpeg``
binary that the pipeline does not otherwise require; H.264 is also the cheapest to decode. Other
codecs (VP9, AV1) are taken when no H.264 stream exists: PyAV's FFmpeg decodes them.

yt-dlp writes to ``<name>.part`` and renames when complete, so a killed run never leaves a partial
file under the final name; an existing complete file is reused, not fetched again. It does not
check for updates or use its cache folder here. Two workers must not download the same video_id
into the same folder at the same time (group clips by video before downloading).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

DEFAULT_FORMAT = "bv*[vcodec^=avc1][height<=?720]/bv*[height<=?720]/b[height<=?720]/bv*/b"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SAFE_VIDEO_ID = re.compile(r"^[^/\\\x00-\x1f]+$")
logger = logging.getLogger(__name__)


class VideoDownloadError(RuntimeError):
    """A video could not be downloaded; ``reason`` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _YtDlpLog:
    """yt-dlp's ``logger`` option: keep its errors for the exception, log its warnings at INFO."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        logger.info("yt-dlp warning: %s", _clean(msg))  # mostly "falling back on generic extractor"

    def error(self, msg: str) -> None:
        self.errors.append(_clean(msg))


def _clean(msg: str) -> str:
    return _ANSI.sub("", str(msg)).removeprefix("ERROR: ").strip()


def download_video(
    url: str,
    video_id: str,
    out_dir: str | os.PathLike,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    format: str = DEFAULT_FORMAT,  # noqa: A002 - yt-dlp's own name for it
) -> Path:
    """Download ``url`` to ``out_dir/<video_id>.<ext>`` and return that path.

    ``timeout`` is yt-dlp's socket timeout (seconds per network operation, not for the whole file);
    ``retries`` applies to HTTP errors that may pass (5xx, broken connections) and to fragments.
    Raises VideoDownloadError (with yt-dlp's reason) on any failure, ImportError if yt-dlp is not
    installed, ValueError for a non-positive timeout or negative retries.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if not isinstance(video_id, str) or not _SAFE_VIDEO_ID.match(video_id) or video_id in (".", ".."):
        raise VideoDownloadError(f"video_id {video_id!r} cannot be a file name (empty, '/', '\\' or control characters)")
    if not isinstance(url, str) or not url.strip():
        raise VideoDownloadError(f"no url to download video {video_id!r} from (got {url!r})")
    try:
        import yt_dlp
    except ImportError as err:
        raise ImportError("--download needs yt-dlp: pip install yt-dlp") from err

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _YtDlpLog()
    options = {
        # '%' starts a yt-dlp template field: escape it in the literal part of the name
        "outtmpl": {"default": str(out_dir / (video_id.replace("%", "%%") + ".%(ext)s"))},
        "format": format,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": log,
        "noplaylist": True,
        "cachedir": False,
        "socket_timeout": timeout,
        "retries": retries,
        "fragment_retries": retries,
        "extractor_retries": retries,
        "continuedl": True,
        "overwrites": False,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            # resolve first: a page with several videos must fail before any of them is fetched
            info = ydl.extract_info(url, download=False, process=False)
            if info is not None and info.get("_type") in ("playlist", "multi_video"):
                raise VideoDownloadError(f"{url} is a playlist or a page of several videos, not one video")
            if info is not None:
                info = ydl.process_ie_result(info, download=True)
    except yt_dlp.utils.DownloadError as err:
        raise VideoDownloadError(log.errors[-1] if log.errors else _clean(str(err))) from err
    except VideoDownloadError:
        raise
    except Exception as err:  # yt-dlp lets some errors of odd sites through unwrapped
        raise VideoDownloadError(f"yt-dlp failed: {type(err).__name__}: {err}") from err
    if info is None:
        raise VideoDownloadError(log.errors[-1] if log.errors else f"yt-dlp returned nothing for {url}")
    return _downloaded_path(info, out_dir, video_id)


def _downloaded_path(info: dict, out_dir: Path, video_id: str) -> Path:
    """The final file yt-dlp wrote (after any post-processing), checked to exist and be non-empty."""
    paths = [Path(d["filepath"]) for d in info.get("requested_downloads") or [] if d.get("filepath")]
    if not paths:  # yt-dlp reused an existing file without reporting it: find it by name
        paths = [p for p in sorted(out_dir.glob(f"{_glob_escape(video_id)}.*")) if not p.name.endswith((".part", ".ytdl"))]
    for path in paths:
        if path.is_file() and path.stat().st_size > 0:
            return path
    raise VideoDownloadError(f"yt-dlp reported success but wrote no file for {video_id!r} in {out_dir}")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
