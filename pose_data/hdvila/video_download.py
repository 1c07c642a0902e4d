"""Fetch one missing video with yt-dlp (``pose-data index-hdvila --download``; optional dependency).

``download_video(url, video_id, out_dir)`` saves ``out_dir/<video_id>.<ext>`` (a name
:class:`pose_data.hdvila.video_lookup.VideoIndex` finds) and returns its path; any failure raises
:class:`VideoDownloadError` with yt-dlp's reason in words (``HTTP Error 404: Not Found``, ``Video
unavailable``, ...), for the indexer to record as the clip's error.

Default format: video only, H.264 first, at most 720p (HD-VILA's resolution), because stage 2
trains on frames without sound and merging separate video and audio streams needs an ``ffmpeg``
binary that the pipeline does not otherwise require; H.264 is also the cheapest to decode. Other
codecs (VP9, AV1) are taken when no H.264 stream exists: PyAV's FFmpeg decodes them.

Guards, as for image downloads (:mod:`pose_data.http.safe_http`): only http(s) URLs, only public addresses
(the metadata's URL and every media URL yt-dlp extracted are checked first, and every connection
yt-dlp opens, redirects, fragments and segments included, goes through the same checked
``create_connection``: :func:`checked_yt_dlp_connections`), no environment proxy, live streams
refused, and a maximum duration and size checked from the extracted metadata and enforced while
downloading by counting the bytes that arrive (yt-dlp's own ``max_filesize`` trusts Content-Length).

yt-dlp writes to ``<name>.part`` and renames when complete, so a killed run never leaves a partial
file under the final name; an existing complete file is reused, not fetched again. It does not
check for updates or use its cache folder here. Two workers must not download the same video_id
into the same folder at the same time (group clips by video before downloading).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import urllib.parse
from pathlib import Path

from pose_data.http.safe_http import checked_create_connection, resolve_checked

DEFAULT_FORMAT = "bv*[vcodec^=avc1][height<=?720]/bv*[height<=?720]/b[height<=?720]/bv*/b"
#: HD-VILA videos are YouTube videos of a few minutes; 2 h and 2 GiB (720p H.264 is ~1 GB/h) bound one download.
DEFAULT_MAX_DURATION_S = 2 * 3600.0
DEFAULT_MAX_BYTES = 2 * 2**30

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
        self.too_large: str | None = None  # yt-dlp's note when max_filesize stopped a download

    def debug(self, msg: str) -> None:
        if "max-filesize" in str(msg):
            self.too_large = _clean(msg).removeprefix("[download]").strip()

    info = debug

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
    allow_private_addresses: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_duration: float = DEFAULT_MAX_DURATION_S,
) -> Path:
    """Download ``url`` to ``out_dir/<video_id>.<ext>`` and return that path.

    ``timeout`` is yt-dlp's socket timeout (seconds per network operation, not for the whole file);
    ``retries`` applies to HTTP errors that may pass (5xx, broken connections) and to fragments.
    Guards (module doc): http(s) only, public addresses only (the page URL and every media URL yt-dlp
    resolved, unless ``allow_private_addresses``), live streams refused, at most ``max_duration`` seconds
    and ``max_bytes`` bytes.
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
    _check_url(url, allow_private_addresses)
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
        "max_filesize": max_bytes,  # yt-dlp stops a download whose size turns out larger
        "proxy": "",  # no environment proxy deciding where requests go
    }
    written = {"bytes": 0}

    def size_guard(progress: dict) -> None:  # max_filesize trusts Content-Length: this counts what arrives
        written["bytes"] = max(written["bytes"], progress.get("downloaded_bytes") or 0)
        if written["bytes"] > max_bytes:
            raise VideoDownloadError(f"larger than max_video_bytes {max_bytes:,} ({written['bytes']:,} bytes received)")

    options["progress_hooks"] = [size_guard]
    try:
        with yt_dlp.YoutubeDL(options) as ydl, checked_yt_dlp_connections(allow_private_addresses):
            # resolve first: a page with several videos must fail before any of them is fetched
            info = ydl.extract_info(url, download=False, process=False)
            if info is not None and info.get("_type") in ("playlist", "multi_video"):
                raise VideoDownloadError(f"{url} is a playlist or a page of several videos, not one video")
            if info is not None:
                info = ydl.process_ie_result(info, download=False)
                _check_media(info, allow_private_addresses, max_bytes, max_duration)
                ydl.process_info(info)
                if log.too_large:
                    raise VideoDownloadError(f"larger than max_video_bytes {max_bytes:,} ({log.too_large})")
    except yt_dlp.utils.DownloadError as err:
        if isinstance(getattr(err, "exc_info", (None, None))[1], VideoDownloadError):
            raise err.exc_info[1] from None
        raise VideoDownloadError(log.errors[-1] if log.errors else _clean(str(err))) from err
    except VideoDownloadError:
        _remove_partial(out_dir, video_id)
        raise
    except Exception as err:  # yt-dlp lets some errors of odd sites through unwrapped
        raise VideoDownloadError(f"yt-dlp failed: {type(err).__name__}: {err}") from err
    if info is None:
        raise VideoDownloadError(log.errors[-1] if log.errors else f"yt-dlp returned nothing for {url}")
    return _downloaded_path(info, out_dir, video_id)


def _check_url(url: str, allow_private: bool) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except (ValueError, UnicodeError) as err:  # a bad port or bracket in the metadata
        raise VideoDownloadError(f"malformed URL ({err})") from None
    if scheme not in ("http", "https") or not host:
        raise VideoDownloadError(f"only http and https URLs are fetched, not {scheme or 'this'}:")
    try:
        resolve_checked(host, port or (443 if scheme == "https" else 80), allow_private=allow_private)
    except (OSError, UnicodeError) as err:  # BlockedAddress, a name that does not resolve, a bad IDNA name
        raise VideoDownloadError(str(err) or "cannot resolve host") from None


@contextlib.contextmanager
def checked_yt_dlp_connections(allow_private: bool):
    """Every connection yt-dlp opens (extraction, redirects, media, fragments) goes through
    :func:`pose_data.http.safe_http.checked_create_connection` while the block runs: its network modules, and urllib3
    under its "Requests" handler, look ``create_connection`` up as a module global, which is replaced here and put
    back afterwards. It is process-wide for that time: run downloads in their own worker processes (the
    indexer's Ray tasks do)."""
    import sys

    checked = functools.partial(checked_create_connection, allow_private=allow_private)
    try:  # yt-dlp's preferred "Requests" handler connects through urllib3's create_connection
        import urllib3.util.connection  # noqa: F401 - makes sure it is in sys.modules
    except ImportError:
        pass
    patched = [(m, m.create_connection) for name, m in list(sys.modules.items())
               if (name.startswith("yt_dlp.networking") or name == "urllib3.util.connection")
               and callable(getattr(m, "create_connection", None))]  # fmt: skip
    if not patched:
        raise VideoDownloadError("cannot guard yt-dlp's connections: this yt-dlp has no networking.create_connection")
    try:
        for module, _ in patched:
            module.create_connection = checked
        yield
    finally:
        for module, original in patched:
            module.create_connection = original


def _remove_partial(out_dir: Path, video_id: str) -> None:
    for path in out_dir.glob(f"{_glob_escape(video_id)}.*"):
        if path.name.endswith((".part", ".ytdl")) or ".part-" in path.name:
            path.unlink(missing_ok=True)


def _check_media(info: dict, allow_private: bool, max_bytes: int, max_duration: float) -> None:
    """Before any byte of the video: not live, not too long or too large, and every media URL public."""
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
        raise VideoDownloadError(f"a live stream ({info.get('live_status') or 'is_live'}), not a video file")
    duration = info.get("duration")
    if duration is not None and duration > max_duration:
        raise VideoDownloadError(f"video lasts {duration:.0f} s > max_video_duration {max_duration:g} s")
    formats = info.get("requested_formats") or [info]
    size = sum((f.get("filesize") or f.get("filesize_approx") or 0) for f in formats)
    if size > max_bytes:
        raise VideoDownloadError(f"video of about {size:,} bytes > max_video_bytes {max_bytes:,}")
    for f in formats:
        if f.get("url"):
            _check_url(f["url"], allow_private)


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
