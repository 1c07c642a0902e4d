"""``fyp-eval``: CLIP score and frame consistency on a tiny random CLIPModel with the real CLIP tokenizer, pose AP by
construction on a real photo through real MediaPipe (AP 1.0 with its own keypoints, and as COCO's OKS formula says
when they are shifted), and the command on fyp-generate folders and JSONL files, with broken inputs and a resume."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from PIL import Image

from model.evaluation.cli import main as eval_main
from model.evaluation.clip_metrics import ClipEmbedder, clip_score, consecutive_cosines, frame_clip_cosines, frame_consistency
from model.nets.tiny_base import make_clip_tokenizer
from model.nets.tiny_clip import make_tiny_clip
from pose_data.extract_poses.sequence import SCHEMA, PoseSequence
from pose_data.media.clip_writer import frame_to_rgb
from pose_data.media.video_decode import decode_video
from pose_data.media.video_writer import write_video
from pose_data.pose.backends import build_pose_estimator
from pose_data.pose.estimator import PoseModelConfig
from pose_data.pose.keypoints import PARTS
from pose_data.skeleton.render import render_skeleton

SAMPLES = Path(str(resources.files("pose_data") / "sample_data" / "laion"))
PHOTO = SAMPLES / "astronaut.jpg"  # one person, 8 confident BlazePose keypoints
COCO_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]
MIN_SCORE = 0.5


def photo(name: str = "astronaut", size: int | None = None) -> np.ndarray:
    image = Image.open(SAMPLES / f"{name}.jpg").convert("RGB")
    return np.array(image if size is None else image.resize((size, size)))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", seed=0)


@pytest.fixture(scope="module")
def clip(clip_dir) -> ClipEmbedder:
    return ClipEmbedder.from_pretrained(str(clip_dir))


# ------------------------------------------------------------------------------------------------ CLIP metrics


def test_the_tiny_clip_tokenizes_as_clip_does(clip):
    ids = clip.processor.tokenizer("a photo of a yoga pose")["input_ids"]
    assert ids == make_clip_tokenizer()("a photo of a yoga pose")["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407 and ids[1:3] == [320, 1125]  # <|startoftext|> a photo ... <|endoftext|>


def test_clip_score_is_100_times_the_mean_text_frame_cosine(clip, clip_dir):
    frames = [photo(name, 96) for name in ("astronaut", "cameraman", "coffee")]
    prompt = "an astronaut in a white suit"
    images = clip.image_embeddings(frames, batch_size=2)
    text = clip.text_embedding(prompt)
    # the reference: the model called directly, one frame at a time, cosines in torch
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        t = model.get_text_features(**processor.tokenizer([prompt], return_tensors="pt"))
        t = t if isinstance(t, torch.Tensor) else t.pooler_output
        cos = []
        for frame in frames:
            v = model.get_image_features(pixel_values=processor.image_processor(images=[frame], return_tensors="pt")["pixel_values"])
            v = v if isinstance(v, torch.Tensor) else v.pooler_output
            cos.append(torch.nn.functional.cosine_similarity(v, t).item())
    score = clip_score(text, images)
    assert score == pytest.approx(100 * sum(cos) / 3, abs=1e-4)
    assert -100 <= score <= 100 and all(-1 <= c <= 1 for c in cos)
    assert len({round(c, 6) for c in cos}) == 3  # the frames differ, so do their scores


def test_identical_frames_are_exactly_consistent_and_reversing_the_frames_changes_nothing(clip):
    same = clip.image_embeddings([photo("astronaut", 64)] * 5, batch_size=2)  # across batches too
    assert consecutive_cosines(same).tolist() == [1.0] * 4
    assert frame_consistency(same) == 100.0
    frames = [photo(name, 64) for name in ("astronaut", "cameraman", "coffee", "chelsea", "grace_hopper")]
    varied = clip.image_embeddings(frames, batch_size=2)  # batches of 2, 2, 1: which frames share one depends on nothing but the frames
    value = frame_consistency(varied)
    assert value < 100.0 and -100 <= value <= 100
    backwards = clip.image_embeddings(frames[::-1], batch_size=2)
    assert np.array_equal(backwards, varied[::-1]) and frame_consistency(backwards) == value
    shuffled = [frames[i] for i in (3, 0, 4, 1, 2)]
    assert np.array_equal(clip.image_embeddings(shuffled, batch_size=2), varied[[3, 0, 4, 1, 2]])
    assert frame_consistency(varied[:1]) is None  # one frame has no pair


def test_frames_one_or_three_pixels_tall_are_read_as_height_width_channels(clip):
    """A numpy array of 1 or 3 rows looks channels-first to the image processor: the frame must be read as the PIL
    image of it is (PIL images have no such doubt)."""
    for height in (1, 3):
        frame = np.ascontiguousarray(photo("coffee", 64)[:height])
        embedding = clip.image_embeddings([frame])
        pixels = clip.processor.image_processor(images=[Image.fromarray(frame)], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            reference = clip.model.get_image_features(pixel_values=pixels)
        reference = (reference if isinstance(reference, torch.Tensor) else reference.pooler_output).numpy()
        assert embedding.shape == reference.shape and np.allclose(embedding, reference, atol=1e-5)


# ------------------------------------------------------------------------------------------------ pose accuracy


@pytest.fixture(scope="module")
def mediapipe():
    estimator = build_pose_estimator(PoseModelConfig(backend="mediapipe"))
    yield estimator
    estimator.close()


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory, mediapipe):
    """The real photo as a 4-frame mp4 at 8 fps, its decoded frames, and MediaPipe's people on the photo and on each
    decoded frame."""
    folder = tmp_path_factory.mktemp("astronaut")
    image = photo()
    video = write_video([image] * 4, folder / "astronaut.mp4", 8.0)
    decoded: list[np.ndarray] = []
    decode_video(video, on_frame=lambda frame, t: decoded.append(frame_to_rgb(frame)))
    return {"folder": folder, "video": video, "photo": mediapipe([image])[0], "frames": mediapipe(decoded)}


def write_keypoints(path: Path, people_per_frame: list, width: int = 512, height: int = 512, statuses: list | None = None, **info) -> Path:
    """An extract-poses keypoints.parquet at 8 fps holding these people (``statuses``: each row's, default ok / no_person)."""
    rows = {f.name: [] for f in SCHEMA}
    for i, people in enumerate(people_per_frame):
        records = [p.to_record() for p in people]
        status = statuses[i] if statuses else "ok" if records else "no_person"
        for key, value in (("frame", i), ("time", i / 8), ("width", width), ("height", height), ("status", status),
                           ("error", None), ("num_persons", len(records)), ("bboxes", [r["bbox"] for r in records]),
                           ("person_scores", [r["score"] for r in records]), ("keypoints", [r["keypoints"] for r in records]),
                           *((part, [r.get(part) for r in records]) for part in PARTS)):  # fmt: skip
            rows[key].append(value)
    info = {"format": "fyp-pose-sequence", "skeleton_style": "openpose", "min_keypoint_score": MIN_SCORE, "backend": "mediapipe", **info}
    return PoseSequence(pa.table(rows, schema=SCHEMA), info).save(path)


def run_eval(clip_dir, capsys, *args: str) -> tuple[int, str, str]:
    code = eval_main([*args, "--clip-model", str(clip_dir), "--pose-backend", "mediapipe", "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_real_photo_asked_to_follow_its_own_keypoints_scores_ap_1(astronaut, clip_dir, tmp_path, capsys):
    """Asked to follow the photo's own MediaPipe keypoints (a keypoints file), or the video itself as the driving
    video (its poses extracted by fyp-eval with the same backend): both score AP 1.0."""
    requested = write_keypoints(tmp_path / "keypoints.parquet", [astronaut["photo"]] * 4)
    lines = jsonl(tmp_path / "videos.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(requested)},
                                              {"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(astronaut["video"])}])  # fmt: skip
    code, out, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 0, err
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    for _, row in rows.iterrows():
        assert row["status"] == "ok" and row["frames"] == 4 and row["pose_frames"] == 4
        assert row["pose_ap"] == 1.0 and row["person_found"] == 1.0 and list(row["frame_persons"]) == [1, 1, 1, 1]
    assert min(rows["frame_oks"].iloc[0]) > 0.95  # the mp4's compression moves the found keypoints by a few pixels
    assert list(rows["frame_oks"].iloc[1]) == [1.0] * 4  # the very same frames: the very same keypoints
    extracted = list((tmp_path / "eval" / "poses").glob("astronaut-*.keypoints.parquet"))
    assert len(extracted) == 1 and (pd.read_parquet(extracted[0])["status"] == "ok").all()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["overall"]["pose_ap"] == 1.0 and summary["counts"] == {"videos": 2, "ok": 2, "failed": 0, "with_pose_ap": 2, "reused": 0}
    assert summary["overall"]["pose_frames"] == 8 and summary["models"]["pose"] == "mediapipe BlazePose full"
    assert "astronaut.mp4" in out and "1.000" in out


def hand_oks(person, dx: float, width: int = 512, height: int = 512) -> float:
    """COCO's OKS of ``person`` moved right by ``dx`` against ``person``: exp(-d^2 / (2 s^2 (2 sigma)^2)) averaged over the
    requested keypoints that are confident and inside the frame, s^2 = 0.53 x the requested box's area."""
    x0, y0, x1, y1 = (min(max(v, 0), limit) for v, limit in zip(person.bbox, (width, height, width, height)))
    area = 0.53 * (x1 - x0) * (y1 - y0)
    terms = []
    for (x, y, score), sigma in zip(person.keypoints.tolist(), COCO_SIGMAS):
        if score >= MIN_SCORE and 0 <= x + dx < width and 0 <= y < height:
            terms.append(math.exp(-(dx**2) / (2 * area * (2 * sigma) ** 2)))
    return sum(terms) / len(terms)


def test_shifted_keypoints_lower_ap_as_cocos_oks_formula_says(astronaut, clip_dir, tmp_path, capsys):
    """The requested pose is what MediaPipe finds on each decoded frame, moved right by dx: the found keypoints are
    then exactly dx away from the requested ones, so every frame's OKS is the hand formula's and AP is the share of
    COCO's thresholds 0.50, 0.55, ..., 0.95 that OKS reaches."""
    found = astronaut["frames"]
    assert all(len(people) == 1 for people in found)
    lines, expected = [], []
    for target in (0.975, 0.825, 0.625, 0.3):  # OKS in the middle of a threshold step: AP 1.0, 0.7, 0.3, 0.0
        dx = _shift_for(found[0][0], target)
        moved = [[_moved(people[0], dx)] for people in found]
        oks = [hand_oks(people[0], dx) for people in found]
        reached = {sum(t <= value for t in THRESHOLDS) for value in oks}
        assert len(reached) == 1  # every frame on the same step
        expected.append((oks, reached.pop() / 10))
        lines.append({"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(write_keypoints(tmp_path / f"{target}.parquet", moved))})
    code, _, err = run_eval(clip_dir, capsys, str(jsonl(tmp_path / "v.jsonl", lines)), "--output", str(tmp_path / "eval"))
    assert code == 0, err
    table = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    for (_, row), (oks, ap) in zip(table.iterrows(), expected):
        assert np.allclose(row["frame_oks"], oks, atol=2e-4), (row["frame_oks"], oks)
        assert row["pose_ap"] == pytest.approx(ap, abs=1e-9)
    assert [round(ap, 1) for _, ap in expected] == [1.0, 0.7, 0.3, 0.0]
    pooled = json.loads((tmp_path / "eval" / "summary.json").read_text())["overall"]
    assert pooled["pose_frames"] == 16 and 0.0 < pooled["pose_ap"] < 1.0
    assert pooled["pose_ap_mean_per_video"] == pytest.approx(sum(ap for _, ap in expected) / 4)


def pose_rows(frames: list, dx: float = 0.0) -> list[dict]:
    """keypoints.parquet rows (as dicts) holding these people, moved right by ``dx``."""
    return [{"status": "ok", "width": 512, "height": 512, "keypoints": [[[x + dx, y, s] for x, y, s in p.keypoints.tolist()] for p in people],
             "bboxes": [[p.bbox[0] + dx, p.bbox[1], p.bbox[2] + dx, p.bbox[3]] for p in people]} for people in frames]  # fmt: skip


def test_pooled_ap_is_one_cocoeval_over_every_videos_frames(astronaut):
    from model.evaluation.pose_accuracy import detected_annotations, keypoint_ap, requested_annotations

    rows = pose_rows(astronaut["frames"])
    videos = []
    for dx in (0.0, 9.0, 30.0):
        found = [[_moved(people[0], dx)] for people in astronaut["frames"]]
        videos.append(([0, 1, 2, 3], requested_annotations(rows, 512, 512, MIN_SCORE), detected_annotations(found)))
    pooled = keypoint_ap(videos)
    # the same frames as one 12-frame video
    joined = (list(range(12)), [dict(a, frame=a["frame"] + 4 * v) for v, (_, gt, _) in enumerate(videos) for a in gt],
              [dict(a, frame=a["frame"] + 4 * v) for v, (_, _, dt) in enumerate(videos) for a in dt])  # fmt: skip
    single = keypoint_ap([joined])
    assert pooled.ap == single.ap and sum(pooled.frame_oks, []) == single.frame_oks[0]
    assert [keypoint_ap([v]).ap for v in videos][0] == 1.0 and 0.0 < pooled.ap < 1.0
    assert pooled.requested_persons == 12 and pooled.detected_persons == 12
    # a video whose requested persons are all unseen (placed beyond the frame's right edge) has no AP of its own, but
    # its sure detections are false positives of the pooled AP; frames not compared count for nothing
    unseen = requested_annotations(pose_rows(astronaut["frames"], 600.0), 512, 512, MIN_SCORE)
    assert all(a["num_keypoints"] == 0 for a in unseen)
    sure = [dict(a, score=1.0) for a in videos[0][2]]
    assert keypoint_ap([([0, 1, 2, 3], unseen, sure)]).ap is None
    with_unseen = keypoint_ap([*videos, ([0, 1, 2, 3], unseen, sure)])
    assert with_unseen.ap < pooled.ap and with_unseen.detected_persons == 16 and with_unseen.frame_oks[3] == [None] * 4
    assert keypoint_ap([*videos, ([], unseen, sure)]).ap == pooled.ap


def test_only_frames_asking_for_a_person_are_compared_and_unseen_persons_do_not_set_oks(astronaut):
    """A requested row that is not ``ok`` was drawn as a blank skeleton (no constraint): its frame is not compared. A
    requested person with no visible keypoint changes neither AP nor the OKS."""
    from model.evaluation.pose_accuracy import compared_frames, detected_annotations, keypoint_ap, requested_annotations

    found = astronaut["frames"]
    rows = [{"status": status, "width": 512, "height": 512, "keypoints": [found[i][0].keypoints.tolist()], "bboxes": [list(found[i][0].bbox)]}
            for i, status in enumerate(["ok", "low_confidence", "ok", "too_many_persons"])]  # fmt: skip
    assert compared_frames(rows) == [0, 2]
    moved = [[_moved(people[0], 9.0)] for people in found]
    base = keypoint_ap([([0, 2], requested_annotations(rows, 512, 512, MIN_SCORE), detected_annotations(moved))])
    assert base.requested_persons == 2 and base.detected_persons == 2  # the detections of frames 1 and 3 are left out
    assert base.frame_oks[0] == pytest.approx([hand_oks(found[0][0], 9.0), hand_oks(found[2][0], 9.0)], abs=2e-4)
    # a second requested person right where the detection is, every keypoint too unsure to be visible: COCO's OKS
    # of an annotation without visible keypoints is 1.0 for a detection inside its box, which must not count
    unsure = [[[x + 9.0, y, 0.1] for x, y, _ in r["keypoints"][0]] for r in rows]
    crowded = [dict(r, keypoints=r["keypoints"] + [kps], bboxes=r["bboxes"] + [r["bboxes"][0]]) for r, kps in zip(rows, unsure)]
    requested = requested_annotations(crowded, 512, 512, MIN_SCORE)
    assert [a["num_keypoints"] for a in requested if a["frame"] == 0][1] == 0
    again = keypoint_ap([([0, 2], requested, detected_annotations(moved))])
    assert again.ap == base.ap and again.frame_oks == base.frame_oks and again.requested_persons == 2


def test_requested_keypoints_follow_the_cover_crop_of_another_aspect(astronaut, mediapipe, clip_dir, tmp_path, capsys):
    """fyp-generate fits a pose frame of another size by scaling it to cover the video's frame and cutting out the
    centre: a marked pixel of a 1000 x 700 frame lands where :class:`CoverCrop` puts it, and the photo's keypoints
    written in the coordinates of a 1280 x 1024 frame it was cropped from (scale 0.5, 64 px cut on each side) score
    AP 1.0 on the 512 x 512 video."""
    from model.datasets.frame_transforms import cover_and_center_crop
    from model.evaluation.pose_accuracy import CoverCrop

    source = np.zeros((700, 1000, 3), np.uint8)
    source[300:310, 600:610] = 255  # a 10 x 10 block centred at (605, 305)
    fitted = np.asarray(cover_and_center_crop(Image.fromarray(source), 512, 512))
    ys, xs = np.nonzero(fitted[..., 0] > 127)
    expected = CoverCrop.between(1000, 700, 512, 512).points(np.array([605.0, 305.0]))
    assert np.allclose([xs.mean() + 0.5, ys.mean() + 0.5], expected, atol=0.75), (xs.mean(), ys.mean(), expected)

    from pose_data.pose.keypoints import PersonPose

    def in_big_frame(person):
        keypoints = person.keypoints.copy()
        keypoints[:, 0], keypoints[:, 1] = 2 * keypoints[:, 0] + 128, 2 * keypoints[:, 1]
        x0, y0, x1, y1 = person.bbox
        return PersonPose(bbox=(2 * x0 + 128, 2 * y0, 2 * x1 + 128, 2 * y1), score=person.score, keypoints=keypoints)

    requested = write_keypoints(tmp_path / "big.parquet", [[in_big_frame(p[0])] for p in astronaut["frames"]], width=1280, height=1024)
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(requested)}])
    code, _, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 0, err
    row = pd.read_parquet(tmp_path / "eval" / "metrics.parquet").iloc[0]
    assert row["pose_ap"] == 1.0 and list(row["frame_oks"]) == [1.0] * 4


def _moved(person, dx: float):
    from pose_data.pose.keypoints import PersonPose

    keypoints = person.keypoints.copy()
    keypoints[:, 0] += dx
    x0, y0, x1, y1 = person.bbox
    return PersonPose(bbox=(x0 + dx, y0, x1 + dx, y1), score=person.score, keypoints=keypoints)


def _shift_for(person, target: float) -> float:
    low, high = 0.0, 400.0
    for _ in range(60):  # hand_oks falls as the shift grows
        mid = (low + high) / 2
        low, high = (mid, high) if hand_oks(person, mid) > target else (low, mid)
    return round(low, 2)


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def generated(tmp_path_factory, astronaut):
    """A folder of real fyp-generate output (tiny random SD, 4 frames, 64 px): a side-by-side video from a keypoints
    file, a video from a folder of skeleton frames (no keypoints), a stray mp4 without a sidecar, and a sidecar whose
    video was deleted."""
    from model.generation.cli import main as generate_main
    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.nets.tiny_base import make_tiny_base

    root = tmp_path_factory.mktemp("generated")
    base = make_tiny_base(root / "tiny-sd", seed=0)
    PoseEncoder.for_unet(load_base_model(base).unet, skeleton_style="openpose").save_pretrained(root / "pose_encoder")
    keypoints = write_keypoints(root / "keypoints.parquet", [astronaut["photo"]] * 4)
    skeletons = root / "skeletons"
    skeletons.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(skeletons / f"{i}.png")
    out = root / "videos"
    common = ["--base", str(base), "--pose-encoder", str(root / "pose_encoder"), "--steps", "1", "--height", "64", "--width", "64", "--num-frames", "4", "--seed", "0", "--no-progress"]
    for args in (["--pose", str(keypoints), "--prompt", "an astronaut", "--output", str(out / "side.mp4"), "--side-by-side"],
                 ["--pose", str(skeletons), "--prompt", "a dancer", "--output", str(out / "frames.mp4")],
                 ["--pose", str(keypoints), "--prompt", "gone", "--output", str(out / "gone.mp4")]):  # fmt: skip
        assert generate_main([*common, *args]) == 0
    (out / "gone.mp4").unlink()
    shutil.copy(astronaut["video"], out / "stray.mp4")
    return out


def test_a_folder_of_generated_videos(generated, clip, clip_dir, tmp_path, capsys):
    code, out, err = run_eval(clip_dir, capsys, str(generated), "--output", str(tmp_path / "eval"))
    assert code == 2 and "2 of 4 video(s) could not be scored" in err
    table = pd.read_parquet(tmp_path / "eval" / "metrics.parquet").set_index("path")
    side, frames = table.loc[str(generated / "side.mp4")], table.loc[str(generated / "frames.mp4")]
    assert side["status"] == "ok" and side["prompt"] == "an astronaut" and side["frames"] == 4 and side["fps"] == 8.0
    assert (side["width"], side["height"]) == (64, 64)  # the generated half of the 128-px-wide side-by-side video
    decoded: list[np.ndarray] = []
    decode_video(generated / "side.mp4", on_frame=lambda frame, t: decoded.append(frame_to_rgb(frame)[:, 64:]))
    assert side["clip_score"] == pytest.approx(clip_score(clip.text_embedding("an astronaut"), clip.image_embeddings(decoded)), abs=1e-9)
    assert side["pose_frames"] == 4 and side["pose_source"].endswith("keypoints.parquet") and side["pose_reason"] is None
    assert 0.0 <= side["pose_ap"] <= 1.0 and 0.0 <= side["person_found"] <= 1.0 and len(side["frame_oks"]) == 4
    assert frames["status"] == "ok" and np.isnan(frames["pose_ap"]) and frames["pose_frames"] == 0
    assert frames["pose_reason"] == "the pose is a folder of skeleton frames without keypoints: there is nothing to compare the frames with"
    assert np.isfinite(frames["clip_score"]) and np.isfinite(frames["frame_consistency"]) and len(frames["frame_clip_scores"]) == 4
    gone, stray = table.loc[str(generated / "gone.mp4")], table.loc[str(generated / "stray.mp4")]
    assert gone["status"] == "failed" and "does not exist" in gone["reason"] and gone["prompt"] == "gone"
    assert stray["status"] == "failed" and "no fyp-generate sidecar" in stray["reason"]
    assert "could not be scored" not in out and "no fyp-generate sidecar" in out  # the reasons are in the table


def test_broken_lines_and_videos_are_rows_with_reasons_and_a_rerun_resumes(astronaut, clip_dir, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    requested = write_keypoints(tmp_path / "k.parquet", [astronaut["photo"]] * 4)
    skeleton = tmp_path / "skeleton.mp4"  # a skeleton video that extract-poses did not write: no keypoints to compare
    write_video([render_skeleton("openpose", astronaut["photo"], 512, 512, MIN_SCORE)] * 4, skeleton, 8.0)
    lines = jsonl(tmp_path / "v.jsonl", [
        {"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(requested)},
        {"video": str(tmp_path / "missing.mp4"), "prompt": "x", "pose": str(requested)},
        {"video": str(broken), "prompt": "x"},
        "{not json",
        {"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(skeleton)},
        {"video": "astronaut.mp4", "prompt": "relative to the jsonl", "pose": str(tmp_path / "nowhere.parquet")},
        {"video": str(astronaut["video"]), "prompt": "", "pose": str(requested)},
    ])  # fmt: skip
    shutil.copy(astronaut["video"], tmp_path / "astronaut.mp4")
    with open(lines, "ab") as f:
        f.write(b'{"video": "caf\xe9.mp4", "prompt": "latin-1"}\n')
    code, out, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 2 and "5 of 8 video(s) could not be scored" in err and "Traceback" not in err
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert rows["status"].tolist() == ["ok", "failed", "failed", "failed", "ok", "ok", "failed", "failed"]
    reasons = rows["reason"].tolist()
    assert "missing.mp4 does not exist" in reasons[1] and "cannot be decoded" in reasons[2]
    assert "v.jsonl:4: not JSON" in reasons[3] and "prompt must be a non-empty string" in reasons[6]
    assert reasons[7] == f"{lines}:8: not UTF-8 text"
    assert rows["pose_ap"].iloc[0] == 1.0
    assert "skeleton video without keypoints" in rows["pose_reason"].iloc[4] and np.isnan(rows["pose_ap"].iloc[4])
    assert rows["path"].iloc[5] == str(tmp_path / "astronaut.mp4") and "nowhere.parquet does not exist" in rows["pose_reason"].iloc[5]
    assert rows["origin"].tolist() == [f"{lines}:{n}" for n in range(1, 9)]
    # a rerun takes the scored videos from scored.jsonl and gives the same table, also with every line moved down one
    lines.write_bytes(b"\n" + lines.read_bytes())
    code, _, _ = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 2
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["counts"]["reused"] == 3 and summary["counts"]["ok"] == 3
    again = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert again["origin"].tolist() == [f"{lines}:{n}" for n in range(2, 10)] and "v.jsonl:5: not JSON" in again["reason"].iloc[3]
    pd.testing.assert_frame_equal(again.drop(columns=["seconds", "origin", "reason"]), rows.drop(columns=["seconds", "origin", "reason"]))


def test_bad_arguments_stop_early_with_one_line(clip_dir, tmp_path, capsys):
    code, _, err = run_eval(clip_dir, capsys, str(tmp_path / "nope"), "--output", str(tmp_path / "eval"))
    assert code == 2 and "INPUT" in err and "nope" in err and "does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_eval(clip_dir, capsys, str(empty), "--output", str(tmp_path / "eval"))
    assert code == 2 and "no video in it" in err
    code = eval_main([str(empty), "--output", str(tmp_path / "eval"), "--batch-size", "0", "--no-progress"])
    assert code == 2 and "batch_size must be" in capsys.readouterr().err


def test_a_clip_model_that_cannot_load_is_one_line_naming_it(astronaut, tmp_path):
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut"}])
    no_clip = tmp_path / "not-a-clip"
    no_clip.mkdir()
    for model in ("openai/clip-vit-large-patch14", str(no_clip)):
        proc = subprocess.run([str(Path(sys.executable).parent / "fyp-eval"), str(lines), "--output", str(tmp_path / "eval"),
                               "--clip-model", model, "--config", "tiny", "--no-progress"],
                              capture_output=True, text=True, timeout=120, env={**_env(), "HF_HUB_OFFLINE": "1"})  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("fyp-eval: error:")]
        assert len(errors) == 1 and model in errors[0] and ("--clip-model DIR" in errors[0] or "config.json" in errors[0])
        assert "Traceback" not in proc.stderr


def _env() -> dict:
    import os

    return dict(os.environ)


def test_broken_sidecars_are_rows_naming_the_field_and_a_keypoints_file_must_be_the_one_recorded(generated, astronaut, clip_dir, tmp_path, capsys):
    """Sidecars with a field of the wrong type are failed rows naming it (never a traceback); the keypoints file is
    found where the sidecar says, else by name beside it, and is used only when it is the very file the video was
    made from (its SHA-256)."""
    good = json.loads((generated / "side.mp4.json").read_text())
    folder = tmp_path / "videos"
    (folder / "elsewhere").mkdir(parents=True)
    shutil.copy(good["pose"]["keypoints"], folder / "keypoints.parquet")  # the same file, moved with the videos
    other = write_keypoints(folder / "elsewhere" / "keypoints.parquet", [[_moved(astronaut["photo"][0], 30.0)]] * 4)
    gone = str(tmp_path / "was-here" / "keypoints.parquet")

    def variant(name: str, where: Path, change) -> None:
        data = json.loads(json.dumps(good))
        change(data)
        data["video"] = f"{name}.mp4"
        shutil.copy(generated / "side.mp4", where / f"{name}.mp4")
        (where / f"{name}.json").write_text(json.dumps(data))

    variant("a_good", folder, lambda d: None)
    variant("b_pose_text", folder, lambda d: d.update(pose="keypoints.parquet"))
    variant("c_kind_list", folder, lambda d: d["pose"].update(kind=["keypoints"]))
    variant("d_keypoints_number", folder, lambda d: d["pose"].update(keypoints=7))
    variant("e_source_list", folder, lambda d: d["pose"].update(source=["a", "b"]))
    variant("f_blank_prompt", folder, lambda d: d.update(prompt=" "))
    variant("g_fps_text", folder, lambda d: d.update(fps="fast"))
    variant("h_moved", folder, lambda d: d["pose"].update(keypoints=gone))
    variant("i_other_file", folder, lambda d: d["pose"].update(keypoints=str(other)))
    variant("j_moved_beside_another", folder / "elsewhere", lambda d: d["pose"].update(keypoints=gone))
    variant("k_rows_text", folder, lambda d: d["pose"].update(keypoint_rows="0-3"))
    variant("l_fps_huge", folder, lambda d: d.update(fps=10**400))  # float() of it overflows
    variant("m_side_text", folder, lambda d: d.update(side_by_side="false"))
    variant("n_width_half", folder, lambda d: d.update(width=0.5))
    variant("o_fps_fast", folder, lambda d: d.update(fps=1e300))  # would tick 1e300 times a second through the pose rows
    (folder / "p_video_list.json").write_text(json.dumps({**good, "video": ["side.mp4"]}))
    (folder / "q_deep.json").write_text("[" * 100_000)  # not a sidecar json can read: ignored, its video has none
    shutil.copy(generated / "side.mp4", folder / "q_deep.mp4")
    variant("r_fps_slow", folder, lambda d: d.update(fps=1e-300))
    variant("s_rows_empty", folder, lambda d: d["pose"].update(keypoint_rows=[]))
    variant("t_width_whole", folder, lambda d: d.update(width=128))  # the whole frame's width: no generated half to score
    code, out, err = run_eval(clip_dir, capsys, str(folder), "--output", str(tmp_path / "eval"))
    assert code == 2 and "16 of 20 video(s) could not be scored" in err and "Traceback" not in err + out
    table = pd.read_parquet(tmp_path / "eval" / "metrics.parquet").set_index("origin")
    reason = {Path(origin).stem: r for origin, r in table["reason"].items()}
    assert "pose must be an object, got str" in reason["b_pose_text"]
    assert "pose.kind must be one of skeleton_video, skeleton_frames, keypoints, driving_video, got ['keypoints']" in reason["c_kind_list"]
    assert "pose.keypoints must be a non-empty string, got 7" in reason["d_keypoints_number"]
    assert "pose.source must be a non-empty string" in reason["e_source_list"]
    assert "prompt must be a non-empty string" in reason["f_blank_prompt"] and "fps must be a number from 0.01 to 10000, got 'fast'" in reason["g_fps_text"]
    assert "pose.keypoint_rows must be a non-empty list of row numbers >= 0, got '0-3'" in reason["k_rows_text"]
    assert "fps must be a number from 0.01 to 10000, got 1000000" in reason["l_fps_huge"] and "got 1e+300" in reason["o_fps_fast"]
    assert "got 1e-300" in reason["r_fps_slow"] and "non-empty list of row numbers >= 0, got []" in reason["s_rows_empty"]
    assert "side-by-side video 128 px wide, but its sidecar gives each half 128 px" in reason["t_width_whole"]
    assert "side_by_side must be true or false, got 'false'" in reason["m_side_text"]
    assert "width must be a whole number >= 1, got 0.5" in reason["n_width_half"]
    assert "video must be a file name, got ['side.mp4']" in reason["p_video_list"] and reason["q_deep"] == "its sidecar q_deep.json cannot be read as JSON (RecursionError)"
    assert all(str(folder / name) in reason[name] for name in ("b_pose_text", "g_fps_text"))  # the row names its sidecar
    rows = {Path(origin).stem: row for origin, row in table.iterrows()}
    assert rows["a_good"]["status"] == "ok"
    for name in ("a_good", "h_moved"):  # the tiny random model draws noise: compared, AP 0 (nobody found), but compared
        assert rows[name]["pose_frames"] == 4 and rows[name]["pose_ap"] == 0.0 and rows[name]["pose_reason"] is None
    for name in ("i_other_file", "j_moved_beside_another"):
        assert rows[name]["status"] == "ok" and np.isnan(rows[name]["pose_ap"]) and "not the one the video was made from" in rows[name]["pose_reason"]


def test_hostile_pose_files_and_pose_kinds_leave_pose_ap_empty_with_a_reason(astronaut, clip_dir, tmp_path, capsys):
    no_threshold = write_keypoints(tmp_path / "null.parquet", [astronaut["photo"]] * 4, min_keypoint_score=None)
    table = pq_read(write_keypoints(tmp_path / "17.parquet", [astronaut["photo"]] * 4))
    info = {"format": "fyp-pose-sequence", "skeleton_style": "openpose", "min_keypoint_score": MIN_SCORE}

    def with_column(name: str, values: list) -> pa.Table:
        return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))

    two_keypoints = PoseSequence(with_column("keypoints", [[person[:2] for person in frame] for frame in table.column("keypoints").to_pylist()]),
                                 info).save(tmp_path / "two.parquet")  # fmt: skip
    three_corners = PoseSequence(with_column("bboxes", [[box[:3] for box in frame] for frame in table.column("bboxes").to_pylist()]),
                                 info).save(tmp_path / "three.parquet")  # fmt: skip
    good = write_keypoints(tmp_path / "good.parquet", [astronaut["photo"]] * 4)
    video = str(astronaut["video"])
    lines = jsonl(tmp_path / "v.jsonl", [
        {"video": video, "prompt": "a", "pose": str(no_threshold)},
        {"video": video, "prompt": "a", "pose": str(two_keypoints)},
        {"video": video, "prompt": "a", "pose": str(three_corners)},
        {"video": video, "prompt": "a", "pose": video, "keypoint_rows": [0, 1, 2, 3]},  # the video is a driving video: rows of what?
        {"video": video, "prompt": "a", "pose": video, "pose_kind": "driving_video", "keypoint_rows": [0, 1]},
        {"video": video, "prompt": "a", "pose": str(good), "pose_kind": "dancing"},
        {"video": video, "prompt": "a", "pose": str(good), "pose_kind": "keypoints", "keypoint_rows": [3, 2, 1, 0]},
        {"video": "~nosuchuser/a.mp4", "prompt": "a"},
        {"video": video, "prompt": "a", "pose": "bad\u0000name.parquet"},
    ])  # fmt: skip
    code, out, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 2 and "3 of 9 video(s) could not be scored" in err and "Traceback" not in err + out
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert rows["status"].tolist() == ["ok", "ok", "ok", "ok", "failed", "failed", "ok", "failed", "ok"]
    assert rows["pose_ap"].isna().tolist() == [True] * 6 + [False, True, True] and rows["pose_ap"].iloc[6] == 1.0
    assert "the video ~nosuchuser/a.mp4 does not exist" in rows["reason"].iloc[7]
    assert rows["pose_reason"].iloc[8] == "the pose bad\x00name.parquet does not exist"
    # (pose_data's reader refuses a threshold that is no number; fyp-eval's own check says the same of one above 1)
    assert f"the pose {no_threshold} " in rows["pose_reason"].iloc[0] and "min_keypoint_score" in rows["pose_reason"].iloc[0]
    assert "None" in rows["pose_reason"].iloc[0]
    assert f"the pose {two_keypoints} cannot be read" in rows["pose_reason"].iloc[1] and "expected (17, 3)" in rows["pose_reason"].iloc[1]
    assert f"the pose {three_corners} cannot be compared: ValueError" in rows["pose_reason"].iloc[2]
    assert "keypoint_rows are given for" in rows["pose_reason"].iloc[3] and "a driving video" in rows["pose_reason"].iloc[3]
    assert "a pose_kind driving_video has none" in rows["reason"].iloc[4] and "pose_kind must be one of" in rows["reason"].iloc[5]
    assert rows["clip_score"].iloc[:4].notna().all()  # the CLIP figures stand whatever the pose


def pq_read(path: Path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def test_hostile_boxes_times_names_and_json_are_rows_not_crashes(astronaut, clip_dir, tmp_path, capsys):
    """Boxes that do not fit their persons would give a wrong AP (a NaN box used to score 1.0 for a person 200 px
    off); a time jump of 1e9 s used to tick the sampler a billion times; a prompt that is not Unicode, a file name
    that is not UTF-8, JSON nested 100 000 deep or a number of 5000 digits used to stop the whole run."""
    table = pq_read(write_keypoints(tmp_path / "17.parquet", [astronaut["photo"]] * 4))
    info = {"format": "fyp-pose-sequence", "skeleton_style": "openpose", "min_keypoint_score": MIN_SCORE}
    boxes = table.column("bboxes").to_pylist()

    def variant(name: str, column: str, values: list) -> str:
        field = table.schema.field(column)
        changed = table.set_column(table.schema.get_field_index(column), column, pa.array(values, field.type))
        if column == "keypoints":  # the parts follow the persons (null: not found), so that only the boxes are off
            for part in PARTS:
                nulls = [[None] * len(frame) for frame in values]
                changed = changed.set_column(changed.schema.get_field_index(part), part, pa.array(nulls, changed.schema.field(part).type))
        return str(PoseSequence(changed, info).save(tmp_path / f"{name}.parquet"))

    nan_box = variant("nan_box", "bboxes", [[[float("nan")] * 4 for _ in frame] for frame in boxes])
    reversed_box = variant("reversed_box", "bboxes", [[[b[2], b[1], b[0], b[3]] for b in frame] for frame in boxes])
    point_box = variant("point_box", "bboxes", [[[200.0, 200.0, 200.0, 200.0] for _ in frame] for frame in boxes])  # holds no keypoint
    one_box = variant("one_box", "keypoints", [frame * 2 for frame in table.column("keypoints").to_pylist()])  # two persons, one box
    time_jump = variant("time_jump", "time", [0.0, 0.125, 0.25, 1e9])
    odd_name = tmp_path / os.fsdecode(b"caf\xe9.mp4")  # a file name that is not UTF-8
    shutil.copy(astronaut["video"], odd_name)
    video = str(astronaut["video"])
    lines = jsonl(tmp_path / "v.jsonl", [
        {"video": video, "prompt": "a", "pose": nan_box},
        {"video": video, "prompt": "a", "pose": reversed_box},
        {"video": video, "prompt": "a", "pose": one_box},
        {"video": video, "prompt": "a", "pose": time_jump},
        {"video": video, "prompt": "a \ud800 man"},
        {"video": str(odd_name), "prompt": "a"},
        "[" * 100_000,
        '{"video": "a.mp4", "prompt": "a", "keypoint_rows": [' + "9" * 5000 + "]}",
        {"video": video, "prompt": "a", "pose": point_box},
        {"video": str(odd_name), "prompt": "a", "pose": str(odd_name), "pose_kind": "driving_video"},
    ])  # fmt: skip
    code, out, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 2 and "3 of 10 video(s) could not be scored" in err and "Traceback" not in err + out
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert rows["status"].tolist() == ["ok", "ok", "ok", "ok", "failed", "ok", "failed", "failed", "ok", "ok"]
    assert "has a box that does not hold its person's keypoints: [200.0, 200.0, 200.0, 200.0]" in rows["pose_reason"].iloc[8]
    assert rows["pose_ap"].iloc[9] == 1.0 and list(rows["frame_oks"].iloc[9]) == [1.0] * 4  # its own driving video
    why = rows["pose_reason"].tolist()
    assert "has a box that is not (x0, y0, x1, y1)" in why[0] and "x0 <= x1" in why[1] and "has 1 box(es) for 2 person(s)" in why[2]
    assert rows["pose_ap"].iloc[:3].isna().all()
    assert rows["pose_ap"].iloc[3] == 1.0 and rows["pose_frames"].iloc[3] == 4  # the 4th tick takes the row at 0.25 s
    assert "prompt is not valid Unicode text" in rows["reason"].iloc[4]
    assert rows["path"].iloc[5] == str(tmp_path / "caf\\udce9.mp4") and rows["clip_score"].iloc[5] == rows["clip_score"].iloc[3]
    assert "nested too deeply" in rows["reason"].iloc[6] and "4300" in rows["reason"].iloc[7]


def test_a_rerun_scores_again_what_changed_beside_a_skeleton_video_or_in_the_clip_folder(astronaut, tmp_path, capsys):
    clip_dir = make_tiny_clip(tmp_path / "clip", seed=0)
    poses = tmp_path / "poses"  # as extract-poses writes them: skeleton.mp4 with keypoints.parquet beside it
    poses.mkdir()
    write_keypoints(poses / "keypoints.parquet", [astronaut["photo"]] * 4)
    write_video([render_skeleton("openpose", astronaut["photo"], 512, 512, MIN_SCORE)] * 4, poses / "skeleton.mp4", 8.0,
                comment={"format": "fyp-skeleton-video", "skeleton_style": "openpose"})  # fmt: skip
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(poses / "skeleton.mp4")}])

    def run() -> tuple[dict, pd.Series]:
        code, _, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
        assert code == 0, err
        return json.loads((tmp_path / "eval" / "summary.json").read_text())["counts"], pd.read_parquet(tmp_path / "eval" / "metrics.parquet").iloc[0]

    counts, first = run()
    assert counts["reused"] == 0 and first["pose_ap"] == 1.0
    assert run()[0]["reused"] == 1
    write_keypoints(poses / "keypoints.parquet", [[_moved(astronaut["photo"][0], 30.0)]] * 4)  # the poses beside the skeleton video change
    counts, moved = run()
    assert counts["reused"] == 0 and moved["pose_ap"] < 1.0 and moved["clip_score"] == first["clip_score"]
    make_tiny_clip(clip_dir, seed=1)  # another model saved over the same folder
    counts, other = run()
    assert counts["reused"] == 0 and other["clip_score"] != first["clip_score"] and other["pose_ap"] == moved["pose_ap"]
    assert run()[0]["reused"] == 1


def test_mmpose_runs_on_clips_device_unless_the_config_names_its_own(monkeypatch):
    from model.evaluation.cli import build_parser, eval_config

    def config(*args: str):
        return eval_config(build_parser().parse_args(["in.jsonl", "--output", "out", *args]))

    for args in ((), ("--config", "eval")):
        cfg = config(*args, "--pose-backend", "mmpose")
        assert cfg.pose.device == cfg.device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as choosing devices goes
    for args in ((), ("--config", "eval")):
        cfg = config(*args, "--pose-backend", "mmpose")
        assert cfg.device == "cuda" and cfg.pose.device == "cuda"  # MMPose used to stay on the CPU
    assert config("--pose-backend", "mmpose", "--set", "pose.device=cuda:1").pose.device == "cuda:1"
    assert config("--pose-backend", "mmpose", "--set", "pose.device=cuda:1", "--device", "cpu").pose.device == "cpu"


def test_overall_pools_the_false_positives_of_a_video_with_no_visible_requested_person(astronaut):
    from model.evaluation.evaluate_videos import overall
    from model.evaluation.pose_accuracy import detected_annotations, keypoint_ap, requested_annotations

    def row(ap, requested, detected) -> dict:
        return {"status": "ok", "frame_clip_scores": [25.0] * 4, "frame_consistency": 99.0, "_pairs": 3, "person_found": 1.0, "clip_score": 25.0,
                "pose_frames": 4, "pose_ap": ap, "_compared": [0, 1, 2, 3], "_requested": requested, "_detected": detected}  # fmt: skip

    good = (requested_annotations(pose_rows(astronaut["frames"]), 512, 512, MIN_SCORE), detected_annotations(astronaut["frames"]))
    unseen = requested_annotations(pose_rows(astronaut["frames"], 600.0), 512, 512, MIN_SCORE)  # beyond the right edge
    sure = [dict(a, score=1.0) for a in good[1]]
    alone = overall([row(1.0, *good)])
    both = overall([row(1.0, *good), row(None, unseen, sure)])
    assert alone["pose_ap"] == keypoint_ap([([0, 1, 2, 3], *good)]).ap == 1.0
    assert both["pose_ap"] == keypoint_ap([([0, 1, 2, 3], *good), ([0, 1, 2, 3], unseen, sure)]).ap < 1.0
    assert both["pose_frames"] == 8 and both["pose_ap_mean_per_video"] == 1.0 and both["clip_score"] == 25.0


def test_one_video_failing_in_an_unforeseen_way_is_its_row_and_the_others_are_scored(astronaut, clip_dir, tmp_path, caplog):
    from model.evaluation.config import EvalConfig
    from model.evaluation.evaluate_videos import evaluate_videos
    from model.evaluation.inputs import EvalItem

    cfg = EvalConfig(clip_model=str(clip_dir), device="cpu", pose=PoseModelConfig(backend="mediapipe"))
    video = str(astronaut["video"])
    items = [EvalItem(video, prompt=123, origin="built by hand"), EvalItem(video, prompt="an astronaut", origin="built by hand")]  # type: ignore[arg-type]
    summary, table = evaluate_videos(items, cfg, tmp_path / "eval", progress=False)
    first, second = table.to_pylist()
    assert first["status"] == "failed" and first["reason"].startswith("unexpected error: ValueError: text input must be of type")
    assert second["status"] == "ok" and second["frames"] == 4 and summary["counts"]["failed"] == 1
    assert "could not be scored: ValueError" in caplog.text and "Traceback" not in caplog.text


def test_a_hub_models_cached_revision_is_part_of_the_resume_key(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from model.evaluation.config import EvalConfig
    from model.evaluation.resume_journal import fingerprint, hub_revision

    cache = tmp_path / "hub"  # the hub cache's layout: models--OWNER--NAME/{refs/main, snapshots/COMMIT/...}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--someone--clip"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    cfg = EvalConfig(clip_model="someone/clip")
    first = fingerprint(cfg)
    assert hub_revision("someone/clip") == "a" * 40 and first["clip_revision"] == "a" * 40
    (repo / "refs" / "main").write_text("b" * 40)  # a newer snapshot downloaded since
    assert hub_revision("someone/clip") == "b" * 40 and fingerprint(cfg) != first
    assert hub_revision("nobody/clip") is None and hub_revision(str(tmp_path)) is None and hub_revision("~nosuchuser/x") is None


def test_a_torn_or_incomplete_journal_line_is_scored_again_and_nothing_else_is(astronaut, clip_dir, tmp_path, capsys):
    requested = write_keypoints(tmp_path / "k.parquet", [astronaut["photo"]] * 4)
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut", "pose": str(requested)},
                                         {"video": str(astronaut["video"]), "prompt": "a man"},
                                         {"video": str(astronaut["video"]), "prompt": "a woman"}])  # fmt: skip
    out = tmp_path / "eval"

    def run() -> tuple[int, float]:
        assert run_eval(clip_dir, capsys, str(lines), "--output", str(out))[0] == 0
        summary = json.loads((out / "summary.json").read_text())
        return summary["counts"]["reused"], summary["overall"]["pose_ap"]

    assert run() == (0, 1.0)
    journal = out / "scored.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(entries) == 3 and entries[0]["row"]["_compared"] == [0, 1, 2, 3]
    no_requested = {"key": entries[0]["key"], "row": {k: v for k, v in entries[0]["row"].items() if k != "_requested"}}
    no_pairs = {"key": entries[1]["key"], "row": {**entries[1]["row"], "_pairs": 0}}  # valid JSON, not what was scored
    torn = '{"key": "abc", "row": {"sta'  # a killed run's last line
    journal.write_text("\n".join(json.dumps(e) for e in (no_requested, no_pairs, entries[2])) + "\n" + torn)
    assert run() == (1, 1.0)  # the two spoilt rows are scored again, the whole one reused
    assert run() == (3, 1.0)  # and journaled whole, after the torn line


# ------------------------------------------------------------------------------------------------ issue 18: hardening


def sidecar(folder: Path, name: str, **fields) -> Path:
    """A minimal fyp-generate sidecar (no pose: pose accuracy stays empty) named ``name`` in ``folder``."""
    from model.generation.make_video import SIDECAR_FORMAT

    path = folder / name
    path.write_text(json.dumps({"format": SIDECAR_FORMAT, "prompt": "an astronaut", "fps": 8.0, **fields}))
    return path


def small_video(path: Path, frames: int = 4) -> Path:
    """A real 64 x 64 video (mp4 or GIF) of ``frames`` distinct frames (a GIF merges repeated ones)."""
    return write_video([np.roll(photo("astronaut", 64), 8 * i, axis=1) for i in range(frames)], path, 8.0)


def test_new_and_old_sidecar_names_are_read_and_clip_mp4_and_clip_gif_are_two_videos(clip_dir, tmp_path, capsys, caplog):
    """fyp-generate names a sidecar after the video's whole file name (clip.mp4.json, clip.gif.json) and used to name
    it after the stem (clip.json): both are read, a video with both is scored once (clip.mp4.json's), a spoilt new-style
    sidecar is named, a sidecar without a "video" field means the video its name gives, and generate_manifest.json is
    never a sidecar."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("clip.mp4", "clip.gif", "old.mp4", "spoilt.mp4", "nameless.gif", "generate_manifest.mp4"):
        small_video(folder / name)
    sidecar(folder, "clip.mp4.json", video="clip.mp4", prompt="an mp4")
    sidecar(folder, "clip.gif.json", video="clip.gif", prompt="a gif")
    sidecar(folder, "clip.json", video="clip.mp4", prompt="stale")  # an older run's sidecar of the same video
    sidecar(folder, "old.json", video="old.mp4", prompt="written by an older fyp-generate")
    (folder / "spoilt.mp4.json").write_text('{"format": "fyp-generated-video", "prompt": ')  # a killed write
    sidecar(folder, "nameless.gif.json", prompt="no video field")
    sidecar(folder, "generate_manifest.mp4.json", video="generate_manifest.mp4", prompt="a video named like the manifest")
    sidecar(folder, "generate_manifest.json", video="clip.gif", prompt="the manifest")  # never a sidecar, whatever it holds
    small_video(folder / ".clip.tmp-0a1b2c3d.mp4")  # what a fyp-generate killed while writing leaves: never an item
    sidecar(folder, ".clip.mp4.tmp-0a1b2c3d.json", video="clip.mp4", prompt="half written")
    code, out, err = run_eval(clip_dir, capsys, str(folder), "--output", str(tmp_path / "eval"))
    assert code == 2 and "1 of 6 video(s) could not be scored" in err and "Traceback" not in out + err
    rows = {Path(r["origin"]).name: r for r in pd.read_parquet(tmp_path / "eval" / "metrics.parquet").to_dict("records")}
    assert sorted(rows) == ["clip.gif.json", "clip.mp4.json", "generate_manifest.mp4.json", "nameless.gif.json", "old.json", "spoilt.mp4"]
    assert rows["clip.mp4.json"]["prompt"] == "an mp4" and rows["clip.gif.json"]["prompt"] == "a gif"
    assert rows["clip.mp4.json"]["path"] == str(folder / "clip.mp4") and rows["clip.gif.json"]["path"] == str(folder / "clip.gif")
    assert rows["nameless.gif.json"]["path"] == str(folder / "nameless.gif")
    for name in ("clip.mp4.json", "clip.gif.json", "old.json", "nameless.gif.json", "generate_manifest.mp4.json"):
        assert rows[name]["status"] == "ok" and rows[name]["frames"] == 4, rows[name]
    assert rows["spoilt.mp4"]["reason"].startswith("its sidecar spoilt.mp4.json cannot be read as JSON (")
    assert f"skipped sidecar {folder / 'clip.json'}: it names the video {folder / 'clip.mp4'}" in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "sparse_6gb"])
@pytest.mark.timeout(120)
def test_a_folder_reads_only_regular_json_files_of_bounded_size_and_names_what_it_skipped(kind, clip_dir, tmp_path, capsys, caplog):
    """A FIFO named x.json used to hang fyp-eval forever, a symlink to /dev/zero or a 6 GB sparse file to fill the
    memory: they are skipped with a warning naming them, the video beside says why it has no sidecar, and the rest
    is scored."""
    folder = tmp_path / "videos"
    folder.mkdir()
    small_video(folder / "good.mp4")
    sidecar(folder, "good.mp4.json", video="good.mp4")
    small_video(folder / "x.mp4")
    hostile = folder / "x.mp4.json"
    if kind == "fifo":
        os.mkfifo(hostile)
        why = "a FIFO, not a regular file"
    elif kind == "dev_zero":
        hostile.symlink_to("/dev/zero")
        why = "a character device, not a regular file"
    else:
        with open(hostile, "wb") as f:
            f.truncate(6 * 2**30)  # sparse: no disk used
        why = "6.0 GiB, larger than the 16.0 MiB fyp-eval reads"
    code, out, err = run_eval(clip_dir, capsys, str(folder), "--output", str(tmp_path / "eval"))
    assert code == 2 and "1 of 2 video(s) could not be scored" in err and "Traceback" not in out + err
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet").set_index("path")
    assert rows.loc[str(folder / "good.mp4"), "status"] == "ok"
    assert rows.loc[str(folder / "x.mp4"), "reason"] == f"its sidecar x.mp4.json was skipped: {why}"
    assert f"skipped {hostile}: {why}" in caplog.text


@pytest.mark.timeout(120)
def test_a_jsonl_input_must_be_a_regular_bounded_file_and_its_videos_regular_files(astronaut, clip_dir, tmp_path, capsys):
    """A 6 GB sparse .jsonl INPUT used to be read whole (MemoryError), a FIFO listed as a video to hang the decoder:
    the INPUT is refused in one line, the FIFO video is a row with its reason, a FIFO pose a pose reason."""
    sparse = tmp_path / "huge.jsonl"
    with open(sparse, "wb") as f:
        f.truncate(6 * 2**30)
    code, out, err = run_eval(clip_dir, capsys, str(sparse), "--output", str(tmp_path / "eval"))
    assert code == 2 and "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == (f"fyp-eval: error: INPUT {sparse}: 6.0 GiB, larger than the 256.0 MiB fyp-eval reads; "
                                            "pass a regular .jsonl file (split a larger one into several INPUTs)")  # fmt: skip
    piped = tmp_path / "piped.jsonl"
    os.mkfifo(piped)
    code, _, err = run_eval(clip_dir, capsys, str(piped), "--output", str(tmp_path / "eval"))
    assert code == 2 and f"INPUT {piped}: a FIFO, not a regular file" in err
    os.mkfifo(tmp_path / "fifo.mp4")
    os.mkfifo(tmp_path / "fifo.parquet")
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(tmp_path / "fifo.mp4"), "prompt": "a"},
                                         {"video": str(astronaut["video"]), "prompt": "a", "pose": str(tmp_path / "fifo.parquet")}])  # fmt: skip
    code, out, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval"))
    assert code == 2 and "1 of 2 video(s) could not be scored" in err and "Traceback" not in out + err
    rows = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert rows["reason"].iloc[0] == f"{lines}:1: the video {tmp_path / 'fifo.mp4'} is a FIFO, not a video file"
    assert rows["status"].iloc[1] == "ok" and rows["pose_reason"].iloc[1] == f"the pose {tmp_path / 'fifo.parquet'} is a FIFO, not a file or a folder of frames"


@pytest.mark.parametrize("kind", ["fifo", "sparse_6gb"])
@pytest.mark.timeout(120)
def test_a_journal_that_is_not_a_regular_file_or_has_an_endless_line_is_refused(kind, astronaut, clip_dir, tmp_path, capsys):
    """DIR/scored.jsonl as a FIFO used to hang the run (opened to append), as a 6 GB sparse file to be read whole."""
    out = tmp_path / "eval"
    out.mkdir()
    journal = out / "scored.jsonl"
    if kind == "fifo":
        os.mkfifo(journal)
        why = f"{journal} is a FIFO, not fyp-eval's journal (a regular file): remove it, or choose another --output"
    else:
        with open(journal, "wb") as f:
            f.truncate(6 * 2**30)
        why = f"{journal}: line 1 is longer than 64 MiB, so this is not fyp-eval's journal: remove it, or choose another --output"
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(astronaut["video"]), "prompt": "an astronaut"}])
    code, stdout, err = run_eval(clip_dir, capsys, str(lines), "--output", str(out))
    assert code == 2 and err.strip().splitlines()[-1] == f"fyp-eval: error: {why}" and "Traceback" not in stdout + err


def test_a_sidecar_cannot_point_fyp_eval_at_a_video_outside_its_folder(clip_dir, tmp_path, capsys, caplog):
    """A sidecar's "video" is a file beside it: an absolute path, ../x.mp4 or sub/x.mp4 is refused, and so is a video or
    a sidecar that is a symlink to a file outside the folder; a symlink inside the folder is fine, and a JSONL INPUT
    (the way out the message gives) scores the outside video."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = small_video(outside / "secret.mp4")
    sidecar(outside, "planted.json", video="linked_sidecar.mp4", prompt="planted")
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    small_video(folder / "sub" / "inside.mp4")
    sidecar(folder, "absolute.mp4.json", video=str(secret))
    sidecar(folder, "dotdot.mp4.json", video="../outside/secret.mp4")
    sidecar(folder, "nested.mp4.json", video="sub/inside.mp4")
    (folder / "linked.mp4").symlink_to(secret)
    sidecar(folder, "linked.mp4.json", video="linked.mp4")
    small_video(folder / "linked_sidecar.mp4")
    (folder / "linked_sidecar.mp4.json").symlink_to(outside / "planted.json")
    small_video(folder / "real.mp4")
    (folder / "alias.mp4").symlink_to("real.mp4")  # a symlink that stays inside
    sidecar(folder, "alias.mp4.json", video="alias.mp4")
    code, out, err = run_eval(clip_dir, capsys, str(folder), "--output", str(tmp_path / "eval"))
    assert code == 2 and "6 of 7 video(s) could not be scored" in err and "Traceback" not in out + err
    table = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    assert not any(str(outside) in path for path in table.loc[table["status"] == "ok", "path"])
    reason = {Path(origin).name: r for origin, r in zip(table["origin"], table["reason"])}
    for name, given in (("absolute.mp4.json", str(secret)), ("dotdot.mp4.json", "../outside/secret.mp4"), ("nested.mp4.json", "sub/inside.mp4")):
        assert reason[name] == (f"sidecar {folder / name}: not a readable fyp-generate sidecar (video must be the name of a file beside "
                                f"the sidecar, got {given!r}: fyp-eval scores only videos inside a folder INPUT; to score a video "
                                "elsewhere, list it in a .jsonl INPUT)")  # fmt: skip
    assert reason["linked.mp4.json"] == (f"the video {folder / 'linked.mp4'} of sidecar linked.mp4.json is a symlink to {secret}, outside "
                                         f"the folder {folder}: fyp-eval scores only files inside a folder INPUT; to score it, list it in a .jsonl INPUT")  # fmt: skip
    assert reason["linked_sidecar.mp4"] == (f"its sidecar linked_sidecar.mp4.json was skipped: a symlink to {outside / 'planted.json'}, "
                                            f"outside the folder {folder}")  # fmt: skip
    assert "no fyp-generate sidecar" in reason["inside.mp4"]  # nested.mp4.json did not claim it
    alias = table.set_index("origin").loc[str(folder / "alias.mp4.json")]
    assert alias["status"] == "ok" and alias["path"] == str(folder / "alias.mp4") and str(folder / "real.mp4") not in set(table["path"])
    lines = jsonl(tmp_path / "v.jsonl", [{"video": str(secret), "prompt": "listed on purpose"}])
    code, _, err = run_eval(clip_dir, capsys, str(lines), "--output", str(tmp_path / "eval-jsonl"))
    assert code == 0, err


class PoseSpy:
    """The real pose estimator, noting how many frames each call gets and how many of the frames it was ever given
    are still alive (held by anyone) at each call."""

    def __init__(self, estimator) -> None:
        import weakref

        self.estimator, self.weakref = estimator, weakref
        self.calls: list[int] = []
        self.alive: list[int] = []
        self.refs: list = []

    def __call__(self, frames: list) -> list:
        self.refs.extend(self.weakref.ref(frame) for frame in frames)
        self.calls.append(len(frames))
        self.alive.append(sum(ref() is not None for ref in self.refs))
        return self.estimator(frames)


def test_frames_are_handed_to_clip_and_the_pose_model_in_batches_and_let_go(astronaut, clip, mediapipe, tmp_path, monkeypatch):
    """fyp-eval used to hold every decoded frame at full size (a 4K video of 600 frames: ~15 GB): the frames go to
    CLIP and to the pose model a batch at a time as they are decoded, and are let go after; the figures are those of
    the whole list (to the last bit for a video of at most one batch)."""
    from model.evaluation.config import EvalConfig
    from model.evaluation.inputs import EvalItem
    from model.evaluation.video_scoring import Models, score_video

    image = photo("astronaut", 96)
    frames = [np.roll(image, 4 * i, axis=1) for i in range(20)]  # 20 distinct frames
    video = write_video(frames, tmp_path / "long.mp4", 8.0)
    short = write_video(frames[:4], tmp_path / "short.mp4", 8.0)
    clip_batches: list[int] = []
    real_features = clip.model.get_image_features

    def features(pixel_values, **kwargs):
        clip_batches.append(len(pixel_values))
        return real_features(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(clip.model, "get_image_features", features)
    cfg = EvalConfig(clip_model="unused", device="cpu", batch_size=4, pose=PoseModelConfig(backend="mediapipe", batch_size=3))
    models = Models(cfg)
    models._clip, models._pose = clip, PoseSpy(mediapipe)
    row = score_video(EvalItem(str(video), prompt="an astronaut", origin="test"), models, tmp_path / "poses")
    assert row["status"] == "ok" and row["frames"] == 20
    assert models.pose.calls == [3] * 6 + [2] and clip_batches == [4] * 5
    assert max(models.pose.alive) <= 3, models.pose.alive  # the pose batch alone (CLIP keeps its small inputs), never all 20
    decoded: list[np.ndarray] = []
    decode_video(video, on_frame=lambda frame, t: decoded.append(frame_to_rgb(frame)))
    text = clip.text_embedding("an astronaut")
    whole = clip.image_embeddings(decoded, batch_size=4)
    assert np.allclose(row["frame_clip_scores"], 100 * frame_clip_cosines(text, whole), rtol=0, atol=1e-4)
    assert row["frame_persons"] == [len(p) for p in mediapipe(decoded)]
    small = score_video(EvalItem(str(short), prompt="an astronaut", origin="test"), models, tmp_path / "poses")
    decoded = []
    decode_video(short, on_frame=lambda frame, t: decoded.append(frame_to_rgb(frame)))
    images = clip.image_embeddings(decoded, batch_size=4)
    assert small["clip_score"] == clip_score(text, images) and small["frame_consistency"] == frame_consistency(images)
