"""Download one shard of URLs with img2dataset's own downloader and resizer, in memory.

img2dataset's building blocks (``Downloader`` for one shard, ``Resizer``) do the HTTP work, retries,
robots headers and resizing; we plug in three small pieces of our own:

- the ``urllib`` opener it fetches through (:mod:`pose_data.http.safe_http`): public addresses only, http(s)
  only, a body limit and a total deadline per request;
- :class:`ImageNormalizer` wraps the resizer: it reads the image header first and refuses
  decompression bombs *before* decoding, returns a reason in words for non-images, and converts
  what cv2 mishandles (16-bit, CMYK, palette, EXIF-rotated) to plain 8-bit RGB before resizing;
- :class:`_CollectingWriter` stands in for img2dataset's sample writers and keeps the samples in
  memory, so no temporary tar is written and read back.

The result, :class:`DownloadedShard`, holds one entry per input row in input order; image bytes
live in one numpy buffer so Ray passes it between processes without copying.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from pose_data.http.safe_http import build_opener
from pose_data.media.image_decode import ImageDecodeError, decode_image, read_header
from pose_data.pose.filtering import FilterConfig, check_image_size
from pose_data.statuses import DECODE_FAILED, DOWNLOAD_FAILED


@dataclass
class DownloadOptions:
    """What :func:`download_shard` needs; mirrors ``DownloadConfig`` plus the size filter."""

    image_size: int = 512
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_quality: int = 95
    threads: int = 16
    timeout: int = 10
    retries: int = 0
    max_image_area: float = 40_000_000.0
    user_agent_token: str | None = None
    respect_robots_headers: bool = True
    min_image_size: int = 0  # shorter side of the original, else status too_small
    allow_private_addresses: bool = False  # see pose_data.http.safe_http
    max_image_bytes: int = 20 * 2**20
    deadline: float = 60.0


@dataclass
class DownloadedShard:
    """Per input row (in order): status (None = downloaded, goes on to pose), error, sizes, image."""

    shard_id: int
    status: list[str | None]
    error: list[str | None]
    width: np.ndarray  # int32 (n,), stored image size, -1 where no image
    height: np.ndarray
    original_width: np.ndarray
    original_height: np.ndarray
    image_data: np.ndarray  # uint8, every stored JPEG back to back
    image_offsets: np.ndarray  # int64 (n + 1,): image i is image_data[offsets[i]:offsets[i + 1]]
    seconds: float

    def __len__(self) -> int:
        return len(self.status)

    def image_bytes(self, i: int) -> bytes:
        return self.image_data[self.image_offsets[i] : self.image_offsets[i + 1]].tobytes()

    def pending(self) -> np.ndarray:
        """Indices of rows with an image and no final status yet (they go to pose estimation)."""
        return np.array([i for i, s in enumerate(self.status) if s is None], dtype=np.int64)


class ImageNormalizer:
    """Wraps img2dataset's ``Resizer``: header checks first, odd formats made plain RGB, then resize."""

    def __init__(self, resizer, max_pixels: float):
        self.resizer = resizer
        self.max_pixels = max_pixels

    def __call__(self, img_stream, blurring_bbox_list=None):
        img_stream.seek(0)
        data = img_stream.read()
        try:
            header = read_header(data)
        except ImageDecodeError as err:
            return None, None, None, None, None, err.reason
        if header.width * header.height > self.max_pixels:
            return None, None, None, None, None, (
                f"decompression bomb: {header.width}x{header.height} = {header.width * header.height:,} pixels "
                f"> limit {int(self.max_pixels):,}"
            )
        if header.needs_conversion:
            # 16-bit, CMYK, palette, alpha or EXIF-rotated: cv2 would drop or mangle these; hand the
            # resizer a lossless 8-bit RGB PNG instead.
            try:
                rgb = decode_image(data, max_pixels=int(self.max_pixels))
            except ImageDecodeError as err:
                return None, None, None, None, None, err.reason
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
            img_stream = io.BytesIO(buf.getvalue())
        else:
            img_stream = io.BytesIO(data)
        return self.resizer(img_stream, blurring_bbox_list)


class _CollectingWriter:
    """Sample writer with img2dataset's writer interface that keeps samples in memory."""

    def __init__(self, sink: list, *_args) -> None:
        self.sink = sink

    def write(self, img_str, key, caption, meta) -> None:  # noqa: ARG002 - interface
        self.sink.append((img_str, meta))

    def close(self) -> None:
        pass


def download_shard(shard_id: int, urls: list[str | None], options: DownloadOptions) -> DownloadedShard:
    """Download and resize ``urls`` (one shard); every URL gets exactly one entry back, in order."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    start = time.perf_counter()
    # img2dataset fetches with urllib.request.urlopen, i.e. through the process's installed opener: ours for the
    # duration of this shard, then the previous one again (other code in the process keeps its own rules)
    previous_opener = urllib.request._opener
    urllib.request.install_opener(
        build_opener(allow_private_addresses=options.allow_private_addresses, max_bytes=options.max_image_bytes, deadline=options.deadline)
    )
    try:
        return _download(shard_id, urls, options, start)
    finally:
        urllib.request._opener = previous_opener


def _download(shard_id: int, urls: list[str | None], options: DownloadOptions, start: float) -> DownloadedShard:
    from img2dataset.downloader import Downloader
    from img2dataset.resizer import Resizer

    n = len(urls)
    resizer = ImageNormalizer(
        Resizer(
            image_size=options.image_size,
            resize_mode=options.resize_mode,
            resize_only_if_bigger=options.resize_only_if_bigger,
            upscale_interpolation="lanczos",
            downscale_interpolation="area",
            encode_quality=options.encode_quality,
            encode_format="jpg",
            skip_reencode=False,
            disable_all_reencoding=False,
            min_image_size=0,
            max_image_area=float("inf"),  # checked from the header, before decoding
            max_aspect_ratio=float("inf"),
        ),
        max_pixels=options.max_image_area,
    )
    table = pa.table({"url": [u if u is not None else "" for u in urls], "row": pa.array(range(n), pa.int64())})
    samples: list = []
    with tempfile.TemporaryDirectory(prefix="pose-data-dl-") as tmp:
        downloader = Downloader(
            sample_writer_class=lambda *args: _CollectingWriter(samples, *args),
            resizer=resizer,
            thread_count=max(1, min(options.threads, n)),
            save_caption=False,
            extract_exif=False,
            output_folder=tmp,  # img2dataset writes its per-shard _stats.json here
            column_list=["url", "row"],
            timeout=options.timeout,
            number_sample_per_shard=max(n, 10),
            oom_shard_count=5,
            compute_hash=None,
            verify_hash_type=None,
            encode_format="jpg",
            retries=options.retries,
            user_agent_token=options.user_agent_token,
            disallowed_header_directives=(
                ["noai", "noimageai", "noindex", "noimageindex"] if options.respect_robots_headers else None
            ),
        )
        shard_file = Path(tmp) / "shard.arrow"
        with pa.OSFile(str(shard_file), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        downloader.download_shard((shard_id, str(shard_file)))

    size_filter = FilterConfig(min_image_size=options.min_image_size)
    status: list[str | None] = [DOWNLOAD_FAILED] * n
    error: list[str | None] = ["no result from the downloader"] * n
    sizes = np.full((4, n), -1, dtype=np.int32)
    images: list[bytes] = [b""] * n
    for img_str, meta in samples:
        i = int(meta["row"])
        for k, col in enumerate(("width", "height", "original_width", "original_height")):
            if meta.get(col) is not None:
                sizes[k, i] = meta[col]
        if meta["status"] == "success":
            # the original's size decides (img2dataset may have upscaled the stored image)
            too_small = check_image_size(int(sizes[2, i]), int(sizes[3, i]), size_filter)
            if too_small is not None:
                status[i], error[i] = too_small.status, too_small.error
            else:
                status[i], error[i], images[i] = None, None, img_str
        elif meta["status"] == "failed_to_download":
            status[i], error[i] = DOWNLOAD_FAILED, meta.get("error_message") or "download failed"
        else:
            status[i], error[i] = DECODE_FAILED, meta.get("error_message") or "image could not be decoded"
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in images])
    data = np.frombuffer(b"".join(images), dtype=np.uint8) if offsets[-1] else np.zeros(0, np.uint8)
    return DownloadedShard(
        shard_id=shard_id,
        status=status,
        error=error,
        width=sizes[0],
        height=sizes[1],
        original_width=sizes[2],
        original_height=sizes[3],
        image_data=data,
        image_offsets=offsets,
        seconds=time.perf_counter() - start,
    )
