"""Hands and face on a person: records, the ``keypoints.parquet`` columns, their checks, and drawing from a row."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pose_data.extract_poses.sequence import METADATA_KEY, SCHEMA, read_pose_sequence
from pose_data.pose.keypoints import PART_FIELDS, PARTS, PersonPose
from pose_data.skeleton.render import render_skeleton

W, H = 320, 240


def body() -> np.ndarray:
    kps = np.zeros((17, 3), np.float32)
    kps[:, 0] = np.linspace(100, 220, 17)
    kps[:, 1] = np.linspace(40, 200, 17)
    kps[:, 2] = 0.9
    return kps


def part(n: int, x0: float, y0: float, score: float = 1.0) -> np.ndarray:
    points = np.zeros((n, 3), np.float32)
    points[:, 0] = x0 + np.arange(n) * 1.5
    points[:, 1] = y0 + (np.arange(n) % 5) * 2.25
    points[:, 2] = score
    return points


def whole_person() -> PersonPose:
    return PersonPose((90, 30, 230, 210), 0.8, body(), hand_left=part(21, 230.004, 150.006), hand_right=part(21, 60.125, 150),
                      face=part(68, 140, 40.335))  # fmt: skip


def test_parts_are_optional_checked_and_round_trip_through_records():
    p = whole_person()
    record = p.to_record()
    assert set(record) == {"bbox", "score", "keypoints", *PARTS}
    assert record["hand_left"][0] == [230.0, 150.01, 1.0]  # stored as the body is: 2 decimals, score 4
    back = PersonPose.from_record(json.loads(json.dumps(record)))
    for name in PARTS:
        assert getattr(back, name).dtype == np.float32
        assert np.array_equal(getattr(back, name), np.asarray(record[name], dtype=np.float32))
    body_only = PersonPose((0, 0, 1, 1), 0.5, body())
    assert set(body_only.to_record()) == {"bbox", "score", "keypoints"} and not body_only.has_parts
    old = {"bbox": [0, 0, 1, 1], "score": 0.5, "keypoints": body().tolist()}  # a record written before parts existed
    assert PersonPose.from_record(old).hand_left is None
    with pytest.raises(ValueError, match=r"hand_right must have shape \(21, 3\) or be None, got \(20, 3\)"):
        PersonPose((0, 0, 1, 1), 0.5, body(), hand_right=np.zeros((20, 3)))
    with pytest.raises(ValueError, match=r"face must have shape \(68, 3\)"):
        PersonPose((0, 0, 1, 1), 0.5, body(), face=np.zeros((21, 3)))


def write_sequence(path, people_rows: list[list[PersonPose]], *, style: str = "openpose_full", schema: pa.Schema = SCHEMA) -> None:
    records = [[p.to_record() for p in people] for people in people_rows]
    columns = {
        "frame": list(range(len(records))), "time": [i / 8 for i in range(len(records))], "width": [W] * len(records),
        "height": [H] * len(records), "status": ["ok"] * len(records), "error": [None] * len(records),
        "num_persons": [len(r) for r in records], "bboxes": [[p["bbox"] for p in r] for r in records],
        "person_scores": [[p["score"] for p in r] for r in records], "keypoints": [[p["keypoints"] for p in r] for r in records],
        **{name: [[p.get(name) for p in r] for r in records] for name in PARTS},
    }  # fmt: skip
    table = pa.table({name: columns[name] for name in schema.names}, schema=schema)
    meta = {METADATA_KEY: json.dumps({"skeleton_style": style, "min_keypoint_score": 0.3}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path)


def test_keypoints_parquet_holds_the_parts_and_draws_them_as_the_estimator_output(tmp_path):
    people = [whole_person(), PersonPose((0, 0, 50, 50), 0.5, body() * [0.3, 0.3, 1])]  # the second: body only
    write_sequence(tmp_path / "k.parquet", [people, people[1:]])
    table = pq.read_table(tmp_path / "k.parquet")
    assert [table.schema.field(f.name).type for f in PART_FIELDS] == [f.type for f in PART_FIELDS]
    assert table.column("hand_left").to_pylist()[0][1] is None and len(table.column("face").to_pylist()[0][0]) == 68
    sequence = read_pose_sequence(tmp_path / "k.parquet")
    drawn = list(sequence.skeletons())  # the recorded style, openpose_full
    assert np.array_equal(drawn[0], render_skeleton("openpose_full", people, W, H, 0.3))
    assert np.array_equal(drawn[1], render_skeleton("openpose_full", people[1:], W, H, 0.3))
    assert not np.array_equal(drawn[0], render_skeleton("openpose_full", [PersonPose.from_record(
        {k: v for k, v in people[0].to_record().items() if k not in PARTS})] + people[1:], W, H, 0.3))  # the parts are drawn  # fmt: skip
    # the body-only styles draw the same bytes with and without the parts
    assert np.array_equal(next(sequence.skeletons("openpose")), render_skeleton("openpose", [PersonPose(
        people[0].bbox, 1.0, people[0].keypoints), people[1]], W, H, 0.3))  # fmt: skip


def test_a_keypoints_file_from_before_parts_still_reads_and_draws(tmp_path):
    old_schema = pa.schema([f for f in SCHEMA if f.name not in PARTS])
    write_sequence(tmp_path / "old.parquet", [[whole_person()]], style="openpose", schema=old_schema)
    sequence = read_pose_sequence(tmp_path / "old.parquet")
    expected = render_skeleton("openpose_full", [PersonPose(whole_person().bbox, 1.0, whole_person().keypoints)], W, H, 0.3)
    assert np.array_equal(next(sequence.skeletons("openpose_full")), expected)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("hand_left", [[[[1.0, 2.0, 0.5]] * 20]], r"row 0 has a hand_left of shape \(20, 3\), expected \(21, 3\) or null"),
        ("face", [[None, None]], r"row 0 has 2 face entries for 1 person\(s\)"),
        ("hand_right", [[[[float("inf"), 2.0, 0.5]] * 21]], "row 0 has a hand_right coordinate that is not a number of pixels"),
        ("face", [[[[1e7, 2.0, 0.5]] * 68]], "row 0 has a face coordinate that is not a number of pixels within 1e"),
    ],
)
def test_a_bad_part_column_is_refused_naming_the_file_row_and_column(tmp_path, name, value, message):
    write_sequence(tmp_path / "k.parquet", [[PersonPose((90, 30, 230, 210), 0.8, body())]])
    table = pq.read_table(tmp_path / "k.parquet")
    table = table.set_column(table.schema.get_field_index(name), name, pa.array(value, type=table.schema.field(name).type))
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=message) as caught:
        read_pose_sequence(tmp_path / "bad.parquet")
    assert str(tmp_path / "bad.parquet") in str(caught.value)


def test_a_video_extracted_before_min_hand_keypoints_existed_is_still_skipped(tmp_path):
    """Settings gained ``filter.min_hand_keypoints``; a keypoints.parquet recorded without it (an earlier version's)
    is the same extraction, not a reason to redo hours of poses."""
    import subprocess
    import sys
    from importlib import resources
    from pathlib import Path

    carphone = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))
    cmd = [str(Path(sys.executable).parent / "pose-data"), "extract-poses", str(carphone), "--output", str(tmp_path), "--config", "tiny",
           "--max-frames", "2", "--no-progress"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    path = tmp_path / "carphone" / "keypoints.parquet"
    table = pq.read_table(path)
    info = json.loads(table.schema.metadata[METADATA_KEY])
    assert info["settings"]["filter"]["min_hand_keypoints"] is None
    del info["settings"]["filter"]["min_hand_keypoints"]  # as the earlier version wrote it
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(info).encode()}), path)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "(skipped)" in again.stdout, again.stdout + again.stderr[-1000:]
    changed = subprocess.run([*cmd, "--min-keypoints", "5"], capture_output=True, text=True, timeout=300)
    assert changed.returncode == 0 and "(skipped)" not in changed.stdout  # a real change is still redone


def test_whole_body_options_need_a_whole_body_backend(caplog):
    from pose_data.config import load_config
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.laion.config import LaionPoseConfig, preset_or_file

    cfg = load_config(LaionPoseConfig, preset_or_file("tiny"), {"filter": {"min_hand_keypoints": 10}})
    assert cfg.pose.backend == "mediapipe"
    with pytest.raises(ValueError, match=r"filter.min_hand_keypoints needs a pose backend that finds hands \(mmpose-wholebody or "
                                         r"mediapipe-holistic\); pose.backend 'mediapipe' finds bodies only"):  # fmt: skip
        cfg.validate()
    cfg.pose.backend = "mediapipe-holistic"
    cfg.validate()
    extract = ExtractPosesConfig(skeleton_style="openpose_full")
    with caplog.at_level("WARNING"):
        extract.validate()
    assert "skeleton style openpose_full draws hands and faces, but pose backend mmpose finds bodies only" in caplog.text
    caplog.clear()
    extract.pose.backend = "mmpose-wholebody"
    extract.validate()
    assert caplog.text == ""
