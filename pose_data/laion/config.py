"""Configuration of ``pose-data build-laion-pose``: every default in one place.

Presets live in ``pose_data/configs/`` (``laion_pose.yaml`` for a GPU cluster, ``laion_pose-tiny.yaml``
for a laptop CPU); ``--config`` takes a preset name or a YAML path, flags override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pose_data.config import load_preset_or_file
from pose_data.pose.estimator import MMPOSE_BACKENDS, PoseModelConfig
from pose_data.pose.filtering import FilterConfig, check_whole_body_options
from pose_data.skeleton.render import SKELETON_STYLES

RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")


@dataclass
class InputConfig:
    """How INPUT metadata files are read and cut into shards (the unit of work and of resume)."""

    url_col: str = "URL"
    caption_col: str = "TEXT"
    shard_size: int = 1000  # input rows per output shard


@dataclass
class DownloadConfig:
    """Options passed to img2dataset's downloader and resizer."""

    image_size: int = 512
    resize_mode: str = "keep_ratio"  # img2dataset's: no, border, keep_ratio, keep_ratio_largest, center_crop
    resize_only_if_bigger: bool = True
    encode_quality: int = 95
    threads: int = 16  # download threads per download task
    processes: int = 1  # download tasks running at once (each its own Ray task)
    timeout: int = 10  # seconds per request
    retries: int = 0
    # pixels; bigger originals are refused from their header (decompression bombs). A task decodes one image at a
    # time at ~6 bytes per pixel (bench/download_memory.py), so 40 MP bounds that to ~230 MiB; LAION originals
    # above it (8000 x 5000 and more) are rare and are resized to image_size anyway
    max_image_area: float = 40_000_000.0
    user_agent_token: str | None = None
    respect_robots_headers: bool = True  # honour X-Robots-Tag noai/noimageai/noindex/noimageindex
    # network safety (pose_data.http.safe_http): only public addresses, bodies up to max_image_bytes, a total deadline
    allow_private_addresses: bool = False  # True only to serve images locally (the demo, tests)
    max_image_bytes: int = 20 * 2**20  # 20 MiB: any real web photo; bigger bodies are download_failed
    deadline: float = 60.0  # seconds per request in total (timeout is per socket read)


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join a cluster
    num_pose_workers: int = 1  # pose actors (one model load each)
    pose_worker_cpus: float = 1.0  # CPUs reserved per pose actor (also its torch threads)
    pose_worker_gpus: float | None = None  # None: 1 when pose.device is cuda, else 0
    max_shards_in_flight: int | None = None  # None: 2 * num_pose_workers + processes


@dataclass
class LaionPoseConfig:
    input: InputConfig = field(default_factory=InputConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    pose: PoseModelConfig = field(default_factory=PoseModelConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    skeleton_style: str = "openpose"
    ray: RayConfig = field(default_factory=RayConfig)
    preview_images: int = 16  # kept images on DIR/preview.png (0: no preview)

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        if self.skeleton_style not in SKELETON_STYLES:
            raise ValueError(f"skeleton_style {self.skeleton_style!r} is not one of {', '.join(SKELETON_STYLES)}")
        check_whole_body_options(self.pose.backend, self.filter, self.skeleton_style)
        if self.download.resize_mode not in RESIZE_MODES:
            raise ValueError(f"download.resize_mode {self.download.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        for name, value in (
            ("input.shard_size", self.input.shard_size),
            ("download.image_size", self.download.image_size),
            ("download.threads", self.download.threads),
            ("download.processes", self.download.processes),
            ("download.timeout", self.download.timeout),
            ("download.max_image_bytes", self.download.max_image_bytes),
            ("download.deadline", self.download.deadline),
            ("ray.num_pose_workers", self.ray.num_pose_workers),
            ("pose.batch_size", self.pose.batch_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.pose.validate()
        # model names, config files and local weights, before any work starts; on a cluster the workers' files
        # and packages may differ from the driver's, and the actors' own load check (before any download) decides
        if self.pose.backend in MMPOSE_BACKENDS and self.ray.address is None:
            from pose_data.pose.backends import check_model_settings

            check_model_settings(self.pose)
        self.filter.validate()

    @property
    def shards_in_flight(self) -> int:
        return self.ray.max_shards_in_flight or 2 * self.ray.num_pose_workers + self.download.processes

    @property
    def pose_worker_gpus(self) -> float:
        if self.ray.pose_worker_gpus is not None:
            return self.ray.pose_worker_gpus
        return 1.0 if self.pose.device.startswith("cuda") else 0.0


PRESETS = ("laion_pose", "laion_pose-tiny")


def preset_or_file(name_or_path: str) -> dict:
    """A preset name (``laion_pose``, ``laion_pose-tiny``, or ``tiny``) or a YAML path -> dict."""
    return load_preset_or_file("laion_pose-tiny" if name_or_path == "tiny" else name_or_path, package="pose_data", presets=PRESETS)
