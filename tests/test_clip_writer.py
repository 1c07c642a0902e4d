"""ClipEncoder / FrameSampler fed by decode_span: real H.264 out, checked by decoding it again."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import broken_videos as bv
from pose_data.media.clip_writer import ClipEncoder, FrameSampler, frame_to_rgb, output_size, resampled_count
from pose_data.media.video_decode import decode_span


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clip_videos")
    return {
        "index": bv.index_video(d / "index.mp4", 50, fps=25, size=(176, 96)),  # frame i shows i, 2 s
        "rotated": bv.rotated_video(d / "rotated.mp4", degrees=90),  # stored 64x32
        "vfr": bv.vfr_video(d / "vfr.mkv"),
    }


def decode_clip(data: bytes) -> tuple[av.video.stream.VideoStream, list[tuple[float, np.ndarray]]]:
    """(stream, [(time, (H, W, 3) rgb)]) of an encoded clip."""
    container = av.open(io.BytesIO(data))
    stream = container.streams.video[0]
    frames = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    return stream, frames


def source_frame(path: Path, t: float) -> np.ndarray:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if abs(frame.time - t) < 1e-6:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {t}")


def resize_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Independent reference geometry: PIL resize of the short side to ``size``, centre square crop."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    im = Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


def test_bikes_span_square_128_at_8fps():
    with ClipEncoder(size=128, center_crop=True, fps=8) as encoder:
        span = decode_span(bv.BIKES, 2.0, 4.0, on_frame=encoder.add)
        data = encoder.finish()
    assert span.num_frames == 50
    # ticks 2.0 + k/8 <= 3.96 (the last kept frame): k = 0..15
    expected = int((3.96 - 2.0) * 8) + 1
    assert expected == 16 == resampled_count(span.decoded_start, span.decoded_end, 8) == encoder.num_written
    stream, frames = decode_clip(data)
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (128, 128)
    assert len(frames) == expected
    assert [t for t, _ in frames] == pytest.approx([k / 8 for k in range(expected)])
    assert float(stream.average_rate) == pytest.approx(8.0)
    assert float(stream.duration * stream.time_base) == pytest.approx(expected / 8)
    # the first clip frame is the source frame at 2.0 s, resized and cropped
    reference = resize_crop(source_frame(bv.BIKES, 2.0), 128)
    first = frames[0][1].astype(np.int16)
    same = np.abs(first - reference).mean()
    other = np.abs(first - resize_crop(source_frame(bv.BUNNY, 0.0), 128)).mean()
    assert same < 6.0, same
    assert other > 5 * same, (same, other)


def test_resampling_keeps_the_nearest_frame(videos):
    """25 fps -> 8 fps: output frame k shows the source frame nearest to k/8 s (the earlier on a tie)."""
    with ClipEncoder(fps=8, crf=10) as encoder:
        decode_span(videos["index"], 0.0, 2.0, on_frame=encoder.add)
        data = encoder.finish()
    _, frames = decode_clip(data)
    source_times = np.arange(50) / 25
    nearest = [int(np.argmin(np.abs(source_times - k / 8) - 1e-9 * (source_times < k / 8))) for k in range(16)]
    assert [bv.read_index(rgb) for _, rgb in frames] == nearest
    assert nearest[:5] == [0, 3, 6, 9, 12]  # 0.125 s is nearest 0.12 s (frame 3), 0.375 s is 0.36 or 0.40: 9
    # upsampling duplicates: 25 -> 50 fps gives ticks every 0.02 s up to 0.96 s
    with ClipEncoder(fps=50, crf=10) as encoder:
        decode_span(videos["index"], 0.0, 1.0, on_frame=encoder.add)
        data = encoder.finish()
    _, frames = decode_clip(data)
    assert len(frames) == resampled_count(0.0, 0.96, 50) == 49
    assert [bv.read_index(rgb) for _, rgb in frames[:6]] == [0, 0, 1, 1, 2, 2]


def test_without_fps_timestamps_are_kept(videos):
    with ClipEncoder(crf=10) as encoder:
        decode_span(videos["vfr"], 0.0, 2.0, on_frame=encoder.add)
        data = encoder.finish()
    _, frames = decode_clip(data)
    assert [t for t, _ in frames] == pytest.approx(list(bv.VFR_TIMES), abs=1e-4)
    assert [bv.read_index(rgb) for _, rgb in frames] == list(range(len(bv.VFR_TIMES)))


def test_rotated_video_is_written_upright(videos):
    with ClipEncoder(size=64) as encoder:
        decode_span(videos["rotated"], 0.0, 1.0, on_frame=encoder.add)
        data = encoder.finish()
    container = av.open(io.BytesIO(data))
    frame = next(container.decode(video=0))
    assert frame.rotation == 0  # no display matrix: the pixels are upright
    rgb = frame.to_ndarray(format="rgb24")
    assert rgb.shape == (128, 64, 3)  # display 32x64 scaled to short side 64
    # stored red|green over blue|white, turned 90 degrees counter-clockwise: green|white over red|blue
    corners = [rgb[8, 8], rgb[8, -8], rgb[-8, 8], rgb[-8, -8]]
    for pixel, colour in zip(corners, [(0, 255, 0), (255, 255, 255), (255, 0, 0), (0, 0, 255)]):
        assert np.abs(pixel.astype(int) - colour).max() < 40, (pixel, colour)


def test_geometry_gives_even_sizes():
    odd = av.VideoFrame.from_ndarray(bv.quadrant_image(97, 65), format="rgb24")
    assert frame_to_rgb(odd).shape == (64, 96, 3)  # last odd row and column dropped
    assert frame_to_rgb(odd, center_crop=True).shape == (64, 64, 3)
    assert frame_to_rgb(odd, size=32).shape == (32, 48, 3)  # 97 * 32 / 65 = 47.8 -> 48
    assert output_size(640, 272, 0, 128, False) == (302, 128)  # 301.2 rounded to even
    assert output_size(640, 272, 90, 128, False) == (128, 302)
    assert output_size(640, 272, 0, None, True) == (272, 272)
    with ClipEncoder(center_crop=True) as encoder:  # no resize: bikes cropped to 272x272
        decode_span(bv.BIKES, 0.0, 0.2, on_frame=encoder.add)
        stream, frames = decode_clip(encoder.finish())
    assert (stream.width, stream.height, len(frames)) == (272, 272, 5)


def test_frame_sampler_stride_and_size(videos):
    sampler = FrameSampler(4, stride=3, size=64, center_crop=True)
    decode_span(videos["index"], 0.4, 2.0, on_frame=sampler.add)
    jpegs = sampler.finish()
    assert sampler.full and len(jpegs) == 4
    assert sampler.times == pytest.approx([0.4, 0.52, 0.64, 0.76])  # frames 10, 13, 16, 19
    images = [Image.open(io.BytesIO(j)) for j in jpegs]
    assert all(im.format == "JPEG" and im.size == (64, 64) for im in images)
    full_size = FrameSampler(4, stride=3)
    decode_span(videos["index"], 0.4, 2.0, on_frame=full_size.add)
    assert [bv.read_index(np.asarray(Image.open(io.BytesIO(j)))) for j in full_size.finish()] == [10, 13, 16, 19]
    short = FrameSampler(10, stride=10)  # 50 frames hold only 5 samples 10 apart
    decode_span(bv.BIKES, 0.0, 2.0, on_frame=short.add)
    assert len(short.finish()) == 5 and not short.full
    assert short.times == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6])
    first = np.asarray(Image.open(io.BytesIO(short.finish()[0]))).astype(np.int16)
    assert np.abs(first - source_frame(bv.BIKES, 0.0)).mean() < 4.0


def test_bad_options_and_misuse():
    with pytest.raises(ValueError, match="even int"):
        ClipEncoder(size=127)
    with pytest.raises(ValueError, match="veryfast"):
        ClipEncoder(preset="warp")
    with pytest.raises(ValueError, match="crf"):
        ClipEncoder(crf=60)
    with pytest.raises(ValueError, match="fps"):
        ClipEncoder(fps=0)
    with pytest.raises(ValueError, match="stride"):
        FrameSampler(4, stride=0)
    with ClipEncoder() as encoder:
        with pytest.raises(ValueError, match="no frame was added"):
            encoder.finish()
    encoder = ClipEncoder()
    decode_span(bv.BIKES, 0.0, 0.1, on_frame=encoder.add)
    assert encoder.finish()[4:8] == b"ftyp"
    with pytest.raises(RuntimeError):
        encoder.add(None, 1.0)
    with pytest.raises(KeyError):  # an error inside the block discards the clip, the error propagates
        with ClipEncoder() as encoder:
            decode_span(bv.BIKES, 0.0, 0.1, on_frame=encoder.add)
            raise KeyError("boom")
