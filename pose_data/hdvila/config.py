"""Configuration of ``pose-data index-hdvila``: every default in one place (the captioner's in
:class:`pose_data.hdvila.captioner.CaptionConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pose_data.config import load_preset_or_file
from pose_data.hdvila.captioner import CaptionConfig


@dataclass
class ClipFilterConfig:
    """Decoded clips outside these bounds are ``too_short`` (duration, frames) or ``filtered``."""

    min_duration: float = 0.0  # seconds of decoded video
    max_duration: float | None = None
    min_frames: int = 1
    min_resolution: int = 0  # shorter side of the decoded frames, pixels
    # the most frames decoded for one clip (20 min at 30 fps; HD-VILA clips last about 13 s): decoding stops
    # there and the clip is filtered, so a huge span or an absurd frame rate cannot hold a worker for hours
    max_frames: int = 36_000

    def validate(self) -> None:
        if self.min_duration < 0 or self.min_frames < 0 or self.min_resolution < 0:
            raise ValueError("filter.min_duration, min_frames and min_resolution must be >= 0")
        if self.max_frames < max(1, self.min_frames):
            raise ValueError(f"filter.max_frames must be >= 1 and >= min_frames, got {self.max_frames}")
        if self.max_duration is not None and self.max_duration < self.min_duration:
            raise ValueError(f"filter.max_duration {self.max_duration} < min_duration {self.min_duration}")


@dataclass
class ClipOutputConfig:
    """``--write-clips``: training shards of re-encoded clips (or of sampled frames with ``frames``)."""

    write_clips: bool = False
    size: int | None = None  # shorter side in pixels; None keeps the source size
    square: bool = False  # centre-crop to a square after resizing
    fps: float | None = None  # None keeps the source frame rate
    crf: int = 23  # libx264 quality
    frames: int | None = None  # write this many JPEG frames per clip instead of an mp4
    stride: int = 1  # with frames: keep every stride-th decoded frame


@dataclass
class HdvilaIndexConfig:
    shard_size: int = 100  # clips per index shard (the unit of work and of resume)
    clip_spans_to_video: bool = False  # a span running past the video's end: clip it (recorded) instead of span_out_of_range
    download: bool = False  # fetch missing videos with yt-dlp into VIDEOS/_downloaded
    download_timeout: int = 60
    # --download guards (pose_data.hdvila.video_download): public addresses only, bounded size and duration, no live streams
    allow_private_addresses: bool = False  # True only to serve videos locally (tests)
    max_video_bytes: int = 2 * 2**30
    max_video_duration: float = 2 * 3600.0  # seconds
    filter: ClipFilterConfig = field(default_factory=ClipFilterConfig)
    clips: ClipOutputConfig = field(default_factory=ClipOutputConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)  # --caption-model: captions from a video VLM
    ray_address: str | None = None
    preview_clips: int = 12  # kept clips on OUT/preview.png (first, middle, last frame each)

    def validate(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        self.filter.validate()
        c = self.clips
        if c.size is not None and (c.size < 16 or c.size % 2):
            raise ValueError(f"clips.size must be an even number >= 16 (H.264 yuv420p), got {c.size}")
        if c.fps is not None and c.fps <= 0:
            raise ValueError(f"clips.fps must be > 0, got {c.fps}")
        if c.frames is not None and c.frames < 1:
            raise ValueError(f"clips.frames must be >= 1, got {c.frames}")
        if c.stride < 1:
            raise ValueError(f"clips.stride must be >= 1, got {c.stride}")
        self.caption.validate()


PRESETS = ("hdvila_index", "hdvila_index-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``hdvila_index``, ``hdvila_index-tiny`` or ``tiny``) or a YAML path -> dict."""
    return load_preset_or_file("hdvila_index-tiny" if name_or_path == "tiny" else name_or_path, package="pose_data", presets=PRESETS)
