"""The per-video settings of ``fyp-generate``: :class:`VideoSettings`, their checks, and :func:`settings_from`.

Flags set them for every video, a line of the ``--prompts`` JSONL for its own video. JSONL values are untyped, so
every value is checked for its type and range, and an error names the setting (``--the-flag`` for a flag).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from pose_data.extract_poses.sequence import DEFAULT_POSE_FPS


@dataclass
class VideoSettings:
    """Every per-video setting and its default (flags set them for all videos, a JSONL line for its own)."""

    negative_prompt: str = ""
    num_frames: int | None = None  # default: every pose frame the source gives at --fps
    window: int = 8  # T: frames per sampling window (advancing by T/2)
    steps: int = 50  # DDIM steps (official: 50)
    guidance: float = 12.5  # classifier-free guidance scale (official: 12.5)
    seed: int | None = None  # default: a random seed, recorded in the sidecar
    height: int | None = None  # default: the base model's size (512 for SD 1.x)
    width: int | None = None
    fps: float = DEFAULT_POSE_FPS  # pose sampling rate and output frame rate (extract-poses' default rate too)
    frame_stride: int | None = None  # instead of --fps: every K-th pose frame (played at --fps)
    pose_scale: float = 1.0  # strength of the pose residuals (0: the model without pose, exactly)
    side_by_side: bool = False  # skeleton | generated frame
    source_kind: str = "auto"  # auto, skeleton_video, skeleton_frames, keypoints, driving_video
    skeleton_style: str | None = None  # the style the pose source is drawn in / should be drawn in
    allow_style_mismatch: bool = False
    pose_backend: str = "mmpose"  # for a driving video: mmpose, mediapipe, mmpose-wholebody or mediapipe-holistic


    def validate(self, where: str = "", *, as_flags: bool = False) -> None:
        """ValueError naming the setting (``--the-flag`` when ``as_flags``) for a value of the wrong type or out of
        range (JSONL values are untyped)."""
        from model.generation.follow_your_pose_pipeline import MAX_SIZE
        from model.generation.pose_source import KINDS
        from pose_data.pose.estimator import BACKENDS
        from pose_data.skeleton.render import SKELETON_STYLES

        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith("| None"):
                continue
            ok = {
                "bool": isinstance(value, bool),
                "str": isinstance(value, str), "str | None": isinstance(value, str),
                "int": isinstance(value, int) and not isinstance(value, bool),
                "int | None": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            }[kind]  # fmt: skip
            if not ok:
                what = {"bool": "true or false", "float": "a finite number"}.get(kind, "an integer" if "int" in kind else "a string")
                raise ValueError(f"{where}{_setting_name(f.name, as_flags)} must be {what}, got {value!r}")
        size_range = f"in [1, {MAX_SIZE}] pixels (a multiple of the pose encoder's downscale)"
        checks = [
            ("num_frames", self.num_frames is None or self.num_frames >= 1, ">= 1"),
            ("window", self.window >= 2, ">= 2 (it advances by window // 2)"),
            ("steps", self.steps >= 1, ">= 1"),
            ("seed", self.seed is None or 0 <= self.seed < 2**63, "in [0, 2**63)"),
            ("height", self.height is None or 1 <= self.height <= MAX_SIZE, size_range),
            ("width", self.width is None or 1 <= self.width <= MAX_SIZE, size_range),
            ("fps", 0.1 <= self.fps <= 1000, "in [0.1, 1000] (every frame of the source: --frame-stride 1)"),
            ("frame_stride", self.frame_stride is None or self.frame_stride >= 1, ">= 1"),
            ("source_kind", self.source_kind in KINDS, f"one of {', '.join(KINDS)}"),
            ("skeleton_style", self.skeleton_style is None or self.skeleton_style in SKELETON_STYLES, f"one of {', '.join(SKELETON_STYLES)}"),
            ("pose_backend", self.pose_backend in BACKENDS, f"one of {', '.join(BACKENDS)}"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"{where}{_setting_name(name, as_flags)} must be {what}, got {getattr(self, name)!r}")


def _setting_name(name: str, as_flag: bool) -> str:
    return "--" + name.replace("_", "-") if as_flag else name


def settings_from(values: dict, base: VideoSettings | None = None, where: str = "", *, as_flags: bool = False) -> VideoSettings:
    """``base`` with ``values`` (keys with - or _) replacing its fields; ValueError naming unknown keys."""
    values = {k.replace("-", "_"): v for k, v in values.items() if v is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(VideoSettings)})
    if unknown:
        raise ValueError(f"{where}unknown setting(s) {', '.join(unknown)}")
    settings = dataclasses.replace(base or VideoSettings(), **values)
    settings.validate(where, as_flags=as_flags)
    return settings
