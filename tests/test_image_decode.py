"""decode_image / image_size over every bad-input fixture, and what img2dataset hands them."""

from __future__ import annotations

import io
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

import bad_images as b
from conftest import Route
from pose_data.media.image_decode import PIL_DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image, image_size

PATTERN = b.pattern_rgb()  # (48, 64, 3): red TL, green TR, blue BL, white BR
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrant_colours(arr: np.ndarray) -> list[list[int]]:
    """Colours at the centres of the TL, TR, BL, BR quadrants of an (H, W, 3) array."""
    h, w = arr.shape[:2]
    centres = ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4))
    return [arr[y, x].tolist() for y, x in centres]


def left_right(arr: np.ndarray) -> tuple[list[int], list[int]]:
    h, w = arr.shape[:2]
    return arr[h // 2, w // 4].tolist(), arr[h // 2, 3 * w // 4].tolist()


def expected_16_to_8(ramp: np.ndarray) -> np.ndarray:
    return np.rint(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)


# --- inputs that are not images ----------------------------------------------------------------


@pytest.mark.parametrize(
    "case, reason",
    [
        ("html_page", "not an image in an allowed format (JPEG, PNG, WEBP, GIF, BMP, TIFF, AVIF): an HTML page"),
        ("empty", "empty file"),
        ("random_bytes", f"not an image in an allowed format (JPEG, PNG, WEBP, GIF, BMP, TIFF, AVIF): {len(b.random_bytes()):,} bytes of unknown content"),
    ],
)
def test_not_an_image(case, reason):
    data = b.CASES[case]()
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data)
    assert exc.value.reason == reason == str(exc.value)
    assert not data or repr(data[:8])[2:-1] not in reason  # the body is never quoted
    with pytest.raises(ImageDecodeError, match="not an image|empty file"):
        image_size(data)


@pytest.mark.parametrize("fmt", ["EPS", "PPM", "TGA", "PCX", "ICO"])
def test_formats_outside_the_allowed_list_are_never_opened(fmt):
    """EPS would reach Ghostscript; the others are plugins a web-image dataset does not need."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format=fmt)
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).format == fmt  # PIL itself would open it
    with pytest.raises(ImageDecodeError, match=r"not an image in an allowed format \(JPEG, PNG"):
        decode_image(data)
    with pytest.raises(ImageDecodeError):
        image_size(data)


@pytest.mark.parametrize("case, size", [("truncated_jpeg", (512, 512)), ("truncated_png", (64, 48))])
def test_truncated_images_fail_to_decode_but_have_a_size(case, size):
    data = b.CASES[case]()
    assert image_size(data) == size  # the header is intact
    with pytest.raises(ImageDecodeError, match=r"^truncated image \(image file is truncated"):
        decode_image(data)


def test_corrupt_pixel_data():
    with pytest.raises(ImageDecodeError, match=r"^corrupt image data \(OSError: broken data stream"):
        decode_image(b.corrupt_png())


def test_non_bytes_and_bad_max_pixels_are_caller_errors():
    with pytest.raises(TypeError, match="image data must be bytes, got str"):
        decode_image("<html>")  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_pixels must be a positive int"):
            decode_image(b.pattern_png(), max_pixels=bad)


# --- decompression bombs -----------------------------------------------------------------------


def test_decompression_bomb_refused_from_the_header():
    data = b.decompression_bomb_png()  # 30000 x 30000, ~110 KB
    assert len(data) < 200_000
    start = time.perf_counter()
    assert image_size(data) == (30000, 30000)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data)
    assert exc.value.reason == "decompression bomb: 30000x30000 = 900,000,000 pixels > 89,478,485"
    assert time.perf_counter() - start < 0.5  # no pixel was decoded
    assert PIL_DEFAULT_MAX_PIXELS == 89_478_485


def test_max_pixels_boundary():
    data = b.pattern_png()  # 64 x 48 = 3072 pixels
    assert decode_image(data, max_pixels=3072).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match=r"^decompression bomb: 64x48 = 3,072 pixels > 3,071$"):
        decode_image(data, max_pixels=3071)


def test_moderate_bomb_decodes_when_allowed():
    data = b.decompression_bomb_png(4000, 3000)  # 12 M pixels
    with pytest.raises(ImageDecodeError, match="4000x3000 = 12,000,000 pixels > 10,000,000"):
        decode_image(data, max_pixels=10_000_000)
    arr = decode_image(data, max_pixels=12_000_000)
    assert arr.shape == (3000, 4000, 3) and arr.dtype == np.uint8 and arr.max() == 0


def test_our_limit_not_pils_decides(monkeypatch):
    # PIL refuses to open images above 2 * Image.MAX_IMAGE_PIXELS; decode_image's max_pixels governs.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would refuse anything above 2000 pixels
    np.testing.assert_array_equal(decode_image(b.pattern_png()), PATTERN)
    assert image_size(b.pattern_png()) == (64, 48)
    with pytest.raises(ImageDecodeError, match="64x48 = 3,072 pixels > 2,000"):
        decode_image(b.pattern_png(), max_pixels=2000)


# --- every mode to (H, W, 3) uint8 RGB ---------------------------------------------------------


def test_plain_rgb_is_lossless_and_writable():
    arr = decode_image(b.pattern_png())
    assert arr.shape == (48, 64, 3) and arr.dtype == np.uint8 and arr.flags.writeable and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, PATTERN)


def test_real_photo_matches_pil():
    data = b.real_photo_jpeg()
    arr = decode_image(data)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert arr.shape == reference.shape and arr.shape[0] >= 512 and arr.shape[1] == 512  # astronaut or Grace Hopper
    np.testing.assert_array_equal(arr, reference)
    assert image_size(data) == (arr.shape[1], arr.shape[0])
    assert arr.flags.writeable


def test_cmyk_jpeg_becomes_rgb():
    arr = decode_image(b.cmyk_jpeg())
    assert arr.shape == (48, 64, 3)
    np.testing.assert_allclose(quadrant_colours(arr), [RED, GREEN, BLUE, WHITE], atol=3)


@pytest.mark.parametrize(
    "case, left, right", [("grayscale_jpeg", 50, 200), ("grayscale_png", 50, 200), ("one_bit_png", 0, 255)]
)
def test_greyscale_becomes_three_equal_channels(case, left, right):
    arr = decode_image(b.CASES[case]())
    assert arr.shape == (48, 64, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert left_right(arr) == ([left] * 3, [right] * 3)


@pytest.mark.parametrize(
    "case, left, right",
    [
        ("rgba_png", list(RED), list(WHITE)),
        ("gray_alpha_png", [100] * 3, list(WHITE)),
        ("palette_transparent_png", list(RED), list(WHITE)),
    ],
)
def test_transparency_is_composited_on_white(case, left, right):
    arr = decode_image(b.CASES[case]())
    assert arr.shape == (48, 64, 3)
    assert left_right(arr) == (left, right)


def test_half_transparent_pixel_blends_with_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128  # red at alpha 128/255 over white: G = B = 255 * 127 / 255 = 127
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    assert decode_image(buf.getvalue())[0, 0].tolist() == [255, 127, 127]


def test_palette_png_is_exact():
    np.testing.assert_array_equal(decode_image(b.palette_png()), PATTERN)


@pytest.mark.parametrize("case", ["gray16_png", "int32_tiff"])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(case):
    arr = decode_image(b.CASES[case]())
    expected_row = expected_16_to_8(b.ramp16()[0])  # 0, 4, 8, ..., 251, 255
    assert arr.shape == (48, 64, 3)
    np.testing.assert_array_equal(arr[10, :, 0], expected_row)
    assert arr[10, 0].tolist() == [0, 0, 0] and arr[10, -1].tolist() == [255, 255, 255]
    assert arr[10, 32].tolist() == [int(expected_row[32])] * 3 == [130] * 3  # mid-grey, not 255
    assert np.all(np.diff(arr[10, :, 0].astype(int)) > 0)  # strictly increasing ramp


def test_rgb48_keeps_the_high_byte():
    arr = decode_image(b.rgb48_png())
    ramp = b.ramp16()
    np.testing.assert_array_equal(arr[..., 0], (ramp >> 8).astype(np.uint8))
    np.testing.assert_array_equal(arr[..., 1], ((65535 - ramp) >> 8).astype(np.uint8))
    assert (arr[..., 2] == 128).all()


def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "TIFF")
    return buf.getvalue()


def test_int32_outside_sixteen_bits_is_refused():
    values = np.array([[-5, 0], [70000, 3]], np.int32)
    with pytest.raises(ImageDecodeError, match=r"32-bit integer image with values -5\.\.70000, outside the 16-bit"):
        decode_image(_tiff(values))


def test_float_image_in_unit_range():
    values = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    arr = decode_image(_tiff(values))
    assert arr[..., 0].tolist() == [[0, 128], [255, 64]]
    with pytest.raises(ImageDecodeError, match=r"floating-point image with values 0\.\.2, outside 0\.\.1"):
        decode_image(_tiff(values * 2))


def test_tiny_image_decodes_as_is():
    arr = decode_image(b.tiny_png(20))
    assert arr.shape == (20, 20, 3) and (arr == 128).all()
    assert image_size(b.tiny_png(20)) == (20, 20)


# --- EXIF orientation --------------------------------------------------------------------------

# What a viewer shows for each EXIF orientation of the stored pattern, written with numpy.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),  # 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_exact(orientation):
    data = b.exif_rotated_png(orientation)
    expected = DISPLAYED[orientation](PATTERN)
    np.testing.assert_array_equal(decode_image(data), expected)
    assert image_size(data) == (expected.shape[1], expected.shape[0])


def test_exif_orientation_jpeg():
    data = b.exif_rotated_jpeg(6)
    arr = decode_image(data)
    assert arr.shape == (64, 48, 3) and image_size(data) == (48, 64)
    # stored red top-left turns 90 degrees clockwise: red top-right, blue top-left, white bottom-left
    np.testing.assert_allclose(quadrant_colours(arr), [BLUE, RED, WHITE, GREEN], atol=3)


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_invalid_orientation_is_ignored(orientation):
    data = b.exif_rotated_png(orientation)
    np.testing.assert_array_equal(decode_image(data), PATTERN)
    assert image_size(data) == (64, 48)


# --- the whole fixture set ---------------------------------------------------------------------

FAILING = {
    "html_page", "empty", "random_bytes", "truncated_jpeg", "truncated_png", "corrupt_png", "decompression_bomb_png"
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(b.CASES))
def test_every_fixture_decodes_to_rgb_uint8_or_fails_with_a_reason(case):
    data = b.CASES[case]()
    if case in FAILING:
        with pytest.raises(ImageDecodeError) as exc:
            decode_image(data)
        assert len(exc.value.reason) > 5
        return
    arr = decode_image(data)
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
    assert image_size(data) == (arr.shape[1], arr.shape[0])


# --- what img2dataset writes for each fixture --------------------------------------------------

DOWNLOAD_FAILED = {b.MISSING_PATH: "HTTP Error 404: Not Found", b.SLOW_PATH: "timed out"}
RESIZE_FAILED = {"html_page", "random_bytes", "truncated_jpeg", "truncated_png", "corrupt_png", "empty"}


@pytest.mark.slow
def test_img2dataset_outputs_decode(tmp_path, monkeypatch, local_site):
    """Run img2dataset 1.47 (resize_mode "no") on every served fixture; decode what it stored."""
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    import img2dataset
    import pandas as pd

    bodies = {name: gen() for name, gen in b.SERVED_CASES.items()}
    names = [*bodies, b.MISSING_PATH, b.SLOW_PATH]
    for name, body in bodies.items():
        local_site.add(f"i2d/{name}", Route(body))  # every body as image/jpeg, HTML included
    local_site.add(f"i2d/{b.SLOW_PATH}", Route(b.pattern_png(), delay=3.0))  # b.MISSING_PATH: 404
    pd.DataFrame({"url": [local_site.url(f"i2d/{n}") for n in names], "caption": names}).to_parquet(tmp_path / "urls.parquet")
    img2dataset.download(
        url_list=str(tmp_path / "urls.parquet"), input_format="parquet", url_col="url", caption_col="caption",
        output_folder=str(tmp_path / "out"), output_format="webdataset", image_size=512, resize_mode="no",
        encode_format="jpg", processes_count=1, thread_count=4, timeout=1, retries=0,
        distributor="multiprocessing", number_sample_per_shard=100,
    )  # fmt: skip
    rows = pd.read_parquet(tmp_path / "out" / "00000.parquet").set_index("caption")
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        stored = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    assert sorted(rows.index) == sorted(names)
    for name in names:
        row = rows.loc[name]
        if name in DOWNLOAD_FAILED:
            assert (row.status, row.error_message) == ("failed_to_download", DOWNLOAD_FAILED[name])
        elif name in RESIZE_FAILED:
            assert row.status == "failed_to_resize", name
            with pytest.raises(ImageDecodeError):  # what OpenCV refuses, decode_image refuses too
                decode_image(bodies[name])
        else:
            assert row.status == "success", name
            arr = decode_image(stored[f"{row.key}.jpg"])
            assert arr.shape == (int(row.height), int(row.width), 3), name

    def stored_image(name: str) -> np.ndarray:
        return decode_image(stored[f"{rows.loc[name].key}.jpg"])

    # img2dataset's error texts: OpenCV's assertion for an empty body, a plain one otherwise.
    assert "!buf.empty()" in rows.loc["empty"].error_message
    assert rows.loc["html_page"].error_message == "Image decoding error"
    # It ignores EXIF orientation: the stored image is the unrotated 64x48 pattern.
    assert stored_image("exif_rotated_jpeg").shape == (48, 64, 3)
    # It saturates 16-bit pixels to 255 when encoding JPEG: the ramp is gone before we see it.
    assert stored_image("gray16_png")[24, 32].tolist() == [255, 255, 255]
    assert decode_image(bodies["gray16_png"])[24, 32].tolist() == [130, 130, 130]
    # With resize_mode "no" the tiny image stays tiny; transparency is already on white.
    assert stored_image("tiny_png").shape == (20, 20, 3)
    assert left_right(stored_image("rgba_png"))[1] == [255, 255, 255]
