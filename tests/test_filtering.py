"""The person filter: every status branch, at the boundaries of every threshold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from pose_data.pose.filtering import (
    STATUS_LOW_CONFIDENCE,
    STATUS_NO_HAND,
    STATUS_NO_PERSON,
    STATUS_OK,
    STATUS_TOO_MANY_PERSONS,
    STATUS_TOO_SMALL,
    FilterConfig,
    FilterResult,
    check_image_size,
    filter_persons,
)
from pose_data.pose.keypoints import PersonPose

W, H = 1000, 800  # image size used by most tests; area 800,000


def person(n_confident: int, score: float = 0.9, *, low: float = 0.1, box: tuple = (100, 100, 500, 700)) -> PersonPose:
    """A person whose first ``n_confident`` keypoints score ``score`` and the rest ``low``."""
    kps = np.zeros((17, 3), np.float32)
    x0, y0, x1, y1 = box
    kps[:, 0] = np.linspace(x0, x1, 17)
    kps[:, 1] = np.linspace(y0, y1, 17)
    kps[:, 2] = low
    kps[:n_confident, 2] = score
    return PersonPose(bbox=box, score=0.95, keypoints=kps)


def box_with_area_fraction(fraction: float) -> tuple[float, float, float, float]:
    """A box whose area is ``fraction`` of W x H: full width, height fraction * H."""
    return (0.0, 0.0, float(W), fraction * H)


# --- check_image_size --------------------------------------------------------------------------


def test_check_image_size_boundary():
    cfg = FilterConfig(min_image_size=256)
    assert check_image_size(256, 256, cfg) is None
    assert check_image_size(256, 4000, cfg) is None
    res = check_image_size(255, 4000, cfg)
    assert isinstance(res, FilterResult)
    assert res.status == STATUS_TOO_SMALL and res.persons == [] and not res.ok
    assert res.error == "image 255x4000 is too small: shorter side 255 < min_image_size 256"
    res = check_image_size(1024, 200, cfg)
    assert res.status == STATUS_TOO_SMALL
    assert "1024x200" in res.error and "shorter side 200 < min_image_size 256" in res.error


def test_check_image_size_zero_disables():
    assert check_image_size(1, 1, FilterConfig(min_image_size=0)) is None


# --- filter_persons: no_person -----------------------------------------------------------------


def test_no_detection_is_no_person():
    res = filter_persons([], W, H, FilterConfig(), 0.3)
    assert (res.status, res.error, res.persons) == (STATUS_NO_PERSON, "no person detected", [])


def test_area_fraction_boundary_is_inclusive():
    cfg = FilterConfig(min_person_area=0.05)
    at = person(17, box=box_with_area_fraction(0.05))  # 1000 x 40 = 40,000 = 0.05 of 800,000
    assert at.area == pytest.approx(40_000)
    res = filter_persons([at], W, H, cfg, 0.3)
    assert res.status == STATUS_OK and res.persons == [at]

    below = person(17, box=(0.0, 0.0, 1000.0, 39.9))  # 39,900 / 800,000 = 0.049875
    res = filter_persons([below], W, H, cfg, 0.3)
    assert res.status == STATUS_NO_PERSON
    assert res.error == (
        "1 person detected, all background-sized: largest bbox covers 0.0499 of the image < min_person_area 0.05"
    )


def test_only_background_people_is_no_person_even_when_confident():
    cfg = FilterConfig(min_person_area=0.1)
    crowd = [person(17, box=(i * 50, 0, i * 50 + 40, 100)) for i in range(5)]  # 4,000 px each = 0.005
    res = filter_persons(crowd, W, H, cfg, 0.3)
    assert res.status == STATUS_NO_PERSON
    assert res.error.startswith("5 persons detected, all background-sized: largest bbox covers 0.0050")


def test_zero_min_person_area_keeps_degenerate_boxes():
    flat = person(17, box=(10, 10, 10, 10))  # zero area
    res = filter_persons([flat], W, H, FilterConfig(min_person_area=0.0), 0.3)
    assert res.status == STATUS_OK and res.persons == [flat]


# --- filter_persons: low_confidence ------------------------------------------------------------


def test_min_keypoints_boundary():
    cfg = FilterConfig(min_keypoints=8)
    exactly = person(8, score=0.3)  # 8 keypoints at exactly the threshold count
    res = filter_persons([exactly], W, H, cfg, 0.3)
    assert res.status == STATUS_OK and res.persons == [exactly] and res.error is None and res.ok

    res = filter_persons([person(7, score=0.3), person(5, score=0.9)], W, H, cfg, 0.3)
    assert res.status == STATUS_LOW_CONFIDENCE and res.persons == []
    assert res.error == "2 persons detected, best has 7 keypoints >= 0.30, need 8"


def test_score_just_below_threshold_does_not_count():
    res = filter_persons([person(17, score=0.2999, low=0.0)], W, H, FilterConfig(min_keypoints=1), 0.3)
    assert res.status == STATUS_LOW_CONFIDENCE
    assert res.error == "1 person detected, best has 0 keypoints >= 0.30, need 1"


def test_float32_scores_equal_to_threshold_count():
    # 0.7 is not exact in float32 (0.69999999); stored scores equal to the threshold must still count.
    res = filter_persons([person(8, score=0.7, low=0.0)], W, H, FilterConfig(min_keypoints=8), 0.7)
    assert res.status == STATUS_OK


def test_scores_above_one_rtmpose_style():
    # RTMPose SimCC scores are not probabilities; a threshold above 1 is legitimate.
    p = person(9, score=3.2, low=0.8)
    assert filter_persons([p], W, H, FilterConfig(min_keypoints=9), 3.2).status == STATUS_OK
    res = filter_persons([p], W, H, FilterConfig(min_keypoints=10), 3.2)
    assert res.error == "1 person detected, best has 9 keypoints >= 3.20, need 10"


def test_low_confidence_mentions_ignored_background():
    cfg = FilterConfig(min_person_area=0.01, min_keypoints=8)
    big_blurry = person(3, box=(0, 0, 500, 500))
    tiny_sharp = person(17, box=(0, 0, 10, 10))  # background: ignored even though confident
    res = filter_persons([big_blurry, tiny_sharp], W, H, cfg, 0.5)
    assert res.status == STATUS_LOW_CONFIDENCE
    assert res.error == "1 person detected (and 1 background-sized ignored), best has 3 keypoints >= 0.50, need 8"


def test_threshold_formatting_keeps_precision():
    res = filter_persons([person(2, score=0.125)], W, H, FilterConfig(min_keypoints=8), 0.125)
    assert res.error == "1 person detected, best has 2 keypoints >= 0.125, need 8"


# --- filter_persons: too_many_persons and ok ---------------------------------------------------


def test_max_persons_boundary():
    cfg = FilterConfig(max_persons=3)
    three = [person(17) for _ in range(3)]
    res = filter_persons(three, W, H, cfg, 0.3)
    assert res.status == STATUS_OK
    assert [id(p) for p in res.persons] == [id(p) for p in three]  # same objects, backend order

    res = filter_persons([person(17) for _ in range(4)], W, H, cfg, 0.3)
    assert res.status == STATUS_TOO_MANY_PERSONS and res.persons == []
    assert res.error == "4 persons with >= 8 keypoints >= 0.30, max_persons 3"


def test_dropped_and_background_persons_do_not_count_towards_max():
    cfg = FilterConfig(max_persons=1, min_keypoints=8, min_person_area=0.02)
    main = person(12, box=(100, 100, 600, 700))  # 300,000 px = 0.375
    blurry = person(4, box=(600, 100, 900, 700))  # foreground, too few keypoints: dropped
    far_away = person(17, box=(0, 0, 100, 100))  # 10,000 px = 0.0125 < 0.02: background
    res = filter_persons([blurry, main, far_away], W, H, cfg, 0.3)
    assert res.status == STATUS_OK and res.persons == [main]


def test_kept_persons_keep_their_keypoints():
    p = person(10, score=0.8)
    res = filter_persons([p], W, H, FilterConfig(), 0.5)
    np.testing.assert_array_equal(res.persons[0].keypoints, p.keypoints)
    assert res.persons[0].keypoints.shape == (17, 3)


# --- argument and config validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("min_keypoint_score", -0.1),
        ("min_keypoint_score", float("nan")),
        ("min_keypoint_score", float("inf")),
        ("min_keypoint_score", "0.3"),
        ("min_keypoints", 0),
        ("min_keypoints", 18),
        ("min_keypoints", 8.0),
        ("min_keypoints", True),
        ("min_person_area", -0.01),
        ("min_person_area", 1.5),
        ("max_persons", 0),
        ("max_persons", -2),
        ("min_image_size", -1),
        ("min_image_size", 256.5),
        ("min_hand_keypoints", 0),
        ("min_hand_keypoints", 22),
        ("min_hand_keypoints", 5.0),
    ],
)
def test_config_rejects_nonsense_naming_the_field(field_name, value):
    with pytest.raises(ValueError, match=field_name):
        FilterConfig(**{field_name: value})


def test_validate_catches_later_mutation():
    cfg = FilterConfig()
    cfg.max_persons = 0
    with pytest.raises(ValueError, match="max_persons must be an integer >= 1, got 0"):
        cfg.validate()


def test_config_extremes_are_valid():
    cfg = FilterConfig(
        min_keypoint_score=5.0, min_keypoints=17, min_person_area=1.0, max_persons=1, min_image_size=0
    )
    assert cfg.min_keypoints == 17
    assert FilterConfig().min_keypoint_score is None


def test_config_round_trips_through_yaml_as_plain_values():
    cfg = FilterConfig(min_keypoint_score=0.3, min_keypoints=10, min_person_area=0.02, max_persons=2, min_image_size=384)
    text = yaml.safe_dump(dataclasses.asdict(cfg))
    assert FilterConfig(**yaml.safe_load(text)) == cfg


def test_filter_persons_rejects_unresolved_threshold_and_bad_size():
    with pytest.raises(ValueError, match="min_keypoint_score"):
        filter_persons([person(17)], W, H, FilterConfig(), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image size must be positive, got 0x800"):
        filter_persons([person(17)], 0, H, FilterConfig(), 0.3)


# --- min_hand_keypoints (hands-rich subsets from a whole-body backend) ---------------------------


def hand(n_confident: int, score: float = 0.9, low: float = 0.1) -> np.ndarray:
    """(21, 3) hand whose first ``n_confident`` points score ``score`` and the rest ``low``."""
    points = np.zeros((21, 3), np.float32)
    points[:, :2] = 300.0
    points[:, 2] = low
    points[:n_confident, 2] = score
    return points


def with_hands(p: PersonPose, left: np.ndarray | None = None, right: np.ndarray | None = None) -> PersonPose:
    return dataclasses.replace(p, hand_left=left, hand_right=right)


def test_min_hand_keypoints_off_by_default_ignores_hands():
    assert FilterConfig().min_hand_keypoints is None
    assert filter_persons([person(17)], W, H, FilterConfig(), 0.3).status == STATUS_OK  # no hands, still ok


def test_min_hand_keypoints_boundary_on_the_best_hand_of_any_kept_person():
    cfg = FilterConfig(min_hand_keypoints=10)
    two = [with_hands(person(17), left=hand(4)), with_hands(person(17, box=(0, 0, 400, 400)), right=hand(10))]
    result = filter_persons(two, W, H, cfg, 0.3)
    assert result.status == STATUS_OK and len(result.persons) == 2
    assert result.persons[1].hand_right is not None  # parts travel with the kept persons
    result = filter_persons([with_hands(person(17), left=hand(9), right=hand(9))], W, H, cfg, 0.3)
    assert result.status == STATUS_NO_HAND and result.persons == []
    assert result.error == "1 person kept, best hand has 9 keypoints >= 0.30, min_hand_keypoints 10"


def test_min_hand_keypoints_uses_the_keypoint_threshold_and_counts_only_kept_persons():
    cfg = FilterConfig(min_hand_keypoints=21)
    assert filter_persons([with_hands(person(17), left=hand(21, score=0.5))], W, H, cfg, 0.5).status == STATUS_OK
    assert filter_persons([with_hands(person(17), left=hand(21, score=0.4999))], W, H, cfg, 0.5).status == STATUS_NO_HAND
    # a person dropped for too few body keypoints does not lend the image its hand
    dropped = with_hands(person(2, box=(0, 0, 400, 400)), left=hand(21))
    result = filter_persons([person(17), dropped], W, H, dataclasses.replace(cfg, min_keypoints=8), 0.3)
    assert result.status == STATUS_NO_HAND and result.error == "1 person kept, no hand found, min_hand_keypoints 21"


def test_body_statuses_come_before_the_hand_check():
    cfg = FilterConfig(min_hand_keypoints=1, max_persons=1)
    assert filter_persons([], W, H, cfg, 0.3).status == STATUS_NO_PERSON
    assert filter_persons([with_hands(person(2), left=hand(21))], W, H, cfg, 0.3).status == STATUS_LOW_CONFIDENCE
    many = [with_hands(person(17), left=hand(21)), with_hands(person(17, box=(0, 0, 400, 400)), left=hand(21))]
    assert filter_persons(many, W, H, cfg, 0.3).status == STATUS_TOO_MANY_PERSONS
