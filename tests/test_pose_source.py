"""``fyp-generate``'s pose sources (:mod:`model.generation.pose_source`) on hostile and awkward files: memory that follows the
output size, not the source's; sizes read from files bounded before anything is allocated; skeleton frame images
decoded by the project's own decoder; untagged MMPose-style skeleton videos told from dark driving videos; broken
metadata named by file and key."""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
import zlib
from fractions import Fraction
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from broken_videos import write_video
from model.generation.cli import main as generate_main
from model.generation.pose_source import detect_kind, load_pose_frames
from pose_data.media.video_writer import Mp4Writer

CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
BIKES = Path(str(resources.files("pose_data") / "sample_data" / "hdvila" / "bikes.mp4"))
SIZE = 64  # the output size of every test here (the tiny pose encoder downscales by 16)
KEYPOINTS_SCHEMA = pa.schema([("time", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
                              ("keypoints", pa.list_(pa.list_(pa.list_(pa.float32()))))])  # fmt: skip


def skeleton_like(width: int, height: int, i: int = 0) -> np.ndarray:
    """Coloured bars on black, moving with ``i``: a stand-in skeleton frame of any size."""
    frame = np.zeros((height, width, 3), np.uint8)
    x = (width // 8 + 2 * i) % max(width - width // 16, 1)
    frame[height // 8 : height - height // 8, x : x + max(width // 16, 1)] = (255, 0, 85)
    frame[height // 2 : height // 2 + max(height // 16, 1), width // 8 : width - width // 8] = (0, 255, 170)
    return frame


def write_keypoints(path: Path, rows: int = 1, width: int = SIZE, height: int = SIZE, person=None, metadata: bytes | None = None) -> Path:
    """A keypoints.parquet of ``rows`` rows, one person each (a standing figure unless ``person`` is given)."""
    if person is None:
        person = [[width * (0.3 + 0.4 * (k % 2)), height * (0.1 + 0.05 * k), 1.0] for k in range(17)]
    table = pa.table({"time": [i / 8 for i in range(rows)], "width": [width] * rows, "height": [height] * rows,
                      "keypoints": [[person]] * rows}, schema=KEYPOINTS_SCHEMA)  # fmt: skip
    if metadata is not None:
        table = table.replace_schema_metadata({b"fyp_pose_sequence": metadata})
    pq.write_table(table, path)
    return path


def write_raw_video(path: Path, frames: list[np.ndarray], *, codec: str = "libx264", fps: int = 8, comment: str | None = None) -> Path:
    """An mp4 at ``fps`` written with PyAV directly: any codec (``mpeg4`` is the official example videos' MPEG-4 Part
    2), and a comment tag as it is (Mp4Writer writes only valid JSON), or none."""
    return write_video(path, frames, [i / fps for i in range(len(frames))], codec=codec, comment=comment)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A few-hundred-byte PNG whose header declares ``width`` x ``height`` RGB pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * (3 * width + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------------ memory (item 9)


def peak_traced_bytes(load) -> int:
    """Peak bytes Python and numpy allocated while ``load()`` ran (tracemalloc: numpy registers its arrays there)."""
    tracemalloc.start()
    try:
        load()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["skeleton_frames", "keypoints"])
def test_pose_frames_are_held_at_the_output_size_not_the_sources(kind, tmp_path):
    """20 frames of a 1280x720 source fitted to 64x64: what stays held is 20 small frames and at most a few source-sized
    ones on their way through, not 20 source-sized frames (55 MB) fitted at the end."""
    width, height, count = 1280, 720, 20
    if kind == "skeleton_frames":
        source = tmp_path / "frames"
        source.mkdir()
        for i in range(count):
            Image.fromarray(skeleton_like(width, height, i)).save(source / f"{i}.png")
    else:
        source = write_keypoints(tmp_path / "keypoints.parquet", rows=count, width=width, height=height)
    loaded = {}
    peak = peak_traced_bytes(lambda: loaded.update(poses=load_pose_frames(str(source), width=SIZE, height=SIZE, num_frames=count,
                                                                           frame_stride=1, encoder_style="openpose")))  # fmt: skip
    poses = loaded["poses"]
    assert poses.kind == kind and poses.frames.shape == (count, SIZE, SIZE, 3) and poses.frames.max() > 0
    source_frame = width * height * 3
    assert peak < 6 * source_frame, f"peak {peak / 2**20:.1f} MiB: {peak / source_frame:.1f} source frames held at once"


PEAK_RSS_OF_LOADING = """
import resource, sys
from model.generation.pose_source import load_pose_frames
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
load_pose_frames(sys.argv[1], width=64, height=64, num_frames=2, frame_stride=1)  # imports, codec buffers: the baseline
before = peak()
poses = load_pose_frames(sys.argv[1], width=64, height=64, num_frames=int(sys.argv[2]), frame_stride=1)
print(poses.frames.shape[0], peak() - before)
"""


def test_a_skeleton_video_is_fitted_frame_by_frame_as_it_is_decoded(tmp_path):
    """32 frames of a 1920x1080 skeleton video to 64x64: the peak memory of the load (its own process: FFmpeg's frame
    buffers are not Python's to trace) grows by a few decoded frames at most (here: under one), not by 32 of them
    (199 MB)."""
    width, height, count = 1920, 1080, 32
    source = tmp_path / "skeleton.mp4"
    with Mp4Writer(source, 8, preset="ultrafast", comment={"format": "fyp-skeleton-video", "skeleton_style": "openpose"}) as writer:
        for i in range(count):
            writer.add(skeleton_like(width, height, i))
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_LOADING, str(source), str(count)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, growth = map(int, proc.stdout.split()[-2:])
    source_frame = width * height * 3
    assert frames == count and growth < 4 * source_frame, f"peak grew {growth / 2**20:.1f} MiB: {growth / source_frame:.1f} source frames"


def write_gap_video(path: Path, frames: int = 6, gap_s: int = 200) -> Path:
    """A ``frames``-frame H.264 mp4 whose timestamps jump ``gap_s`` seconds from frame to frame."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(skeleton_like(32, 32, i), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i * gap_s, Fraction(1, 1)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_video_with_timestamp_gaps_gives_at_most_what_is_asked(tmp_path):
    """6 frames 200 s apart are 8,001 pose frames at 8 fps: taken only when asked for with --num-frames."""
    video = write_gap_video(tmp_path / "gaps.mp4")
    with av.open(str(video)) as container:  # the file really has 6 frames 200 s apart
        times = [float(f.time) for f in container.decode(video=0)]
    assert times == [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
    poses = load_pose_frames(str(video), width=SIZE, height=SIZE, num_frames=16, fps=8.0, kind="skeleton_video")
    assert poses.frames.shape == (16, SIZE, SIZE, 3) and poses.source_frames == [0] * 16 and poses.times == [0.0] * 16
    assert all(np.array_equal(frame, poses.frames[0]) for frame in poses.frames)
    with pytest.raises(ValueError) as refused:
        load_pose_frames(str(video), width=SIZE, height=SIZE, fps=8.0, kind="skeleton_video")
    message = str(refused.value)
    assert str(video) in message and "more than 2048 pose frames at 8 fps" in message and "--num-frames" in message


# ------------------------------------------------------------------------------------------------ frame images (item 14)


def test_skeleton_frame_images_keep_a_black_background_and_16_bit_grey(tmp_path):
    """An RGBA skeleton with a transparent background (hiding white, as many editors save it) is drawn on black, and a
    16-bit grey frame is scaled to 8 bits, not clipped to white."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = 255  # transparent white
    rgba[20:40, 30:34] = (255, 0, 85, 255)  # an opaque limb
    Image.fromarray(rgba, "RGBA").save(folder / "0.png")
    grey = np.zeros((SIZE, SIZE), np.uint16)
    grey[10:50, 20:24] = 40000  # 40000 / 65535 of full scale: 156 in 8 bits
    Image.fromarray(grey).save(folder / "1.png")
    assert Image.open(folder / "1.png").mode == "I;16"
    poses = load_pose_frames(str(folder), width=SIZE, height=SIZE)
    transparent, sixteen = poses.frames
    assert transparent[0, 0].tolist() == [0, 0, 0] and (transparent.max(axis=2) == 0).mean() > 0.9
    assert transparent[30, 31].tolist() == [255, 0, 85]
    assert sixteen[30, 21].tolist() == [156, 156, 156] and sixteen[0, 0].tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------------------------ untagged MMPose videos (item 15)


@pytest.fixture(scope="module")
def carphone_poses(tmp_path_factory):
    """``pose-data extract-poses`` on the bundled driving video (real MediaPipe), drawn in the MMPose style."""
    out = tmp_path_factory.mktemp("extract")
    proc = subprocess.run([str(Path(sys.executable).parent / "pose-data"), "extract-poses", str(CARPHONE), "--output", str(out),
                           "--config", "tiny", "--pose-backend", "mediapipe", "--skeleton-style", "mmpose", "--no-progress"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "carphone"


def test_untagged_mmpose_skeleton_videos_are_skeleton_videos_and_dark_real_videos_are_not(carphone_poses, tmp_path):
    """MMPose's 1-pixel lines at 176x144 lose most of their colour to MPEG-4 (in some frames all but the blue head and
    torso): without the extract-poses tag such a video must still read as skeletons, wherever it starts."""
    pytest.importorskip("mmpose.visualization", reason="mmpose (with mmcv) is not installed")
    from pose_data.extract_poses.sequence import read_pose_sequence

    skeletons = list(read_pose_sequence(carphone_poses / "keypoints.parquet").skeletons("mmpose"))
    assert len(skeletons) == 32 and skeletons[0].shape == (144, 176, 3)
    for start in (0, 4, 8, 12):
        video = write_raw_video(tmp_path / f"from_{start}.mp4", skeletons[start:], codec="mpeg4")
        with av.open(str(video)) as container:
            assert "comment" not in container.metadata
        assert detect_kind(video) == "skeleton_video", f"the MMPose skeletons from frame {start} on"
    for source, name in ((CARPHONE, "carphone"), (BIKES, "bikes")):  # real videos, darkened, stay driving videos
        with av.open(str(source)) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(48), container.decode(video=0))]
        for gain, gamma in ((0.2, 1), (0.2, 3), (0.35, 3)):
            dark = tmp_path / f"dark_{name}_{gain}_{gamma}.mp4"
            with Mp4Writer(dark, 25, preset="ultrafast") as writer:
                for f in frames:
                    writer.add(np.clip((f / 255.0) ** gamma * 255 * gain, 0, 255).astype(np.uint8))
            assert detect_kind(dark) == "driving_video", dark.name


# ------------------------------------------------------------------------------------------------ fyp-generate refusals (items 10, 15)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny SD base and an openpose-style pose encoder (initial video layers)."""
    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base

    root = tmp_path_factory.mktemp("gen")
    base = make_tiny_base(root / "tiny-sd", seed=0)
    torch.manual_seed(0)
    PoseEncoder.for_unet(load_base_model(base).unet, skeleton_style="openpose").save_pretrained(root / "pose_encoder")
    return {"base": str(base), "pose_encoder": str(root / "pose_encoder")}


def bad_source(case: str, tmp_path: Path) -> tuple[Path, Path]:
    """(the pose source to pass, the file the message must name)."""
    folder = tmp_path / "frames"
    if case in ("bomb_png", "thin_png", "strip_png"):
        folder.mkdir()
        Image.fromarray(skeleton_like(SIZE, SIZE)).save(folder / "0.png")
        bad = folder / "1.png"
        if case == "bomb_png":
            png_declaring(bad, 20000, 20000)
        else:
            Image.fromarray(np.zeros((20000 if case == "thin_png" else 1000, 1, 3), np.uint8)).save(bad)
        return folder, bad
    if case in ("far_keypoints", "huge_canvas", "list_metadata", "broken_metadata"):
        path = tmp_path / "keypoints.parquet"
        if case == "far_keypoints":
            write_keypoints(path, rows=2, person=[[3e38, 3e38, 1.0]] * 17)
        elif case == "huge_canvas":
            write_keypoints(path, width=100000, height=100000)
        else:
            write_keypoints(path, metadata=b'["openpose", 0.3]' if case == "list_metadata" else b'{"skeleton_style": openpose}')
        return path, path
    frames = [skeleton_like(SIZE, SIZE, i) for i in range(8)]
    comment = {"broken_comment": '{"format": "fyp-skeleton-video", "skeleton_style": "openpose"',
               "list_comment": '["fyp-skeleton-video", "openpose"]',
               "style_comment": '{"format": "fyp-skeleton-video", "skeleton_style": 5}'}[case]  # fmt: skip
    path = write_raw_video(tmp_path / "skeleton.mp4", frames, comment=comment)
    return path, path


@pytest.mark.parametrize(
    "case, expected",
    [
        ("bomb_png", "20000x20000 pixels: a side is longer than 16384"),
        ("thin_png", "1x20000 pixels: a side is longer than 16384"),
        ("strip_png", "1x1000 pixels: one side is more than 16 times the other"),
        ("far_keypoints", "row 0 has a keypoint at (3e+38, 3e+38); coordinates must be pixels within 1e+06 of the origin"),
        ("huge_canvas", "row 0 asks for a canvas of 100000x100000 pixels"),
        ("list_metadata", "its fyp_pose_sequence metadata must be a JSON object, got list"),
        ("broken_metadata", "its fyp_pose_sequence metadata is not valid JSON"),
        ("broken_comment", "its comment tag mentions 'fyp-' (this project's tags) but is not valid JSON"),
        ("list_comment", "its comment tag mentions 'fyp-' (this project's tags) but is a JSON list"),
        ("style_comment", "its comment tag records skeleton_style 5, not one of openpose, mmpose"),
    ],
)
def test_files_with_sizes_or_metadata_out_of_bounds_are_one_line_errors(parts, tmp_path, capsys, case, expected):
    source, named = bad_source(case, tmp_path)
    out = tmp_path / "o.mp4"
    code = generate_main(["--base", parts["base"], "--pose-encoder", parts["pose_encoder"], "--pose", str(source), "--prompt", "a",
                          "--output", str(out), "--steps", "1", "--height", str(SIZE), "--width", str(SIZE), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fyp-generate: error:"), err
    assert expected in lines[0] and str(named) in lines[0], lines[0]
    assert not out.exists()
