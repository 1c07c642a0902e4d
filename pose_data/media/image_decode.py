"""Decode downloaded image bytes into one canonical array, or say in words why not.

Every image the pipeline keeps goes through :func:`decode_image`, which returns an (H, W, 3) uint8
RGB array whatever the file held, so the pose backends and renderers see a single layout:

- the pixel count is read from the header and checked against ``max_pixels`` *before* any pixel
  is decoded (a 100 KB PNG can declare 30000x30000 = 900 MB of pixels);
- EXIF orientation is applied, so the array is the image as a viewer shows it;
- alpha (RGBA, LA, PA, palette or colour-key transparency) is composited on white, as img2dataset
  does, so transparent regions become white rather than whatever colour they hide (``background="black"``
  composites on black instead: skeleton frames are drawn on black);
- CMYK, YCbCr, LAB, HSV, palette, 1-bit and greyscale become RGB; 16-bit greyscale is scaled
  to 8 bits with rounding (value * 255 / 65535), not clipped; 48-bit RGB (which PIL reports as
  mode "RGB") is reduced by PIL to the high byte of each channel, and :attr:`ImageHeader.bits` says
  16 so the download path converts it here instead of letting cv2 clip it to white;
- only :data:`ALLOWED_FORMATS` are opened; anything else (HTML, an empty body, random bytes, EPS, a
  truncated or corrupt stream) raises :class:`ImageDecodeError` whose ``reason`` becomes the row's
  ``error``; a reason says what the body looks like (an HTML page, text, ...) and never quotes it.

:func:`image_size` answers (width, height) from the header only, for size checks before decoding.

PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is a process-wide switch; when something else sets it,
PIL pads truncated images with grey instead of failing and they are no longer reported here.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

#: PIL's default ``Image.MAX_IMAGE_PIXELS`` (1024**3 // 4 // 3), above which PIL warns of a
#: decompression bomb (and refuses outright above twice that). About 9459x9459, or 259 MB as RGB.
PIL_DEFAULT_MAX_PIXELS = 89_478_485

#: EXIF tag 0x0112 and what each value asks a viewer to do to the stored pixels.
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

#: The only image formats opened (PIL plugin names). A web-image dataset needs no more, and every other PIL
#: plugin stays away from downloaded bytes (EPS would hand them to Ghostscript, where it is installed).
#: Camera MPO files open through the JPEG plugin.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

#: What a refused body looks like, by its first bytes (named in the reason; the bytes themselves never are).
_CONTENT_HINTS = (
    ((b"<!doctype html", b"<html", b"<head", b"<body"), "an HTML page"),
    ((b"<?xml", b"<svg"), "XML or SVG"),
    ((b"%!ps", b"\xc5\xd0\xd3\xc6"), "PostScript / EPS"),
    ((b"%pdf",), "a PDF document"),
    ((b"{", b"["), "JSON or other text"),
)

#: What transparent pixels are composited on, by name.
BACKGROUNDS = {"white": (255, 255, 255, 255), "black": (0, 0, 0, 255)}

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageDecodeError(Exception):
    """The bytes are not a usable image; ``reason`` says why in words (stored as the row's error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as displayed, read from the header without decoding pixels.

    EXIF orientations 5-8 (quarter turns) swap the stored width and height. The orientation is
    seen when the EXIF block precedes the pixel data, which is always the case for JPEG; a PNG
    whose eXIf chunk follows its pixels reports its stored size. Raises :class:`ImageDecodeError`
    when the bytes are not an image.
    """
    im = _open(data)
    width, height = im.size
    if _orientation(im, header_only=True) in (5, 6, 7, 8):
        width, height = height, width
    return width, height


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded."""

    width: int  # as stored
    height: int
    mode: str  # PIL mode: RGB, L, RGBA, P, CMYK, I;16, ...
    format: str | None  # JPEG, PNG, ...
    orientation: int  # EXIF orientation 1-8 (1 = as stored)
    bits: int = 8  # bits per channel as stored (16 for 48-bit RGB, which PIL still calls "RGB")

    @property
    def needs_conversion(self) -> bool:
        """True when cv2 (img2dataset's decoder) would mangle this image.

        cv2.imdecode(IMREAD_UNCHANGED) keeps 16 bits per channel (which img2dataset then clips to 255:
        a white image), keeps grey images single-channel and ignores EXIF orientation; those images are
        converted by :func:`decode_image` first.
        """
        return self.mode != "RGB" or self.bits != 8 or self.orientation != 1 or self.format not in _CV2_SAFE_FORMATS


_CV2_SAFE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


def read_header(data: bytes) -> ImageHeader:
    """Parse the header only (cheap); raises :class:`ImageDecodeError` when ``data`` is not an image."""
    im = _open(data)
    return ImageHeader(
        width=im.size[0],
        height=im.size[1],
        mode=im.mode,
        format=im.format,
        orientation=_orientation(im, header_only=True),
        bits=_stored_bits(im),
    )


def _stored_bits(im: Image.Image) -> int:
    """16 when the pixel data holds 16-bit samples (raw modes such as ``RGB;16B``, ``I;16``), else 8."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return 16
    for tile in getattr(im, "tile", None) or []:
        raw = tile[3] if len(tile) > 3 else None
        raw = raw[0] if isinstance(raw, tuple) and raw else raw
        if isinstance(raw, str) and ";16" in raw:
            return 16
    return 8


def decode_image(data: bytes, *, max_pixels: int = PIL_DEFAULT_MAX_PIXELS, background: str = "white") -> np.ndarray:
    """Decode ``data`` to a writable (H, W, 3) uint8 RGB array, EXIF orientation applied, alpha on ``background``
    (one of :data:`BACKGROUNDS`: white for photos, black for skeleton frames).

    Images whose header declares more than ``max_pixels`` pixels are refused before decoding.
    Animated images (GIF, APNG, WebP) give their first frame. Raises :class:`ImageDecodeError` with the reason for anything that is not a complete image.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    im = _open(data)
    width, height = im.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels > {max_pixels:,}"
        )
    _load(im)
    orientation = _orientation(im, header_only=False)
    arr = _to_rgb_array(im, BACKGROUNDS[background])
    if orientation in _ORIENTATION_TRANSPOSE:
        arr = _apply_orientation(arr, orientation)
    return np.require(arr, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])  # writable: renderers draw on it


# --- opening ----------------------------------------------------------------------------------


def _open(data: bytes) -> ImageFile.ImageFile:
    """Identify ``data`` and parse its header (no pixels yet); our own pixel limit is checked later."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        # PIL refuses to even open images above 2 * Image.MAX_IMAGE_PIXELS; open it through the
        # format's registered opener so the caller's max_pixels (and a reason with the size) apply.
        return _open_past_pil_limit(data)
    except UnidentifiedImageError:
        raise ImageDecodeError(_not_an_image(data)) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise ImageDecodeError(_describe_load_error(err)) from None


def _open_past_pil_limit(data: bytes) -> ImageFile.ImageFile:
    """Open ``data`` with the first registered PIL format that accepts it, skipping PIL's bomb check."""
    Image.init()
    prefix = data[:16]
    for fmt in ALLOWED_FORMATS:
        if fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        accepted = accept(prefix) if accept else True
        if isinstance(accepted, str) or not accepted:
            continue
        try:
            return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise ImageDecodeError(_not_an_image(data))


def _not_an_image(data: bytes) -> str:
    """Why ``data`` is refused, naming what it looks like but quoting none of it (it is a stranger's body)."""
    head = data[:64].lstrip().lower()
    what = next((name for prefixes, name in _CONTENT_HINTS if head.startswith(prefixes)), None)
    if what is None:
        what = "text" if head and all(32 <= c < 127 or c in b"\r\n\t" for c in head) else f"{len(data):,} bytes of unknown content"
    return f"not an image in an allowed format ({', '.join(ALLOWED_FORMATS)}): {what}"


def _load(im: ImageFile.ImageFile) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"decompression bomb: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
        raise ImageDecodeError(_describe_load_error(err)) from None


def _describe_load_error(err: Exception) -> str:
    message = str(err) or type(err).__name__
    if "truncated" in message.lower():
        return f"truncated image ({message})"
    return f"corrupt image data ({type(err).__name__}: {message})"


def _orientation(im: Image.Image, *, header_only: bool) -> int:
    """EXIF orientation 1-8 (1 = as stored); unreadable or out-of-range EXIF counts as 1.

    ``header_only`` avoids PNG's ``getexif()``, which decodes the whole image to look for an eXIf
    chunk after the pixels.
    """
    if header_only and im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose an otherwise good image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn the stored (H, W, 3) pixels into the displayed image for EXIF ``orientation`` 2-8."""
    return np.asarray(Image.fromarray(arr).transpose(_ORIENTATION_TRANSPOSE[orientation]))


# --- mode conversion --------------------------------------------------------------------------


def _to_rgb_array(im: Image.Image, background: tuple[int, int, int, int] = BACKGROUNDS["white"]) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any PIL mode; transparency composited on ``background`` (RGBA, opaque)."""
    mode = im.mode
    has_transparency = "transparency" in im.info and mode in ("L", "RGB", "P")
    if mode in _ALPHA_MODES or has_transparency:
        return _composite_on(im, background)
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scale_16_to_8(np.asarray(im)))
    if mode == "I":
        return _gray_to_rgb(_scale_int32_to_8(np.asarray(im)))
    if mode == "F":
        return _gray_to_rgb(_scale_float_to_8(np.asarray(im)))
    try:  # RGB, 1, L, P, CMYK (naive, no ICC profile), YCbCr, LAB, HSV, RGBX
        return np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as err:
        raise ImageDecodeError(f"unsupported image mode {mode!r} ({err})") from None


def _composite_on(im: Image.Image, background: tuple[int, int, int, int]) -> np.ndarray:
    """(H, W, 3) uint8 of rgb * a + background * (1 - a), rounded to nearest.

    PIL's alpha_composite gives the correctly rounded result and is ~10x faster than numpy here.
    """
    rgba = im.convert("RGBA")
    under = Image.new("RGBA", rgba.size, background)
    return np.asarray(Image.alpha_composite(under, rgba).convert("RGB"))


def _scale_16_to_8(gray: np.ndarray) -> np.ndarray:
    """uint16 0..65535 -> uint8 0..255 by round(v * 255 / 65535)."""
    wide = gray.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _scale_int32_to_8(gray: np.ndarray) -> np.ndarray:
    """PIL mode "I" (int32), which PIL uses for 16-bit sources: read as 0..65535, refuse other ranges."""
    lo, hi = (int(gray.min()), int(gray.max())) if gray.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ImageDecodeError(f"32-bit integer image with values {lo}..{hi}, outside the 16-bit range 0..65535")
    return _scale_16_to_8(gray.astype(np.uint16))


def _scale_float_to_8(gray: np.ndarray) -> np.ndarray:
    """PIL mode "F" (float32) in 0..1 -> uint8; other ranges have no agreed meaning and are refused."""
    if gray.size and not np.isfinite(gray).all():
        raise ImageDecodeError("floating-point image with NaN or infinite values")
    lo, hi = (float(gray.min()), float(gray.max())) if gray.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise ImageDecodeError(f"floating-point image with values {lo:g}..{hi:g}, outside 0..1")
    return np.rint(gray * 255.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) by repeating the grey channel."""
    return np.repeat(gray[..., None], 3, axis=-1)
