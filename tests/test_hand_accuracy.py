"""COCO-WholeBody hand AP beside the body's pose AP (:mod:`model.evaluation.hand_accuracy`), by construction: synthetic
persons with hands, asked for in a 640 x 480 pose and found in a 512 x 512 generated frame (the cover crop), through
xtcocotools' real COCOeval; the hand OKS checked against COCO's formula written out here, the AP against COCO's
thresholds; a real ``keypoints.parquet`` through fyp-eval's pose columns, and a real run with a resume journal."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from model.evaluation.hand_accuracy import (
    NO_HANDS_ASKED,
    NO_HANDS_FOUND,
    SCORED_BEFORE,
    detected_hand_annotations,
    hand_ap,
    hand_columns,
    requested_hand_annotations,
    whole_hand_fields,
)
from model.evaluation.pose_accuracy import CoverCrop, compared_frames, detected_annotations, keypoint_ap, requested_annotations
from pose_data.pose.keypoints import PersonPose

#: COCO-WholeBody's hand sigmas written out again (mmpose's coco_wholebody.py, sigmas[91:112]), wrist first.
SIGMAS = [0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024,
          0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031]  # fmt: skip
THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]
SRC_W, SRC_H, W, H = 640, 480, 512, 512  # the pose's frame, and the generated frame it is drawn into (cover, centre crop)
CROP = CoverCrop.between(SRC_W, SRC_H, W, H)
MIN_SCORE = 0.5
#: Per point, how far a displaced hand point moves (times a base distance): unequal, so the OKS depends on which sigma
#: goes with which point.
WEIGHTS = np.array([1.0] * 11 + [3.0] * 10)


def hand(cx: float, cy: float, score: float = 0.9) -> np.ndarray:
    """A (21, 3) hand: the wrist at (cx, cy), five fingers of four points each fanning upwards."""
    points = [[cx, cy, score]]
    for finger in range(5):
        angle = math.radians(-150 + 30 * finger)
        points += [[cx + 9 * j * math.cos(angle), cy + 9 * j * math.sin(angle), score] for j in range(1, 5)]
    return np.array(points)


def person(cx: float, cy: float, *, left=True, right=True) -> dict:
    """A requested person (in the 640 x 480 pose frame): a 120 x 300 box, 17 body keypoints in it, and their own left
    hand (image right of the body) and right hand."""
    box = [cx - 60, cy - 150, cx + 60, cy + 150]
    body = np.array([[cx + 40 * math.cos(k), cy - 140 + 16.5 * k, 0.9] for k in range(17)])
    return {"box": box, "body": body, "hand_left": hand(cx + 45, cy) if left else None,
            "hand_right": hand(cx - 45, cy) if right else None}  # fmt: skip


def rows_of(frames: list[list[dict]], parts: bool = True) -> list[dict]:
    """keypoints.parquet rows (as dicts) holding these persons; without ``parts`` as written before hands were stored."""
    rows = []
    for persons in frames:
        row = {"status": "ok" if persons else "no_person", "width": SRC_W, "height": SRC_H,
               "keypoints": [p["body"].tolist() for p in persons], "bboxes": [p["box"] for p in persons]}  # fmt: skip
        if parts:
            for side in ("hand_left", "hand_right"):
                row[side] = [None if p[side] is None else p[side].tolist() for p in persons]
        rows.append(row)
    return rows


def found(p: dict, *, dx=None, moved=("hand_left", "hand_right"), swap: bool = False, hands: bool = True) -> PersonPose:
    """The person ``p`` as a backend would find it in the generated frame: mapped by the cover crop, the ``moved``
    hands moved by ``dx`` (per point, pixels to the right), or with sides swapped."""
    (x0, y0), (x1, y1) = CROP.points(np.array(p["box"]).reshape(2, 2))
    parts = {}
    for side in ("hand_left", "hand_right"):
        points = p[side] if hands else None
        if points is not None:
            points = np.column_stack([CROP.points(points[:, :2]), points[:, 2]])
            if dx is not None and side in moved:
                points[:, 0] += dx
        parts[side] = points
    if swap:
        parts = {"hand_left": parts["hand_right"], "hand_right": parts["hand_left"]}
    body = np.column_stack([CROP.points(p["body"][:, :2]), p["body"][:, 2]])
    return PersonPose(bbox=(x0, y0, x1, y1), score=0.95, keypoints=body, **parts)


def oks(p: dict, dx: np.ndarray, sigmas=SIGMAS) -> float:
    """COCO's OKS of one requested hand of ``p`` moved right by ``dx`` (per point): exp(-d^2 / (2 s^2 (2 sigma)^2))
    averaged over its points (all visible here), s^2 = 0.53 x the person's box in the generated frame."""
    (x0, y0), (x1, y1) = CROP.points(np.array(p["box"]).reshape(2, 2))
    s2 = 0.53 * (x1 - x0) * (y1 - y0)
    return sum(math.exp(-(d**2) / (2 * s2 * (2 * sigma) ** 2)) for d, sigma in zip(dx, sigmas)) / len(sigmas)


def video(frames: list[list[dict]], people: list[list[PersonPose]], parts: bool = True):
    """``(compared, requested, detected)`` hand annotations of one video, as fyp-eval makes them."""
    rows = rows_of(frames, parts)
    body = requested_annotations(rows, W, H, MIN_SCORE)
    return compared_frames(rows), requested_hand_annotations(rows, body, W, H), detected_hand_annotations(people)


def base_for(p: dict, target: float) -> float:
    """The base distance whose :data:`WEIGHTS` displacement gives OKS ``target`` (bisection; OKS falls as it grows)."""
    low, high = 0.0, 200.0
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if oks(p, mid * WEIGHTS) > target else (low, mid)
    return (low + high) / 2


A, B = person(220, 240), person(420, 240)  # two persons side by side; their boxes lie inside the generated frame


def test_identical_hands_score_1_and_the_cover_crop_maps_them():
    frames = [[A, B], [A], [B]]
    compared, requested, detected = video(frames, [[found(p) for p in persons] for persons in frames])
    result = hand_ap([(compared, requested, detected)])
    assert result.ap == 1.0 and result.sides == {"lefthand": 1.0, "righthand": 1.0}
    assert result.requested_hands == {"lefthand": 4, "righthand": 4} and result.detected_hands == {"lefthand": 4, "righthand": 4}
    assert result.frame_oks == {"lefthand": [[1.0] * 3], "righthand": [[1.0] * 3]}
    # the requested wrist is mapped as fyp-generate drew it: x * 683 / 640 - 85, y * 512 / 480
    assert requested[0]["lefthand_kpts"][:3] == [round(265 * 683 / 640 - 85, 3), round(240 * 512 / 480, 3), 2]
    # a person not found is a missed hand on each side
    missed = hand_ap([(compared, requested, detected_hand_annotations([[found(A), found(B)], [found(A)], []]))])
    assert missed.ap < 1.0 and missed.detected_hands == {"lefthand": 3, "righthand": 3}


def test_displaced_hands_give_cocos_oks_and_ap_counts_the_thresholds_it_reaches():
    """Both hands moved right by an unequal amount per point: the OKS is the formula's (so each sigma belongs to its
    point), and an OKS between 0.50 and 0.55 reaches one threshold of ten: AP 0.1."""
    for target, expected in ((0.525, 0.1), (0.725, 0.5), (0.975, 1.0), (0.45, 0.0)):
        base = base_for(A, target)
        frames = [[A]] * 2
        result = hand_ap([video(frames, [[found(A, dx=base * WEIGHTS)]] * 2)])
        assert oks(A, base * WEIGHTS) == pytest.approx(target, abs=1e-9)
        for side in ("lefthand", "righthand"):
            assert result.frame_oks[side][0] == pytest.approx([target] * 2, abs=2e-5), (side, result.frame_oks)
        assert result.ap == pytest.approx(expected, abs=1e-9) and result.sides["lefthand"] == result.sides["righthand"]
    # the left hand moved, the right one where asked: hand AP is the mean of the sides' (COCO-WholeBody's hand AP)
    base = base_for(A, 0.525)
    one_side = hand_ap([video([[A]] * 2, [[found(A, dx=base * WEIGHTS, moved=("hand_left",))]] * 2)])
    assert one_side.sides == {"lefthand": pytest.approx(0.1, abs=1e-9), "righthand": 1.0}
    assert one_side.ap == pytest.approx(0.55, abs=1e-9)
    # the same displacement judged with the sigmas in another order would not land on the same step
    assert not 0.5 <= oks(A, base * WEIGHTS, SIGMAS[::-1]) < 0.55
    assert not 0.5 <= oks(A, base * WEIGHTS, sorted(SIGMAS)) < 0.55


def test_hands_are_matched_by_side():
    """A backend that swaps the sides finds each hand where the other one was asked for: the AP falls, per side."""
    frames = [[A, B]] * 2
    right = hand_ap([video(frames, [[found(A), found(B)]] * 2)])
    swapped = hand_ap([video(frames, [[found(A, swap=True), found(B, swap=True)]] * 2)])
    assert right.ap == 1.0 and swapped.ap == 0.0 and swapped.sides == {"lefthand": 0.0, "righthand": 0.0}
    assert swapped.frame_oks["lefthand"][0][0] < 0.01
    # one requested side only: hand AP is that side's; a found hand of the other side asked nowhere costs nothing
    lefty = person(220, 240, right=False)
    only_left = hand_ap([video([[lefty]], [[found(A)]])])
    assert only_left.sides == {"lefthand": pytest.approx(1.0, abs=1e-15), "righthand": None}  # 1 / (1 + eps): COCO's precision
    assert only_left.ap == only_left.sides["lefthand"]
    assert only_left.requested_hands == {"lefthand": 1, "righthand": 0}


def test_hand_points_that_are_unsure_or_outside_the_frame_are_not_asked_for():
    unsure = dict(A, hand_left=hand(265, 240, score=0.29), hand_right=hand(175, 240, score=0.3))
    outside = person(-20, 240)  # the cover crop cuts 85 px off the left: its hands lie outside the generated frame
    _, requested, _ = video([[unsure, outside]], [[]])
    assert [a["lefthand_kpts"][2::3] for a in requested] == [[0] * 21, [0] * 21]
    assert requested[0]["righthand_kpts"][2::3] == [2] * 21 and requested[1]["righthand_kpts"][2::3] == [0] * 21
    sides = hand_ap([video([[unsure, outside]], [[found(unsure)]])]).sides
    assert sides == {"lefthand": None, "righthand": pytest.approx(1.0, abs=1e-15)}


def test_no_hands_asked_or_none_found_leave_hand_ap_null_with_the_reason():
    frames = [[A], [B]]
    people = [[found(A)], [found(B)]]
    rows = rows_of(frames)
    body = requested_annotations(rows, W, H, MIN_SCORE)

    def columns(rows, people, backend="mediapipe-holistic"):
        body = requested_annotations(rows, W, H, MIN_SCORE)
        return hand_columns(rows, body, people, compared_frames(rows), W, H, backend)

    assert columns(rows, people)["hand_ap"] == 1.0 and columns(rows, people)["hand_reason"] is None
    handless = [person(220, 240, left=False, right=False), person(420, 240, left=False, right=False)]
    for no_hands in (rows_of(frames, parts=False), rows_of([[p] for p in handless])):  # no hand columns, or no hand found
        got = columns(no_hands, people)
        assert got["hand_ap"] is None and got["hand_reason"] == NO_HANDS_ASKED
        assert len(got["_hand_requested"]) == 2  # the backend finds hands: its hands found where none was asked are pooled
    bare = [[found(A, hands=False)], [found(B, hands=False)]]
    assert columns(rows, bare, "mediapipe") == {"hand_ap": None, "hand_reason": NO_HANDS_FOUND}
    assert columns(rows, people, "mediapipe")["hand_ap"] == 1.0  # a backend that finds hands is one, whatever its name
    assert columns(rows, bare, "mmpose-wholebody")["hand_ap"] == 0.0  # a whole-body backend that found none where asked
    assert hand_columns(rows, body, people, [], W, H, "mediapipe-holistic")["hand_ap"] is None
    with pytest.raises(ValueError, match="hand_left entries for 1 person"):
        columns([dict(rows[0], hand_left=[None, None])], people)


def test_body_ap_is_the_same_with_and_without_hands_in_the_inputs():
    frames = [[A, B], [A], [B], []]
    for dx in (0.0, 7.0, 30.0):
        with_parts = [[found(p, dx=np.full(21, dx)) for p in persons] for persons in frames]
        without = [[found(p, hands=False) for p in persons] for persons in frames]
        assert detected_annotations(with_parts) == detected_annotations(without)
        gt = requested_annotations(rows_of(frames), W, H, MIN_SCORE)
        assert gt == requested_annotations(rows_of(frames, parts=False), W, H, MIN_SCORE)
        body = keypoint_ap([(compared_frames(rows_of(frames)), gt, detected_annotations(with_parts))])
        again = keypoint_ap([(compared_frames(rows_of(frames, parts=False)), gt, detected_annotations(without))])
        assert body == again and body.ap == 1.0


def test_pooled_hand_ap_is_the_ap_of_the_concatenated_annotations():
    from model.evaluation.evaluate_videos import overall

    frames = [[A, B]] * 3
    videos = [video(frames, [[found(p, dx=dx * WEIGHTS) for p in (A, B)]] * 3) for dx in (0.0, base_for(A, 0.725))]
    pooled = hand_ap(videos)
    joined = (list(range(6)), [dict(a, frame=a["frame"] + 3 * v) for v, (_, gt, _) in enumerate(videos) for a in gt],
              [dict(a, frame=a["frame"] + 3 * v) for v, (_, _, dt) in enumerate(videos) for a in dt])  # fmt: skip
    single = hand_ap([joined])
    assert pooled.ap == single.ap and pooled.sides == single.sides and [hand_ap([v]).ap for v in videos] == [1.0, 0.5]
    assert 0.5 < pooled.ap < 1.0 and pooled.requested_hands == {"lefthand": 12, "righthand": 12}

    def row(v, ap) -> dict:
        compared, requested, detected = v
        return {"status": "ok", "frame_clip_scores": [25.0] * 3, "frame_consistency": 99.0, "_pairs": 2, "person_found": 1.0,
                "clip_score": 25.0, "pose_frames": 3, "pose_ap": 1.0, "_compared": compared, "_requested": [], "_detected": [],
                "hand_ap": ap, "_hand_requested": requested, "_hand_detected": detected}  # fmt: skip

    both = overall([row(videos[0], 1.0), row(videos[1], 0.5)])
    assert both["hand_ap"] == pooled.ap and both["hand_ap_mean_per_video"] == 0.75
    old = {k: v for k, v in row(videos[0], None).items() if not k.startswith(("hand", "_hand"))}  # scored before hand AP existed
    assert overall([old, row(videos[1], 0.5)])["hand_ap"] == hand_ap([videos[1]]).ap == 0.5
    assert overall([old])["hand_ap"] is None and overall([old])["hand_ap_mean_per_video"] is None


def write_keypoints(path, frames: list[list[dict]], parts: bool = True):
    """A real extract-poses keypoints.parquet at 8 fps of these persons (``parts``: with the hand and face columns)."""
    from pose_data.extract_poses.sequence import SCHEMA, PoseSequence

    schema = SCHEMA if parts else pa.schema([f for f in SCHEMA if f.name not in ("hand_left", "hand_right", "face")])
    columns: dict[str, list] = {f.name: [] for f in schema}
    for i, row in enumerate(rows_of(frames, parts)):
        for key, value in (("frame", i), ("time", i / 8), ("error", None), ("num_persons", len(row["keypoints"])),
                           ("person_scores", [0.9] * len(row["keypoints"])), ("face", [None] * len(row["keypoints"])),
                           *((k, v) for k, v in row.items())):  # fmt: skip
            if key in columns:
                columns[key].append(value)
    info = {"format": "fyp-pose-sequence", "skeleton_style": "openpose", "min_keypoint_score": MIN_SCORE,
            "backend": "mediapipe-holistic"}  # fmt: skip
    return PoseSequence(pa.table(columns, schema=schema), info).save(path)


def test_fyp_evals_pose_columns_from_a_keypoints_file_with_and_without_hand_columns(tmp_path):
    from model.evaluation.config import EvalConfig
    from model.evaluation.inputs import EvalItem
    from model.evaluation.video_scoring import Models, pose_accuracy
    from pose_data.pose.estimator import PoseModelConfig

    frames = [[A, B], [A], []]
    people = [[found(A, dx=np.full(21, 6.0)), found(B)], [found(A)], [found(B)]]
    got = {}
    for backend in ("mediapipe-holistic", "mediapipe"):
        models = Models(EvalConfig(device="cpu", pose=PoseModelConfig(backend=backend)))  # loaded on first use: not here
        for parts in (True, False):
            keypoints = write_keypoints(tmp_path / f"{parts}.parquet", frames, parts)
            item = EvalItem("generated.mp4", prompt="x", keypoints=str(keypoints))
            got[backend, parts] = pose_accuracy(item, people, W, H, 8.0, models, tmp_path / "poses")
    body = ("pose_ap", "pose_frames", "pose_reason", "frame_oks", "_compared", "_requested", "_detected")
    assert len({json.dumps([row[k] for k in body]) for row in got.values()}) == 1  # the body's columns, to the bit
    assert got["mediapipe-holistic", True]["pose_frames"] == 2 and got["mediapipe-holistic", True]["pose_ap"] == 1.0
    expected = hand_ap([video(frames, people)]).ap
    assert 0.5 < expected < 1.0 and got["mediapipe-holistic", True]["hand_ap"] == expected
    assert got["mediapipe-holistic", False]["hand_reason"] == NO_HANDS_ASKED
    assert got["mediapipe", True]["hand_ap"] == expected  # the persons found have hands: the backend finds them
    bare = [[PersonPose(p.bbox, p.score, p.keypoints) for p in persons] for persons in people]
    item = EvalItem("generated.mp4", prompt="x", keypoints=str(tmp_path / "True.parquet"))
    body_only = Models(EvalConfig(device="cpu", pose=PoseModelConfig(backend="mediapipe")))
    no_hands = pose_accuracy(item, bare, W, H, 8.0, body_only, tmp_path)
    assert no_hands["hand_ap"] is None and no_hands["hand_reason"] == NO_HANDS_FOUND and "_hand_requested" not in no_hands


def test_a_run_writes_the_hand_columns_and_reuses_a_journal_line_written_before_hand_ap(tmp_path):
    """A real fyp-eval run (tiny random CLIP, MediaPipe on a black video: nobody found): hand_ap and hand_reason in
    metrics.parquet and summary.json; a journal line without hand fields (an older fyp-eval's) is reused, its hands
    null with the reason, and one with spoilt hand fields is scored again."""
    import pyarrow.parquet as pq

    from model.evaluation.config import EvalConfig
    from model.evaluation.evaluate_videos import evaluate_videos, format_table
    from model.evaluation.inputs import EvalItem
    from model.nets.tiny_clip import make_tiny_clip
    from pose_data.media.video_writer import write_video
    from pose_data.pose.estimator import PoseModelConfig

    clip = make_tiny_clip(tmp_path / "clip", seed=0)
    black = write_video([np.zeros((64, 64, 3), np.uint8)] * 3, tmp_path / "black.mp4", 8.0)
    small = [[person(320, 240)]] * 3
    keypoints = write_keypoints(tmp_path / "k.parquet", small)
    cfg = EvalConfig(clip_model=str(clip), device="cpu", pose=PoseModelConfig(backend="mediapipe"))
    items = [EvalItem(str(black), prompt="nobody", origin="test", keypoints=str(keypoints))]
    summary, table = evaluate_videos(items, cfg, tmp_path / "eval", progress=False)
    assert table.schema.field("hand_ap").type == pa.float64() and table.schema.field("hand_reason").type == pa.string()
    first = table.to_pylist()[0]
    assert first["hand_ap"] is None and first["hand_reason"] == NO_HANDS_FOUND and first["pose_ap"] == 0.0
    assert summary["overall"]["hand_ap"] is None and "hand_ap" in summary["scales"]
    assert NO_HANDS_FOUND in format_table(summary, table)  # the table's note
    journal = tmp_path / "eval" / "scored.jsonl"
    entry = json.loads(journal.read_text())
    assert whole_hand_fields(entry["row"]) and entry["row"]["hand_reason"] == NO_HANDS_FOUND
    old = {"key": entry["key"], "row": {k: v for k, v in entry["row"].items() if not k.startswith(("hand", "_hand"))}}
    journal.write_text(json.dumps(old) + "\n")
    summary, table = evaluate_videos(items, cfg, tmp_path / "eval", progress=False)
    reused = table.to_pylist()[0]
    assert summary["counts"]["reused"] == 1 and reused["hand_ap"] is None and reused["hand_reason"] == SCORED_BEFORE
    assert {k: v for k, v in reused.items() if not k.startswith(("hand", "seconds"))} == {
        k: v for k, v in first.items() if not k.startswith(("hand", "seconds"))}  # fmt: skip
    assert pq.read_table(tmp_path / "eval" / "metrics.parquet").to_pylist()[0]["hand_reason"] == SCORED_BEFORE
    spoilt = {"key": entry["key"], "row": {**entry["row"], "_hand_requested": [{"frame": 0}], "_hand_detected": []}}
    assert not whole_hand_fields(spoilt["row"])
    journal.write_text(json.dumps(spoilt) + "\n")
    summary, table = evaluate_videos(items, cfg, tmp_path / "eval", progress=False)
    assert summary["counts"]["reused"] == 0 and table.to_pylist()[0]["hand_reason"] == NO_HANDS_FOUND
