"""Image bytes for every kind of input a LAION download can hand the pipeline, made at test time.

Each function returns the raw bytes a web server would send. They are small (a few KB, the
decompression bomb ~110 KB) and deterministic, built with PIL / numpy / zlib, so tests need no
network and no stored binaries. ``CASES`` maps a case name to its generator; ``SERVED_CASES`` is
the subset an HTTP test serves (everything except the bomb, which is costly to decode).

Pixel layouts are chosen so a test can check the decoded result, not just "it decoded":

- ``pattern_rgb`` is an asymmetric 64x48 image: red top-left quadrant, green top-right, blue
  bottom-left, white bottom-right. Orientation tests check where the red quadrant ends up.
- the 16-bit cases hold a full-range horizontal ramp (0 at the left, 65535 at the right), so a
  correct 8-bit conversion gives 0..255 and a clipping one gives mostly 255.
- the alpha cases are opaque red on the left half and fully transparent (red too) on the right,
  so compositing on white gives white on the right.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: Size of the small synthetic images (width, height).
PATTERN_SIZE = (64, 48)


def pattern_rgb(size: tuple[int, int] = PATTERN_SIZE) -> np.ndarray:
    """(H, W, 3) uint8: red / green on top, blue / white at the bottom (quadrants)."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2 :] = (0, 255, 0)
    arr[h // 2 :, : w // 2] = (0, 0, 255)
    arr[h // 2 :, w // 2 :] = (255, 255, 255)
    return arr


def _save(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def ramp16(size: tuple[int, int] = PATTERN_SIZE) -> np.ndarray:
    """(H, W) uint16 horizontal ramp from 0 (left column) to 65535 (right column)."""
    w, h = size
    row = np.round(np.linspace(0, 65535, w)).astype(np.uint16)
    return np.tile(row, (h, 1))


# --- not images -------------------------------------------------------------------------------


def html_page() -> bytes:
    """An HTML error page, as served by hosts that answer 200 for a missing image."""
    return b"<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body>gone</body></html>\n"


def empty() -> bytes:
    return b""


def random_bytes(n: int = 4096) -> bytes:
    """Noise that starts with no known magic number (seeded)."""
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


# --- broken images -----------------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    """The first half of the real photo's JPEG: a valid header, then the stream stops."""
    data = real_photo_jpeg()
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    """A PNG cut off in the middle of its IDAT chunk."""
    noise = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = _save(Image.fromarray(noise), "PNG")
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    """A complete noise PNG with one byte of its compressed pixel data inverted (bad zlib stream)."""
    noise = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = bytearray(_save(Image.fromarray(noise), "PNG"))
    data[data.find(b"IDAT") + 200] ^= 0xFF
    return bytes(data)


def decompression_bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid all-black 1-bit greyscale PNG of ``width`` x ``height``: ~110 KB for 30000x30000.

    Written chunk by chunk with zlib because PIL would need width*height bytes of memory to build
    it. Decoders that expand it to 8-bit need width*height bytes (900 MB for the default).
    """
    return _bomb_png_cached(width, height)


@functools.lru_cache(maxsize=4)
def _bomb_png_cached(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none" + packed pixels
    comp = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 20) // len(row))
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(comp.compress(row * min(rows_per_block, height - start)))
    parts.append(comp.flush())
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


# --- unusual but valid images ------------------------------------------------------------------


def cmyk_jpeg() -> bytes:
    """The pattern converted to CMYK by PIL and saved as a CMYK JPEG (PIL writes an Adobe marker)."""
    return _save(Image.fromarray(pattern_rgb()).convert("CMYK"), "JPEG", quality=95)


def grayscale_jpeg() -> bytes:
    """Greyscale JPEG: left half 50, right half 200."""
    return _save(Image.fromarray(_gray_halves()), "JPEG", quality=95)


def grayscale_png() -> bytes:
    """Greyscale (L) PNG: left half 50, right half 200."""
    return _save(Image.fromarray(_gray_halves()), "PNG")


def _gray_halves() -> np.ndarray:
    w, h = PATTERN_SIZE
    arr = np.full((h, w), 50, np.uint8)
    arr[:, w // 2 :] = 200
    return arr


def one_bit_png() -> bytes:
    """Mode "1" PNG: black left half, white right half."""
    return _save(Image.fromarray(_gray_halves() > 100), "PNG")


def _alpha_halves() -> np.ndarray:
    """(H, W) uint8 alpha: 255 on the left half, 0 on the right half."""
    w, h = PATTERN_SIZE
    alpha = np.full((h, w), 255, np.uint8)
    alpha[:, w // 2 :] = 0
    return alpha


def rgba_png() -> bytes:
    """RGBA PNG: red everywhere, opaque on the left half, fully transparent on the right."""
    w, h = PATTERN_SIZE
    arr = np.zeros((h, w, 4), np.uint8)
    arr[..., 0] = 255
    arr[..., 3] = _alpha_halves()
    return _save(Image.fromarray(arr), "PNG")


def gray_alpha_png() -> bytes:
    """LA PNG: grey 100, opaque on the left half, transparent on the right."""
    w, h = PATTERN_SIZE
    arr = np.stack([np.full((h, w), 100, np.uint8), _alpha_halves()], axis=-1)
    return _save(Image.fromarray(arr), "PNG")


def palette_png() -> bytes:
    """Palette (P) PNG of the quadrant pattern (4 colours, exact)."""
    return _save(Image.fromarray(pattern_rgb()).quantize(colors=4, method=Image.Quantize.MEDIANCUT), "PNG")


def palette_transparent_png() -> bytes:
    """Palette PNG whose index 0 (red, left half) is opaque and index 1 (right half) transparent."""
    w, h = PATTERN_SIZE
    idx = np.zeros((h, w), np.uint8)
    idx[:, w // 2 :] = 1
    im = Image.fromarray(idx).convert("P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    return _save(im, "PNG", transparency=bytes([255, 0]))


def gray16_png() -> bytes:
    """16-bit greyscale PNG (PIL mode "I;16"): the 0..65535 ramp."""
    return _save(Image.fromarray(ramp16()), "PNG")


def rgb48_png() -> bytes:
    """48-bit RGB PNG (16 bits per channel): R = the ramp, G = 65535 - ramp, B = 32768.

    PIL cannot write 16-bit RGB, so OpenCV encodes it (OpenCV's channel order is BGR).
    """
    import cv2  # local: only this fixture needs it

    r = ramp16()
    bgr = np.stack([np.full_like(r, 32768), 65535 - r, r], axis=-1)
    ok, buf = cv2.imencode(".png", bgr)
    assert ok
    return buf.tobytes()


def int32_tiff() -> bytes:
    """32-bit signed integer greyscale TIFF (PIL mode "I") holding the 0..65535 ramp."""
    return _save(Image.fromarray(ramp16().astype(np.int32)), "TIFF")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """The pattern stored as is, with EXIF Orientation ``orientation`` (6 = rotate 90° clockwise to display).

    Displayed correctly (orientation applied) it is 48 wide and 64 high with red at the top-right.
    """
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(pattern_rgb()), "JPEG", quality=95, exif=exif.tobytes())


def exif_rotated_png(orientation: int = 6) -> bytes:
    """Like :func:`exif_rotated_jpeg` as a PNG (eXIf chunk, written before the pixel data)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(Image.fromarray(pattern_rgb()), "PNG", exif=exif.tobytes())


def tiny_png(size: int = 20) -> bytes:
    """A ``size`` x ``size`` RGB PNG (mid grey)."""
    return _save(Image.new("RGB", (size, size), (128, 128, 128)), "PNG")


def pattern_png() -> bytes:
    """The plain RGB quadrant pattern as PNG (lossless reference)."""
    return _save(Image.fromarray(pattern_rgb()), "PNG")


# --- real photos -------------------------------------------------------------------------------


def real_photo_path() -> Path:
    """A real photo of a person shipped inside an installed package.

    scikit-image's astronaut (512x512 PNG) when scikit-image is installed, else matplotlib's
    ``grace_hopper.jpg`` (512 wide, 600 high), both public domain.
    """
    try:
        import skimage.data

        return Path(skimage.data.__file__).parent / "astronaut.png"
    except ImportError:
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@functools.lru_cache(maxsize=1)
def real_photo_jpeg() -> bytes:
    """The real photo as RGB JPEG bytes (re-encoded when the source is a PNG)."""
    path = real_photo_path()
    data = path.read_bytes()
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return data
    return _save(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG", quality=92)


#: Every case by name. The bomb uses its default 30000x30000 size.
CASES = {
    "html_page": html_page,
    "empty": empty,
    "random_bytes": random_bytes,
    "truncated_jpeg": truncated_jpeg,
    "truncated_png": truncated_png,
    "corrupt_png": corrupt_png,
    "cmyk_jpeg": cmyk_jpeg,
    "grayscale_jpeg": grayscale_jpeg,
    "grayscale_png": grayscale_png,
    "one_bit_png": one_bit_png,
    "rgba_png": rgba_png,
    "gray_alpha_png": gray_alpha_png,
    "palette_png": palette_png,
    "palette_transparent_png": palette_transparent_png,
    "gray16_png": gray16_png,
    "rgb48_png": rgb48_png,
    "int32_tiff": int32_tiff,
    "exif_rotated_jpeg": exif_rotated_jpeg,
    "exif_rotated_png": exif_rotated_png,
    "tiny_png": tiny_png,
    "pattern_png": pattern_png,
    "real_photo_jpeg": real_photo_jpeg,
    "decompression_bomb_png": decompression_bomb_png,
}

#: The cases cheap enough to push through a real download in a test.
SERVED_CASES = {k: v for k, v in CASES.items() if k != "decompression_bomb_png"}


#: URL names a download test uses besides the bodies: one the server does not know (404) and one
#: it answers slowly (a timeout); the server is ``conftest.LocalSite``.
MISSING_PATH = "missing"
SLOW_PATH = "slow"
