"""download_shard: img2dataset's real downloader against 127.0.0.1, one entry per URL, in order."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import bad_images
from conftest import Route
from pose_data.laion.download import DownloadOptions, download_shard


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_statuses_sizes_and_images_in_input_order(local_site):
    urls = [
        local_site.add("dl/photo.jpg", Route(bad_images.real_photo_jpeg())),
        local_site.url("dl/missing.jpg"),
        local_site.add("dl/slow.jpg", Route(bad_images.real_photo_jpeg(), delay=3.0)),
        local_site.add("dl/page.jpg", Route(bad_images.html_page(), "text/html")),
        local_site.add("dl/gray16.png", Route(bad_images.gray16_png(), "image/png")),
        local_site.add("dl/tiny.png", Route(bad_images.tiny_png(20), "image/png")),
        None,
        local_site.add("dl/rotated.jpg", Route(bad_images.exif_rotated_jpeg(6))),
    ]
    import urllib.request

    before = urllib.request._opener
    shard = download_shard(7, urls, DownloadOptions(image_size=64, timeout=1, threads=4, min_image_size=32, allow_private_addresses=True))
    assert urllib.request._opener is before  # the guarded opener is the process's only while the shard downloads
    assert shard.shard_id == 7 and len(shard) == len(urls)
    assert shard.status[0] is None and shard.error[0] is None
    assert shard.status[1] == "download_failed" and "404" in shard.error[1]
    assert shard.status[2] == "download_failed" and "timed out" in shard.error[2]
    assert shard.status[3] == "decode_failed" and "not an image" in shard.error[3]
    assert shard.status[4] is None
    assert shard.status[5] == "too_small" and "20x20" in shard.error[5]
    assert shard.status[6] == "download_failed"
    assert shard.status[7] is None
    assert shard.pending().tolist() == [0, 4, 7]

    photo = _decode(shard.image_bytes(0))
    assert photo.mode == "RGB" and min(photo.size) == 64  # keep_ratio: shorter side to image_size
    assert (int(shard.width[0]), int(shard.height[0])) == photo.size
    assert shard.image_bytes(1) == b""

    # 16-bit grey: scaled to 8 bit (img2dataset alone clips it to white), stored as RGB
    ramp = np.asarray(_decode(shard.image_bytes(4)))
    assert ramp.ndim == 3 and ramp.shape[2] == 3
    assert ramp.mean() < 200 and ramp.min() < 30

    # EXIF orientation 6 honoured: the stored image is upright (taller than wide for this fixture)
    raw = Image.open(io.BytesIO(bad_images.exif_rotated_jpeg(6)))
    rotated = _decode(shard.image_bytes(7))
    assert (rotated.width > rotated.height) == (raw.height > raw.width)


def test_decompression_bomb_is_refused_from_its_header(local_site):
    url = local_site.add("dl/bomb.png", Route(bad_images.decompression_bomb_png(), "image/png"))
    shard = download_shard(0, [url], DownloadOptions(max_image_area=50_000_000, allow_private_addresses=True))
    assert shard.status == ["decode_failed"]
    assert shard.error[0].startswith("decompression bomb: 30000x30000 = 900,000,000 pixels")


def _sixteen_bit(kind: str) -> bytes:
    """A mid-grey (32768 of 65535) image in a 16-bit layout, written by OpenCV."""
    import cv2

    shapes = {"rgb48.png": (48, 48, 3), "rgba64.png": (48, 48, 4), "gray16.png": (48, 48), "rgb48.tiff": (48, 48, 3)}
    image = np.full(shapes[kind], 32768, np.uint16)
    if image.ndim == 3 and image.shape[2] == 4:
        image[..., 3] = 65535  # opaque
    ok, buffer = cv2.imencode("." + kind.split(".")[1], image)
    assert ok
    return buffer.tobytes()


def test_every_16_bit_layout_comes_out_as_the_right_8_bit_grey(local_site):
    """48-bit RGB PNGs used to come out white: PIL calls them "RGB", so they went to cv2 and were clipped."""
    kinds = ("rgb48.png", "rgba64.png", "gray16.png", "rgb48.tiff")
    urls = [local_site.add(f"dl16/{kind}", Route(_sixteen_bit(kind), "image/png")) for kind in kinds]
    shard = download_shard(0, urls, DownloadOptions(image_size=48, timeout=2, threads=2, min_image_size=16, allow_private_addresses=True))
    for i, kind in enumerate(kinds):
        assert shard.status[i] is None, (kind, shard.error[i])
        pixels = np.asarray(_decode(shard.image_bytes(i)).convert("RGB")).astype(int)
        assert np.abs(pixels - 128).max() <= 1, (kind, pixels.min(), pixels.max())  # 32768 * 255 / 65535 = 127.5
