"""Video files of every odd or broken kind the HD-VILA indexer meets, made at test time with PyAV.

Each function writes one file into a given path and returns that path, so tests need no stored
binaries beyond the real sample videos. All generated videos are small (<= 320x240, a few seconds,
except the 60 s ``long_video`` which encodes in ~1-2 s at ``ultrafast``) and deterministic.

Synthetic videos show their own frame index as a row of black/white blocks (:func:`index_image`),
so a test can read back *which* frame was decoded or kept (:func:`read_index`), not only how many.

Cases:

- real codecs: :func:`reencode` (e.g. bikes.mp4 to MPEG-4 Part 2, codec ``mpeg4``);
- truncated: :func:`truncated_copy` (first half of an mp4 whose index sits at the end: no header
  left) and :func:`truncated_faststart` (index first, media data cut: opens, then breaks off);
- not videos: :func:`random_bytes` (with an .mp4 name), :func:`empty_file`,
  :func:`audio_only` (a sine wave in AAC, no video stream);
- odd but valid: :func:`rotated_video` (display matrix rotation), :func:`vfr_video` (irregular
  timestamps), :func:`offset_video` (stream start_time not 0), :func:`long_video` (fixed GOP).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIKES = REPO / "pose_data" / "sample_data" / "hdvila" / "bikes.mp4"
BUNNY = REPO / "pose_data" / "sample_data" / "hdvila" / "bigbuckbunny.mp4"

#: Bits of the frame index drawn by :func:`index_image` (indices 0..2047).
INDEX_BITS = 11

#: Timestamps (seconds) of the frames of :func:`vfr_video`: gaps of 40, 120, 40, 260, 20, 20, 460, 40 ms.
VFR_TIMES = (0.0, 0.04, 0.16, 0.2, 0.46, 0.48, 0.5, 0.96, 1.0)


# --- frame patterns ---------------------------------------------------------------------------


def index_image(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 grey image whose middle band shows ``index`` in binary, most significant bit left.

    Bit ``b`` occupies columns ``[b * W // INDEX_BITS, (b + 1) * W // INDEX_BITS)``: white for 1,
    black for 0, on a mid-grey background. Blocks of >= 8 px survive H.264 at its default quality.
    """
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} does not fit in {INDEX_BITS} bits")
    img = np.full((height, width, 3), 128, np.uint8)
    band = slice(height // 4, height - height // 4)
    for bit in range(INDEX_BITS):
        x0, x1 = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        img[band, x0:x1] = 255 if on else 0
    return img


def read_index(rgb: np.ndarray) -> int:
    """The index drawn by :func:`index_image` into an (H, W, 3) frame (after lossy coding)."""
    height, width = rgb.shape[:2]
    band = rgb[height // 4 + 2 : height - height // 4 - 2].mean(axis=2)  # (h', W) luminance-ish
    index = 0
    for bit in range(INDEX_BITS):
        x0, x1 = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        centre = band[:, x0 + 2 : x1 - 2]
        index = (index << 1) | int(centre.mean() > 128)
    return index


def quadrant_image(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2, : width // 2] = (255, 0, 0)
    img[: height // 2, width // 2 :] = (0, 255, 0)
    img[height // 2 :, : width // 2] = (0, 0, 255)
    img[height // 2 :, width // 2 :] = (255, 255, 255)
    return img


# --- writers ----------------------------------------------------------------------------------


def write_video(
    path: Path,
    images: Sequence[np.ndarray],
    times: Sequence[float],
    *,
    codec: str = "libx264",
    gop: int | None = None,
    rotation: float | None = None,
    time_base: Fraction = Fraction(1, 1000),
    options: dict[str, str] | None = None,
    comment: str | None = None,
) -> Path:
    """Encode (H, W, 3) RGB ``images`` shown at ``times`` (seconds) into ``path`` (format from its suffix), with the
    container's comment tag ``comment`` as it is, if given."""
    height, width = images[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        if comment is not None:
            container.metadata["comment"] = comment
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", **(options or {})}
            if gop is not None:  # a keyframe exactly every ``gop`` frames, no scene-cut keyframes
                stream.options = {**stream.options, "keyint": str(gop), "min-keyint": str(gop), "scenecut": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image, t in zip(images, times, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(Fraction(t) / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def index_video(path: Path, num_frames: int, fps: int = 25, size: tuple[int, int] = (96, 64), **kwargs) -> Path:
    """A constant-rate video whose frame ``i`` shows ``i`` (see :func:`index_image`), at ``t = i / fps``."""
    width, height = size
    images = [index_image(i, width, height) for i in range(num_frames)]
    return write_video(path, images, [i / fps for i in range(num_frames)], **kwargs)


def long_video(path: Path, seconds: int = 60, fps: int = 25, gop_seconds: int = 2) -> Path:
    """320x240 H.264, a keyframe exactly every ``gop_seconds``; frame ``i`` shows ``i`` (1500 frames by default)."""
    return index_video(path, seconds * fps, fps=fps, size=(320, 240), gop=gop_seconds * fps)


def reencode(src: Path, dst: Path, codec: str = "mpeg4", gop: int = 48) -> Path:
    """Decode ``src`` and encode every frame again with ``codec`` (same size and rate) into ``dst``."""
    with av.open(str(src)) as source, av.open(str(dst), mode="w") as container:
        in_stream = source.streams.video[0]
        stream = container.add_stream(codec, rate=in_stream.average_rate)
        stream.width, stream.height, stream.pix_fmt = in_stream.width, in_stream.height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = 3_000_000  # the mpeg4 default (200 kb/s) blurs 640x272 badly
        for frame in source.decode(in_stream):
            frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose keyframes
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return dst


def rotated_video(path: Path, degrees: float = 90, num_frames: int = 10, size: tuple[int, int] = (64, 32)) -> Path:
    """Stored (W, H) = ``size`` quadrant frames with a display matrix rotating them ``degrees`` counter-clockwise."""
    width, height = size
    images = [quadrant_image(width, height)] * num_frames
    return write_video(path, images, [i / 25 for i in range(num_frames)], rotation=degrees)


def vfr_video(path: Path, times: Sequence[float] = VFR_TIMES) -> Path:
    """Variable frame rate: frame ``i`` shows ``i`` and is shown at ``times[i]`` (mkv or mp4 by suffix)."""
    images = [index_image(i, 96, 64) for i in range(len(times))]
    return write_video(path, images, times)


def offset_video(path: Path, offset: float = 2.0, num_frames: int = 25, fps: int = 25) -> Path:
    """Frames at ``offset + i / fps``: the stream's start_time is ``offset``, not 0. Frame ``i`` shows ``i``."""
    images = [index_image(i, 96, 64) for i in range(num_frames)]
    return write_video(path, images, [offset + i / fps for i in range(num_frames)])


def audio_only(path: Path, seconds: float = 1.0, rate: int = 44100, codec: str = "aac") -> Path:
    """A 440 Hz sine in ``codec`` (aac, mp2, ...), no video stream (container from the suffix)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
        for i, offset in enumerate(range(0, len(samples) - frame_size + 1, frame_size)):
            chunk = samples[offset : offset + frame_size][None, :]  # (channels=1, samples)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = i * frame_size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- damaged files ----------------------------------------------------------------------------


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``src``'s bytes (for bikes.mp4 the moov index is lost: no header)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def truncated_faststart(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """``src``'s video remuxed with its index first (faststart), then cut: it opens, then breaks off."""
    full = Path(dst).with_name(Path(dst).stem + ".full.mp4")
    with av.open(str(src)) as source, av.open(str(full), mode="w", options={"movflags": "faststart"}) as out:
        in_stream = source.streams.video[0]
        stream = out.add_stream_from_template(in_stream)
        for packet in source.demux(in_stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = stream
            out.mux(packet)
    truncated_copy(full, dst, fraction)
    full.unlink()
    return Path(dst)


def random_bytes(path: Path, size: int = 5000, seed: int = 0) -> Path:
    """``size`` random bytes, under whatever name (``.mp4``) the test gives."""
    Path(path).write_bytes(np.random.default_rng(seed).bytes(size))
    return Path(path)


def empty_file(path: Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def garbled_media(src: Path, dst: Path, start: float = 0.0, stop: float = 1.0, seed: int = 0) -> Path:
    """``src`` (an mp4) with bytes ``[start, stop)`` (fractions) of its mdat payload replaced by random bytes.

    The header (moov) is intact, so the file opens and states its frames; the damaged packets fail
    to decode. ``start=0, stop=1`` garbles every frame.
    """
    data = bytearray(Path(src).read_bytes())
    offset = 0
    while offset + 8 <= len(data):  # walk the top-level boxes: 4-byte size, 4-byte type
        size, kind = int.from_bytes(data[offset : offset + 4], "big"), bytes(data[offset + 4 : offset + 8])
        if kind == b"mdat":
            payload = offset + 8, offset + size
            break
        offset += size
    else:
        raise ValueError(f"{src} has no top-level mdat box")
    length = payload[1] - payload[0]
    a, b = payload[0] + int(length * start), payload[0] + int(length * stop)
    data[a:b] = np.random.default_rng(seed).bytes(b - a)
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
