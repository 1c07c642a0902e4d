"""decode_span / probe_video on real videos (H.264, MPEG-4 Part 2) and on generated broken or odd ones.

The reference for every span is an independent count: decode the whole file once without seeking,
list every frame's timestamp, and count those in [start, end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

import broken_videos as bv
from pose_data.media.span_decoder import SpanOutOfRange
from pose_data.media.video_decode import InvalidSpan, decode_span
from pose_data.media.video_probe import VideoDecodeError, probe_video


@dataclass
class FullDecode:
    times: list[float]  # every frame's timestamp (s, relative to the stream start), decode order
    keyframes: list[float]  # timestamps of the keyframes


def full_decode(path: Path) -> FullDecode:
    """Decode the whole file from its first packet, no seek: the independent reference."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        times, keys = [], []
        for frame in container.decode(stream):
            t = float((frame.pts - origin) * stream.time_base)
            times.append(t)
            if frame.key_frame:
                keys.append(t)
    return FullDecode(times, keys)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "bikes": bv.BIKES,
        "bikes_mpeg4": bv.reencode(bv.BIKES, d / "bikes_mpeg4.mp4", codec="mpeg4", gop=48),
        "long": bv.long_video(d / "long.mp4"),
        "truncated": bv.truncated_copy(bv.BIKES, d / "truncated.mp4"),
        "truncated_faststart": bv.truncated_faststart(bv.BIKES, d / "truncated_faststart.mp4"),
        "garbled": bv.garbled_media(bv.BIKES, d / "garbled.mp4"),
        "garbled_middle": bv.garbled_media(bv.BIKES, d / "garbled_middle.mp4", 0.4, 0.5),
        "random": bv.random_bytes(d / "random.mp4"),
        "empty": bv.empty_file(d / "empty.mp4"),
        "audio_mp4": bv.audio_only(d / "audio.mp4", codec="aac"),
        "audio_mka": bv.audio_only(d / "audio.mka", codec="mp2"),
        "rotated90": bv.rotated_video(d / "rotated90.mp4", degrees=90),
        "rotated270": bv.rotated_video(d / "rotated270.mp4", degrees=-90),
        "vfr_mkv": bv.vfr_video(d / "vfr.mkv"),
        "vfr_mp4": bv.vfr_video(d / "vfr.mp4"),
        "offset_mkv": bv.offset_video(d / "offset.mkv", offset=2.0),
        "offset_mp4": bv.offset_video(d / "offset.mp4", offset=2.0),
    }


# --- real codecs against the independent count ------------------------------------------------

# (start, end): frame-aligned, not aligned, mid-GOP starts (bikes' keyframes are at 0, 1.2, 3.04,
# 5.48, 7.48, 9.68 s; the mpeg4 copy has one every 48 frames), a one-frame span, the last second.
SPANS = [(0.0, 1.0), (0.013, 1.517), (3.1, 4.9), (4.0, 6.0), (5.47, 5.49), (2.5, 2.54), (6.77, 9.333), (9.0, 10.0)]


@pytest.mark.parametrize("name", ["bikes", "bikes_mpeg4"])
def test_spans_match_full_decode(videos, name):
    path = videos[name]
    ref = full_decode(path)
    assert len(ref.times) == 250
    for start, end in SPANS:
        expected = [t for t in ref.times if start <= t < end]
        seen: list[tuple[float, int]] = []
        result = decode_span(path, start, end, on_frame=lambda frame, t, seen=seen: seen.append((t, frame.width)))
        assert result.num_frames == len(expected) > 0, (start, end)
        assert [t for t, _ in seen] == pytest.approx(expected), (start, end)
        assert result.decoded_start == pytest.approx(expected[0])
        assert result.decoded_end == pytest.approx(expected[-1])
        assert (result.width, result.height, result.rotation) == (640, 272, 0)
        assert all(w == 640 for _, w in seen)
        if len(expected) > 1:
            assert result.fps == pytest.approx(25.0)
        assert result.decoded_duration == pytest.approx(len(expected) / 25.0)
        assert not result.truncated and result.decode_errors == 0
        # cost: the frames from the keyframe at or before start, the span, and the one frame that stops it
        keyframe = max(k for k in ref.keyframes if k <= start + 1e-9)
        preroll = sum(1 for t in ref.times if keyframe <= t < start)
        assert result.frames_decoded <= preroll + len(expected) + 1, (start, end, result.frames_decoded)


def test_mid_gop_start_decodes_from_the_previous_keyframe(videos):
    # bikes: keyframe at 3.04 s (frame 76); 4.0 s is frame 100, 24 frames into that GOP
    result = decode_span(videos["bikes"], 4.0, 4.4)
    assert result.num_frames == 10
    assert result.decoded_start == pytest.approx(4.0)
    assert result.frames_decoded == 24 + 10 + 1
    assert result.seeks == 1


def test_decoded_frames_are_the_frames_of_the_span(videos):
    """The pixels, not only the timestamps: frame i of the long video shows the number i."""
    indices = []
    result = decode_span(
        videos["long"], 41.3, 42.05, on_frame=lambda frame, t: indices.append(bv.read_index(frame.to_ndarray(format="rgb24")))
    )
    first = math.ceil(41.3 * 25)  # 1033: the first frame at or after 41.3 s
    assert indices == list(range(first, 42 * 25 + 2))  # up to 42.04 s, frame 1051
    assert result.num_frames == len(indices) == 19


def test_cost_does_not_grow_with_the_offset(videos):
    """60 s, 25 fps, a keyframe every 2 s: a 1 s span costs the same at the start and at the end."""
    path = videos["long"]
    near = decode_span(path, 1.0, 2.0)
    far = decode_span(path, 57.0, 58.0)
    assert near.num_frames == far.num_frames == 25
    # from the keyframe 1 s before: 25 preroll + 25 kept + 1 that stops the loop
    assert near.frames_decoded == far.frames_decoded == 51
    gop, span = 50, 25
    for start in (0.5, 13.3, 30.0, 44.9, 58.96):
        assert decode_span(path, start, start + 1.0).frames_decoded <= gop + span + 1, start
    assert decode_span(path, 58.0, 59.0).decoded_start == pytest.approx(58.0)


# --- probe ------------------------------------------------------------------------------------


def test_probe_real_videos(videos):
    info = probe_video(videos["bikes"])
    assert (info.width, info.height, info.rotation, info.codec) == (640, 272, 0, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.container_duration == pytest.approx(10.0)
    assert info.frame_count == 250
    info = probe_video(videos["bikes_mpeg4"])
    assert (info.width, info.height, info.codec) == (640, 272, "mpeg4")
    bunny = probe_video(bv.BUNNY)
    assert (bunny.width, bunny.height, bunny.frame_count) == (1280, 720, 132)


@pytest.mark.parametrize(
    "name, words",
    [
        ("truncated", ["cannot open", "not a readable media file"]),
        ("random", ["cannot open", "5000 bytes"]),
        ("empty", ["cannot open", "empty file"]),
        ("audio_mp4", ["no video stream", "audio aac"]),
        ("audio_mka", ["no video stream", "audio mp2"]),
    ],
)
def test_unreadable_inputs_name_the_reason(videos, name, words):
    for call in (lambda: probe_video(videos[name]), lambda: decode_span(videos[name], 0.0, 1.0)):
        with pytest.raises(VideoDecodeError) as err:
            call()
        assert not isinstance(err.value, SpanOutOfRange)
        for word in words:
            assert word in err.value.reason, err.value.reason


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="does not exist"):
        decode_span(tmp_path / "nope.mp4", 0.0, 1.0)


# --- damaged media data -----------------------------------------------------------------------


def test_truncated_file_that_opens(videos):
    path = videos["truncated_faststart"]  # header first, media data cut at half: frames up to ~4.6 s
    assert probe_video(path).frame_count == 250  # the header still promises 250 frames
    ok = decode_span(path, 1.0, 2.0)
    assert ok.num_frames == 25 and ok.decode_errors == 0
    for start, end in [(4.0, 6.0), (7.0, 8.0), (0.0, 9.0)]:
        with pytest.raises(VideoDecodeError) as err:
            decode_span(path, start, end)
        assert not isinstance(err.value, SpanOutOfRange)  # a damaged file, not a span past the end
        assert "truncated or corrupt" in err.value.reason
        assert "header says the video stream lasts 10.000 s" in err.value.reason


def test_garbled_media_is_decode_failed_with_the_error_count(videos):
    with pytest.raises(VideoDecodeError) as err:
        decode_span(videos["garbled"], 2.0, 3.0)
    assert "no frame could be decoded" in err.value.reason
    assert "decode error(s)" in err.value.reason
    count = int(err.value.reason.split(": ")[1].split(" decode error")[0])
    assert count > 0


def test_partly_garbled_span_reports_its_errors(videos):
    path = videos["garbled_middle"]  # bytes 40-50 % of the media data are random (about 3.6-4.5 s)
    clean = decode_span(path, 0.0, 2.0)
    assert clean.num_frames == 50 and clean.decode_errors == 0
    reference = full_decode(bv.BIKES).times
    seen = []
    partial = decode_span(path, 3.0, 4.0, on_frame=lambda f, t: seen.append(t))
    assert partial.decode_errors > 0
    # what was decoded is reported as it is: real frame times of the span, fewer than it holds
    expected = [t for t in reference if 3.0 <= t < 4.0]
    assert set(seen) <= set(expected) and partial.num_frames == len(seen) < len(expected)
    with pytest.raises(VideoDecodeError, match=r"no frame decoded in span \[4.000, 5.000\) s; \d+ decode error"):
        decode_span(path, 4.0, 5.0)  # every frame of this span is lost


# --- odd but valid videos ---------------------------------------------------------------------


@pytest.mark.parametrize("name, rotation", [("rotated90", 90), ("rotated270", 270)])
def test_rotated_video_reports_display_size(videos, name, rotation):
    info = probe_video(videos[name])  # stored 64x32
    assert (info.width, info.height, info.rotation) == (32, 64, rotation)
    result = decode_span(videos[name], 0.1, 0.3)
    assert (result.width, result.height, result.rotation) == (32, 64, rotation)
    assert result.num_frames == 5


@pytest.mark.parametrize("name", ["vfr_mkv", "vfr_mp4"])
def test_variable_frame_rate(videos, name):
    path = videos[name]
    assert full_decode(path).times == pytest.approx(list(bv.VFR_TIMES))
    result = decode_span(path, 0.1, 0.99)  # frames at 0.16, 0.2, 0.46, 0.48, 0.5, 0.96
    assert result.num_frames == 6
    assert (result.decoded_start, result.decoded_end) == pytest.approx((0.16, 0.96))
    assert result.fps == pytest.approx(5 / 0.8)  # (n - 1) / (last - first), not the header rate
    assert result.decoded_duration == pytest.approx(0.8 + 0.8 / 5)
    gap = decode_span(path, 0.25, 0.45)  # between 0.2 and 0.46: no frame lies there
    assert gap.num_frames == 0 and gap.decoded_start is None and gap.decoded_duration == 0.0
    indices = []
    decode_span(path, 0.4, 1.5, on_frame=lambda f, t: indices.append(bv.read_index(f.to_ndarray(format="rgb24"))))
    assert indices == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("name", ["offset_mkv", "offset_mp4"])
def test_stream_start_offset_is_time_zero(videos, name):
    path = videos[name]  # 25 frames stored at 2.00 .. 2.96 s
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.start_time * stream.time_base) == pytest.approx(2.0)
    indices = []
    result = decode_span(path, 0.0, 0.5, on_frame=lambda f, t: indices.append(bv.read_index(f.to_ndarray(format="rgb24"))))
    assert result.num_frames == 13 and result.decoded_start == pytest.approx(0.0)
    assert indices == list(range(13))
    later = decode_span(path, 0.5, 0.9)
    assert (later.decoded_start, later.num_frames) == (pytest.approx(0.52), 10)
    with pytest.raises(SpanOutOfRange, match=r"end of the video \(1\.000 s"):
        decode_span(path, 2.0, 2.5)  # absolute 2.0 s would be inside; relative, it is past the end


# --- span checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, end, words",
    [(2.0, 1.0, "reversed"), (1.0, 1.0, "zero length"), (-1.0, 1.0, "negative"), (float("nan"), 1.0, "not finite")],
)
def test_invalid_spans(videos, start, end, words):
    with pytest.raises(InvalidSpan, match=words):
        decode_span(videos["bikes"], start, end)


def test_span_past_the_end(videos):
    path = videos["bikes"]
    with pytest.raises(SpanOutOfRange) as err:
        decode_span(path, 12.0, 13.0)
    assert err.value.video_end == pytest.approx(10.0)
    assert "10.000 s" in err.value.reason and "starts at or after the end" in err.value.reason
    with pytest.raises(SpanOutOfRange):
        decode_span(path, 9.99, 11.0)  # after the last frame (9.96 s), before 10.0: still nothing to keep
    partly = decode_span(path, 9.5, 13.0)
    assert partly.truncated and partly.video_end == pytest.approx(10.0)
    assert partly.num_frames == 12 and partly.decoded_end == pytest.approx(9.96)
    assert partly.frames_decoded <= (250 - 137) + 1  # from the keyframe at 5.48 s at most (here 7.48)
    exact = decode_span(path, 9.0, 10.0005)  # within the millisecond tolerance of the end
    assert not exact.truncated and exact.num_frames == 25
