"""Pose accuracy: how well the people in generated frames follow the requested poses, as COCO keypoint AP.

For every frame i of a generated video that has a requested pose frame i:

- **requested** (COCO's ground truth): the persons of the requested pose frame (a ``keypoints.parquet`` row), mapped
  into the generated
  frame by the geometry ``fyp-generate`` drew them with (:func:`model.datasets.frame_transforms.cover_and_center_crop`:
  scale to cover, centre crop). A keypoint is labelled visible when its score is at least the pose file's own
  threshold (the one its skeletons were drawn with) and it lies inside the frame; a person with no visible
  keypoint is ignored, as COCO ignores such annotations. Only frames whose requested row is ``ok`` are compared: the
  sampler was shown a blank skeleton for every other row (no person found, too many, too unsure), which asks for
  nothing, so what the generated frame shows there is neither right nor wrong (:func:`compared_frames`).
- **detected**: every person the pose backend finds in the generated frame, its keypoints and person score.

Matching and AP are xtcocotools' ``COCOeval(iouType="keypoints")``, the evaluator MMPose uses: object keypoint
similarity ``OKS = mean over visible keypoints of exp(-d^2 / (2 s^2 (2 sigma_k)^2))`` with COCO's per-keypoint
sigmas, greedy matching by detection score, AP averaged over OKS thresholds 0.50:0.05:0.95 (COCO's AP, range 0-1,
area "all", up to 20 detections per frame). The requested poses have no segmentation, so the object scale is
COCO's rule for such ground truth (xtcocotools ``use_area=False``, as for CrowdPose and AI Challenger):
``s^2 = 0.53 * w * h`` of the requested person's box in the generated frame. In a compared frame, every found person
not matched to a requested one is a false positive (also in a frame where no requested person is visible), except,
as COCO rules, one lying within twice the box of a requested person who has no visible keypoint (it is ignored).

Annotations are plain JSON-able dicts (``frame``, ``keypoints`` as 51 numbers, ``bbox`` as x, y, w, h), so one
video's can be stored and many videos pooled into one AP (:func:`keypoint_ap` over several videos).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from pose_data.pose.keypoints import COCO17_NAMES, NUM_KEYPOINTS, PersonPose

#: COCO's per-keypoint OKS constants (the keypoint order of :data:`COCO17_NAMES`), what xtcocotools uses for 17 keypoints.
COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0


@dataclass(frozen=True)
class CoverCrop:
    """The geometry of :func:`model.datasets.frame_transforms.cover_and_center_crop` from a ``src_w`` x ``src_h`` frame to a
    ``width`` x ``height`` one: ``x' = x * sx - x0``, ``y' = y * sy - y0`` (continuous pixel coordinates)."""

    sx: float
    sy: float
    x0: float
    y0: float
    width: int
    height: int

    @classmethod
    def between(cls, src_w: int, src_h: int, width: int, height: int) -> CoverCrop:
        scale = max(width / src_w, height / src_h)
        nw, nh = max(width, round(src_w * scale)), max(height, round(src_h * scale))
        return cls(nw / src_w, nh / src_h, (nw - width) // 2, (nh - height) // 2, width, height)

    def points(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([xy[..., 0] * self.sx - self.x0, xy[..., 1] * self.sy - self.y0], axis=-1)


def requested_annotations(rows: list[dict], width: int, height: int, min_score: float) -> list[dict]:
    """COCO ground-truth annotations of requested pose frames ``rows`` (``keypoints.parquet`` rows as dicts, row i
    for generated frame i) in a ``width`` x ``height`` generated frame (module doc). ValueError for a row whose
    boxes do not fit its persons (:func:`_check_boxes`): a box sets the OKS scale, so a wrong one gives a wrong AP."""
    annotations = []
    for frame, row in enumerate(rows):
        if row.get("status", "ok") != "ok":
            continue
        crop = CoverCrop.between(int(row["width"]), int(row["height"]), width, height)
        persons = row["keypoints"] or []
        boxes = row.get("bboxes") or [None] * len(persons)
        _check_boxes(boxes, persons, frame, min_score)
        for keypoints, box in zip(persons, boxes):
            kps = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
            xy = crop.points(kps[:, :2])
            inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
            visible = inside & (kps[:, 2] >= min_score)
            if box is not None:
                corners = crop.points(np.asarray(box, dtype=np.float64).reshape(2, 2))
            elif visible.any():
                corners = np.stack([xy[visible].min(axis=0), xy[visible].max(axis=0)])
            else:
                corners = np.zeros((2, 2))
            (bx0, by0), (bx1, by1) = np.clip(corners, 0, [width, height])
            flat = np.column_stack([xy, np.where(visible, 2, 0)]).ravel()
            annotations.append({"frame": frame, "keypoints": [round(float(v), 3) for v in flat],
                                "bbox": [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)], "num_keypoints": int(visible.sum())})  # fmt: skip
    return annotations


#: How far (a share of the box's size, at least BOX_SLACK_PX) a confident keypoint may lie outside its person's box:
#: top-down models see the box grown by 25 % (MMPose's bbox padding 1.25), so their keypoints stay within this.
BOX_SLACK, BOX_SLACK_PX = 0.25, 2.0


def _check_boxes(boxes: list, persons: list, frame: int, min_score: float) -> None:
    """One box per person, each (x0, y0, x1, y1), finite, in order, and holding the person's confident keypoints
    (within :data:`BOX_SLACK`). Not checked: a box much larger than its person (clipped to the frame, it makes
    OKS lenient), as a detector's box of a half-hidden person rightly is."""
    if len(boxes) != len(persons):
        raise ValueError(f"pose frame {frame} has {len(boxes)} box(es) for {len(persons)} person(s)")
    for box, keypoints in zip(boxes, persons):
        if box is None:
            continue
        corners = np.asarray(box, dtype=np.float64)
        if corners.shape != (4,) or not np.isfinite(corners).all() or corners[2] < corners[0] or corners[3] < corners[1]:
            raise ValueError(f"pose frame {frame} has a box that is not (x0, y0, x1, y1) with x0 <= x1, y0 <= y1: {box!r}"[:300])
        kps = np.asarray(keypoints, dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
        sure = kps[kps[:, 2] >= min_score, :2]
        x0, y0, x1, y1 = corners
        sx, sy = max(BOX_SLACK_PX, BOX_SLACK * (x1 - x0)), max(BOX_SLACK_PX, BOX_SLACK * (y1 - y0))
        if ((sure[:, 0] < x0 - sx) | (sure[:, 0] > x1 + sx) | (sure[:, 1] < y0 - sy) | (sure[:, 1] > y1 + sy)).any():
            raise ValueError(f"pose frame {frame} has a box that does not hold its person's keypoints: {box!r}"[:300])


def detected_annotations(people_per_frame: list[list[PersonPose]]) -> list[dict]:
    """COCO detection results of the persons the backend found, frame by frame."""
    return [{"frame": frame, "keypoints": [round(float(v), 3) for v in person.keypoints.ravel()], "score": float(person.score)}
            for frame, people in enumerate(people_per_frame) for person in people]  # fmt: skip


def compared_frames(rows: list[dict]) -> list[int]:
    """The frames whose requested pose row is ``ok`` (module doc): the ones pose accuracy compares."""
    return [frame for frame, row in enumerate(rows) if row.get("status", "ok") == "ok"]


@dataclass
class KeypointAP:
    ap: float | None  # COCO AP in [0, 1]; None when no visible person was requested in any compared frame
    frame_oks: list[list[float | None]]  # per video, per compared frame: the best OKS of any detection with any visible requested person
    requested_persons: int  # requested persons with a visible keypoint
    detected_persons: int  # detections in the compared frames


def keypoint_ap(videos: list[tuple[list[int], list[dict], list[dict]]]) -> KeypointAP:
    """COCO keypoint AP of one or many videos pooled: ``(compared, requested, detected)`` per video, ``compared`` the
    frame numbers compared (:func:`compared_frames`) and the annotations of :func:`requested_annotations` /
    :func:`detected_annotations`; annotations of other frames are left out."""
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    images, gts, dts, ids = [], [], [], []
    for compared, requested, detected in videos:
        image_of = {frame: len(images) + n + 1 for n, frame in enumerate(compared)}
        ids.append(list(image_of.values()))
        images.extend({"id": i, "width": 1, "height": 1} for i in image_of.values())
        gts.extend({**a, "image_id": image_of[a["frame"]], "category_id": 1, "iscrowd": 0} for a in requested if a["frame"] in image_of)
        dts.extend({**a, "image_id": image_of[a["frame"]], "category_id": 1} for a in detected if a["frame"] in image_of)
    for number, annotation in enumerate(gts, 1):
        annotation["id"] = number
    visible = sum(a["num_keypoints"] > 0 for a in gts)
    empty = [[None] * len(frame_ids) for frame_ids in ids]
    if not visible:
        return KeypointAP(None, empty, 0, len(dts))
    if not dts:
        return KeypointAP(0.0, empty, visible, 0)
    with contextlib.redirect_stdout(io.StringIO()):  # COCO's tools print their progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": gts,
                         "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES), "skeleton": []}]}  # fmt: skip
        truth.createIndex()
        results = truth.loadRes(dts)
        evaluator = COCOeval(truth, results, "keypoints", sigmas=COCO_SIGMAS, use_area=False)
        evaluator.params.imgIds = [i for frame_ids in ids for i in frame_ids]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap = float(evaluator.stats[0])
    frame_oks = [[_best(evaluator, i) for i in frame_ids] for frame_ids in ids]
    return KeypointAP(None if ap < 0 else ap, frame_oks, visible, len(dts))


def _best(evaluator, image_id: int) -> float | None:
    """The best OKS in a frame between any detection and any requested person with a visible keypoint (the OKS
    matrix's columns are the frame's requested persons in COCOeval's order)."""
    ious = evaluator.ious.get((image_id, 1))
    if ious is None or len(ious) == 0:
        return None
    seen = np.array([g["num_keypoints"] > 0 for g in evaluator._gts[image_id, 1]])
    if not seen.any():
        return None
    return round(float(np.max(np.asarray(ious)[:, seen])), 6)
