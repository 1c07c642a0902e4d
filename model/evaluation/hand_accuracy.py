"""Hand accuracy: how well the hands in generated frames follow the requested hands, as COCO-WholeBody's hand AP.

The evaluation is COCO-WholeBody's own (``jin-s13/COCO-WholeBody``, and MMPose's ``CocoWholeBodyMetric``, which runs
xtcocotools' ``COCOeval`` once per part with that part's sigmas):

- the **object is the person**, as for the body (:mod:`model.evaluation.pose_accuracy`: the same compared frames,
  the same requested persons, the same cover-crop mapping), and each hand is a **part** of it: one
  ``COCOeval(iouType="keypoints_lefthand")`` over the persons' left hands and one ``"keypoints_righthand"`` over their
  right hands, with the 21 hand sigmas of COCO-WholeBody (:data:`HAND_SIGMAS`; both hands use the same values). So a
  hand is matched only with a hand of its own side, and found persons are ranked by their person score (detections
  carry no visibility; MMPose's metric gives a part no score of its own, so ``COCOeval`` ranks by the person's; here
  ``lefthand_score`` / ``righthand_score`` are set to it).
- the **OKS scale is the person's**, not the hand's: COCO-WholeBody scales a part by the person's area; the requested
  poses have no segmentation, so, as for the body, ``s^2 = 0.53 * w * h`` of the requested person's box in the
  generated frame (xtcocotools ``use_area=False``). ``OKS = mean over visible points of exp(-d^2 / (2 s^2 (2 sigma_k)^2))``.
- **hand AP** is the mean of the left-hand AP and the right-hand AP, as COCO-WholeBody's authors report one hand AP
  (jin-s13/COCO-WholeBody issue 38: "we simply calculate their mean"); where only one side has a visible requested
  hand in any compared frame, it is that side's AP.

Not chosen: one ``COCOeval`` over 42 points per person (both hands as one part) mixes the sides into one OKS, which
no COCO-WholeBody table reports; each hand as its own object with its own box is the hand-only benchmark's setting
(COCO-WholeBody-Hand, scored by PCK/AUC/EPE, not AP), and a box drawn around a few requested hand points would make
the scale depend on how the fingers are spread.

A requested hand point is visible when its score is at least :data:`~pose_data.pose.keypoints.PART_MIN_SCORE` (the
threshold a found hand is drawn with) and it lies inside the generated frame; a requested person whose hand has no
visible point is ignored for that side (COCO's rule for an annotation without visible keypoints: a found hand within
twice the person's box is then neither right nor wrong). A found person's hand is compared wherever it is, each of
its points (COCO takes nothing from a detected point but its place: every point is written with 1 in the third place);
a hand the backend did not find (``None``) is no detection of that side (xtcocotools leaves out a detection whose
third values are all 0).
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field

import numpy as np

from model.evaluation.pose_accuracy import CoverCrop
from pose_data.pose.keypoints import HAND_NAMES, NUM_HAND_POINTS, PART_MIN_SCORE, PersonPose

#: COCO-WholeBody's per-point OKS constants of a hand in :data:`~pose_data.pose.keypoints.HAND_NAMES` order (wrist, then
#: thumb, index, middle, ring, little finger from the palm out: COCO-WholeBody's hand order too), the ``sigmas`` of
#: mmpose 1.3.2 ``mmpose/.mim/configs/_base_/datasets/coco_wholebody.py``, indices 91-111 (left hand) and 112-132
#: (right hand), which are equal.
HAND_SIGMAS = np.array([0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024,
                        0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031])  # fmt: skip
#: The two sides: the record/column name of the hand, and the xtcocotools field (``COCOeval`` iouType ``keypoints_<side>``).
SIDES: dict[str, str] = {"hand_left": "lefthand", "hand_right": "righthand"}

NO_HANDS_ASKED = (f"the requested poses have no hands (no requested hand point scores at least {PART_MIN_SCORE} inside "
                  "the frame; a keypoints.parquet from a body-only pose backend, or written before hands were stored, "
                  "has none)")  # fmt: skip
NO_HANDS_FOUND = "the pose backend finds no hands (use --pose-backend mmpose-wholebody or mediapipe-holistic)"
NO_FRAME = "the requested pose has no frame with a person (every pose row asks for nothing)"
SCORED_BEFORE = ("scored before hand AP existed, by a pose backend that finds no hands (use --pose-backend mmpose-wholebody "
                 "or mediapipe-holistic)")  # fmt: skip


def _hand_points(entries, index: int, frame: int, side: str, persons: int) -> np.ndarray | None:
    """The (21, 3) points of person ``index``'s hand on ``side`` in a row's ``entries`` (the column's value), or None."""
    if entries is None:
        return None
    if len(entries) != persons:
        raise ValueError(f"pose frame {frame} has {len(entries)} {side} entries for {persons} person(s)")
    if entries[index] is None:
        return None
    return np.asarray(entries[index], dtype=np.float64).reshape(NUM_HAND_POINTS, 3)


def requested_hand_annotations(rows: list[dict], body: list[dict], width: int, height: int) -> list[dict]:
    """COCO ground truth of the requested hands of ``rows`` (``keypoints.parquet`` rows as dicts, row i for generated
    frame i; a row without hand columns has no hands) in a ``width`` x ``height`` generated frame: one annotation per
    requested person, with its ``lefthand_kpts`` and ``righthand_kpts`` (63 numbers each, visibility 2 or 0, module doc)
    and the person's ``bbox`` from ``body``, :func:`~model.evaluation.pose_accuracy.requested_annotations` of the same
    rows (one annotation per person of each ``ok`` row, in order), which sets the OKS scale. A person whose box is
    empty (no box given, no visible body keypoint) gets the box of their visible hand points."""
    annotations: list[dict] = []
    for frame, row in enumerate(rows):
        if row.get("status", "ok") != "ok":
            continue
        crop = CoverCrop.between(int(row["width"]), int(row["height"]), width, height)
        persons = len(row["keypoints"] or [])
        for index in range(persons):
            if len(annotations) >= len(body) or body[len(annotations)]["frame"] != frame:
                raise ValueError(f"pose frame {frame}: the body annotations do not follow the rows")
            annotation = {"frame": frame, "bbox": list(body[len(annotations)]["bbox"])}
            seen = []
            for side, name in SIDES.items():
                points = _hand_points(row.get(side), index, frame, side, persons)
                if points is None:
                    annotation[f"{name}_kpts"] = [0.0] * (3 * NUM_HAND_POINTS)
                    continue
                xy = crop.points(points[:, :2])
                inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
                visible = inside & (points[:, 2] >= PART_MIN_SCORE)
                seen.append(xy[visible])
                annotation[f"{name}_kpts"] = [round(float(v), 3) for v in np.column_stack([xy, np.where(visible, 2, 0)]).ravel()]
            _, _, w, h = annotation["bbox"]
            corners = np.concatenate(seen) if seen else np.zeros((0, 2))
            if w * h <= 0 and len(corners):
                (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
                annotation["bbox"] = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            annotations.append(annotation)
    if len(annotations) != len(body):
        raise ValueError(f"{len(body)} body annotations for {len(annotations)} requested persons")
    return annotations


def detected_hand_annotations(people_per_frame: list[list[PersonPose]]) -> list[dict]:
    """COCO detection results of the hands of the persons the backend found, frame by frame: per person its score, its
    box (x, y, w, h) and both hands (63 numbers each; all 0 for a hand not found)."""
    annotations = []
    for frame, people in enumerate(people_per_frame):
        for person in people:
            x0, y0, x1, y1 = person.bbox
            box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            annotation = {"frame": frame, "score": float(person.score), "bbox": box}
            for side, name in SIDES.items():
                points = getattr(person, side)
                flat = np.zeros((NUM_HAND_POINTS, 3))
                if points is not None:
                    flat[:, :2], flat[:, 2] = points[:, :2], 1.0
                annotation[f"{name}_kpts"] = [round(float(v), 3) for v in flat.ravel()]
            annotations.append(annotation)
    return annotations


def finds_hands(people_per_frame: list[list[PersonPose]], backend: str) -> bool:
    """Whether the pose backend can find hands: a whole-body backend, or one that found a hand here."""
    from pose_data.pose.estimator import WHOLE_BODY_BACKENDS

    found = (p.hand_left is not None or p.hand_right is not None for people in people_per_frame for p in people)
    return backend in WHOLE_BODY_BACKENDS or any(found)


def _visible(annotation: dict, name: str) -> bool:
    return any(v > 0 for v in annotation[f"{name}_kpts"][2::3])


@dataclass
class HandAP:
    ap: float | None  # the mean of the sides' APs that exist; None when no requested hand is visible in any compared frame
    sides: dict[str, float | None]  # "lefthand" / "righthand": each side's COCO AP, None when it has no visible requested hand
    requested_hands: dict[str, int]  # per side, requested persons whose hand has a visible point
    detected_hands: dict[str, int]  # per side, found hands in the compared frames
    frame_oks: dict[str, list[list[float | None]]] = field(default_factory=dict)  # per side, video, compared frame: the best OKS


def hand_ap(videos: list[tuple[list[int], list[dict], list[dict]]]) -> HandAP:
    """COCO-WholeBody hand AP of one or many videos pooled: ``(compared, requested, detected)`` per video, ``compared``
    the frames compared (:func:`~model.evaluation.pose_accuracy.compared_frames`) and the annotations of
    :func:`requested_hand_annotations` / :func:`detected_hand_annotations`; annotations of other frames are left out."""
    images, gts, dts, ids = [], [], [], []
    for compared, requested, detected in videos:
        image_of = {frame: len(images) + n + 1 for n, frame in enumerate(compared)}
        ids.append(list(image_of.values()))
        images.extend({"id": i, "width": 1, "height": 1} for i in image_of.values())
        gts.extend({**a, "image_id": image_of[a["frame"]], "category_id": 1, "iscrowd": 0}
                   for a in requested if a["frame"] in image_of)  # fmt: skip
        dts.extend({**a, "image_id": image_of[a["frame"]], "category_id": 1} for a in detected if a["frame"] in image_of)
    for number, annotation in enumerate(gts, 1):
        annotation["id"] = number
    result = HandAP(None, {}, {}, {})
    for name in SIDES.values():
        side_gts = [dict(a) for a in gts]
        side_dts = [{**a, f"{name}_score": a["score"]} for a in dts if _visible(a, name)]
        result.requested_hands[name] = sum(_visible(a, name) for a in side_gts)
        result.detected_hands[name] = len(side_dts)
        result.sides[name], result.frame_oks[name] = _side_ap(name, images, side_gts, side_dts, ids, result.requested_hands[name])
    aps = [ap for ap in result.sides.values() if ap is not None]
    result.ap = sum(aps) / len(aps) if aps else None
    return result


def _side_ap(name: str, images: list, gts: list, dts: list, ids: list, visible: int) -> tuple[float | None, list]:
    """One side's ``COCOeval(iouType="keypoints_<name>")`` (module doc): its AP and the best OKS per compared frame."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    empty = [[None] * len(frame_ids) for frame_ids in ids]
    if not visible:
        return None, empty
    if not dts:
        return 0.0, empty
    with contextlib.redirect_stdout(io.StringIO()):  # COCO's tools print their progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": gts,
                         "categories": [{"id": 1, "name": "person", "keypoints": list(HAND_NAMES), "skeleton": []}]}  # fmt: skip
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(dts), f"keypoints_{name}", sigmas=HAND_SIGMAS, use_area=False)
        evaluator.params.imgIds = [i for frame_ids in ids for i in frame_ids]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap = float(evaluator.stats[0])
    return (None if ap < 0 else ap), [[_best(evaluator, i, name) for i in frame_ids] for frame_ids in ids]


def _best(evaluator, image_id: int, name: str) -> float | None:
    """The best OKS in a frame between any found hand and any requested hand (of this side) with a visible point."""
    ious = evaluator.ious.get((image_id, 1))
    if ious is None or len(ious) == 0:
        return None
    seen = np.array([_visible(g, name) for g in evaluator._gts[image_id, 1]])
    if not seen.any():
        return None
    return round(float(np.max(np.asarray(ious)[:, seen])), 6)


def hand_columns(rows: list[dict], body: list[dict], people: list[list[PersonPose]], compared: list[int], width: int, height: int,
                 backend: str) -> dict:  # fmt: skip
    """A video's hand columns (``hand_ap``, ``hand_reason``) and what the pooled hand AP needs (``_hand_requested``,
    ``_hand_detected``; left out when the backend finds no hands): its requested rows and their body annotations
    (:func:`~model.evaluation.pose_accuracy.requested_annotations`) against the persons found in its frames."""
    if not compared:
        return {"hand_ap": None, "hand_reason": NO_FRAME}
    requested = requested_hand_annotations(rows, body, width, height)
    asked = any(_visible(a, name) for a in requested for name in SIDES.values())
    if not finds_hands(people, backend):
        return {"hand_ap": None, "hand_reason": NO_HANDS_ASKED if not asked else NO_HANDS_FOUND}
    detected = detected_hand_annotations(people)
    pooled = {"_hand_requested": requested, "_hand_detected": detected}  # hands found where none was asked can be false positives
    if not asked:
        return {"hand_ap": None, "hand_reason": NO_HANDS_ASKED, **pooled}
    return {"hand_ap": hand_ap([(compared, requested, detected)]).ap, "hand_reason": None, **pooled}


def whole_hand_fields(row: dict) -> bool:
    """Whether a journal row's hand fields are as :func:`hand_columns` writes them (absent: a row scored before hand AP
    existed, also whole)."""
    requested, detected = row.get("_hand_requested"), row.get("_hand_detected")
    if requested is None and detected is None:
        return True

    def numbers(values, count: int) -> bool:
        return (isinstance(values, list) and len(values) == count
                and all(isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) for v in values))  # fmt: skip

    def whole(a) -> bool:
        return (isinstance(a["frame"], int) and not isinstance(a["frame"], bool) and numbers(a["bbox"], 4)
                and all(numbers(a[f"{name}_kpts"], 3 * NUM_HAND_POINTS) for name in SIDES.values()))  # fmt: skip

    try:
        return (isinstance(requested, list) and isinstance(detected, list) and all(whole(a) for a in requested)
                and all(whole(a) and isinstance(a["score"], float | int) for a in detected))  # fmt: skip
    except (KeyError, TypeError):
        return False
