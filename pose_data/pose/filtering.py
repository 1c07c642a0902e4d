"""Keep or reject an image by its size and by the persons a pose backend found in it.

Two steps, in pipeline order:

1. :func:`check_image_size` before pose inference (no compute spent on thumbnails):
   shorter side < ``min_image_size`` -> ``too_small``.
2. :func:`filter_persons` on the backend's detections, in this order:

   a. detections whose bbox covers less than ``min_person_area`` of the image are background
      people and are ignored entirely (neither kept nor counted);
   b. of the rest, persons with fewer than ``min_keypoints`` keypoints scoring at least
      ``min_keypoint_score`` are dropped;
   c. no detection at all, or only background-sized ones -> ``no_person``;
      detections but none left after (b) -> ``low_confidence``;
      more than ``max_persons`` left -> ``too_many_persons``;
      otherwise ``ok`` with the persons left, in the backend's order;
   d. with ``min_hand_keypoints`` set (whole-body backends): an image whose kept persons have no
      hand with that many keypoints scoring at least ``min_keypoint_score`` -> ``no_hand``.

   Persons dropped in (b) are not counted against ``max_persons`` and are absent from the
   result, although they are visible in the image: the skeleton then shows fewer people than
   the photo. ``min_keypoints`` is the knob that trades this against recall.

Statuses are the strings of the output parquet; ``error`` says why in words, with the numbers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from pose_data.pose.estimator import WHOLE_BODY_BACKENDS
from pose_data.pose.keypoints import NUM_HAND_POINTS, NUM_KEYPOINTS, PersonPose
from pose_data.statuses import LOW_CONFIDENCE as STATUS_LOW_CONFIDENCE
from pose_data.statuses import NO_HAND as STATUS_NO_HAND
from pose_data.statuses import NO_PERSON as STATUS_NO_PERSON
from pose_data.statuses import OK as STATUS_OK
from pose_data.statuses import TOO_MANY_PERSONS as STATUS_TOO_MANY_PERSONS
from pose_data.statuses import TOO_SMALL as STATUS_TOO_SMALL

log = logging.getLogger(__name__)


@dataclass
class FilterConfig:
    """Thresholds of the person filter (plain values; lives in the YAML config under ``filter``).

    min_keypoint_score: a keypoint counts as confident when its score is >= this; ``None`` means
        the pose backend's default, which the caller resolves (scores are backend-specific:
        MediaPipe visibilities lie in [0, 1], RTMPose SimCC scores can exceed 1).
    min_keypoints: confident keypoints (of 17) a person needs to be kept.
    min_person_area: bbox area as a fraction of the image area under which a detection is a
        background person and ignored (0 ignores none).
    max_persons: most persons an accepted image may hold.
    min_image_size: shorter image side in pixels under which the image is ``too_small``.
    min_hand_keypoints: None (off), or the confident points (of 21) that at least one hand of the
        kept persons needs, for a hands-rich subset; needs a whole-body backend (body-only backends
        find no hands, so every image would be ``no_hand``).
    """

    min_keypoint_score: float | None = None
    min_keypoints: int = 8
    min_person_area: float = 0.0
    max_persons: int = 3
    min_image_size: int = 256
    min_hand_keypoints: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for a value that makes no sense."""
        if self.min_keypoint_score is not None:
            _check_number("min_keypoint_score", self.min_keypoint_score, "a finite number >= 0 or None", 0.0, math.inf)
        _check_int("min_keypoints", self.min_keypoints, 1, NUM_KEYPOINTS)
        _check_number("min_person_area", self.min_person_area, "a fraction in [0, 1]", 0.0, 1.0)
        _check_int("max_persons", self.max_persons, 1, None)
        _check_int("min_image_size", self.min_image_size, 0, None)
        if self.min_hand_keypoints is not None:
            _check_int("min_hand_keypoints", self.min_hand_keypoints, 1, NUM_HAND_POINTS)


@dataclass
class FilterResult:
    """The verdict for one image: ``status`` (see the module docstring), ``error`` in words
    (None when ok), and the persons kept (empty unless ok)."""

    status: str
    error: str | None
    persons: list[PersonPose] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def check_whole_body_options(backend: str, cfg: FilterConfig, skeleton_style: str) -> None:
    """Before any work: ValueError for ``min_hand_keypoints`` with a body-only backend (every image would end
    ``no_hand``), a warning for the ``openpose_full`` style with one (its skeletons would have no hands or face, yet an
    encoder trained on them would record ``openpose_full``)."""
    if backend in WHOLE_BODY_BACKENDS:
        return
    if cfg.min_hand_keypoints is not None:
        raise ValueError(f"filter.min_hand_keypoints needs a pose backend that finds hands ({' or '.join(WHOLE_BODY_BACKENDS)}); "
                         f"pose.backend {backend!r} finds bodies only, so every image would be {STATUS_NO_HAND}")
    if skeleton_style == "openpose_full":
        log.warning("skeleton style openpose_full draws hands and faces, but pose backend %s finds bodies only: the skeletons "
                    "will show bodies alone (use %s)", backend, " or ".join(WHOLE_BODY_BACKENDS))


def check_image_size(width: int, height: int, cfg: FilterConfig) -> FilterResult | None:
    """``too_small`` when the shorter side is below ``cfg.min_image_size``, else None (go on)."""
    shorter = min(width, height)
    if shorter < cfg.min_image_size:
        return FilterResult(
            STATUS_TOO_SMALL,
            f"image {width}x{height} is too small: shorter side {shorter} < min_image_size {cfg.min_image_size}",
        )
    return None


def filter_persons(
    persons: list[PersonPose],
    width: int,
    height: int,
    cfg: FilterConfig,
    min_keypoint_score: float,
) -> FilterResult:
    """Apply steps (a)-(c) of the module docstring to one image's detections.

    ``width`` x ``height`` is the size of the image the keypoints are in (pixels);
    ``min_keypoint_score`` is ``cfg.min_keypoint_score`` with ``None`` already resolved to the
    backend's default.
    """
    _check_number("min_keypoint_score", min_keypoint_score, "a finite number >= 0", 0.0, math.inf)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    image_area = float(width) * float(height)
    thr = _format_threshold(min_keypoint_score)

    if not persons:
        return FilterResult(STATUS_NO_PERSON, "no person detected")

    foreground = [p for p in persons if p.area / image_area >= cfg.min_person_area]
    if not foreground:
        largest = max(p.area for p in persons) / image_area
        return FilterResult(
            STATUS_NO_PERSON,
            f"{_count(len(persons))} detected, all background-sized: largest bbox covers "
            f"{largest:.4f} of the image < min_person_area {cfg.min_person_area:g}",
        )

    counts = [p.num_confident(min_keypoint_score) for p in foreground]
    kept = [p for p, n in zip(foreground, counts) if n >= cfg.min_keypoints]
    if not kept:
        return FilterResult(
            STATUS_LOW_CONFIDENCE,
            f"{_count(len(foreground))} detected{_background_note(len(persons) - len(foreground))}, "
            f"best has {max(counts)} keypoints >= {thr}, need {cfg.min_keypoints}",
        )

    if len(kept) > cfg.max_persons:
        return FilterResult(
            STATUS_TOO_MANY_PERSONS,
            f"{_count(len(kept))} with >= {cfg.min_keypoints} keypoints >= {thr}, max_persons {cfg.max_persons}",
        )

    if cfg.min_hand_keypoints is not None:
        hands = [hand for p in kept for hand in (p.hand_left, p.hand_right) if hand is not None]
        best = max((int((hand[:, 2] >= min_keypoint_score).sum()) for hand in hands), default=0)
        if best < cfg.min_hand_keypoints:
            found = f"best hand has {best} keypoints >= {thr}" if hands else "no hand found"
            return FilterResult(
                STATUS_NO_HAND,
                f"{_count(len(kept))} kept, {found}, min_hand_keypoints {cfg.min_hand_keypoints}",
            )

    return FilterResult(STATUS_OK, None, kept)


def _format_threshold(value: float) -> str:
    """0.3 -> "0.30", 0.125 -> "0.125", 2 -> "2.00": two decimals unless that would round."""
    return f"{value:.2f}" if round(value, 2) == value else f"{value:g}"


def _count(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} persons"


def _background_note(n_background: int) -> str:
    return f" (and {n_background} background-sized ignored)" if n_background else ""


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")


def _check_number(name: str, value: object, what: str, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {what}, got {value}")
