"""Typed configs: presets load, round-trip, precedence of layers, named errors."""

from __future__ import annotations

import pytest
import yaml

from pipelines.cli import build_parser, laion_pose_config
from pose_data.config import from_dict, load_config, parse_overrides, to_dict
from pose_data.laion.config import PRESETS, LaionPoseConfig, preset_or_file


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_validate_and_round_trip(preset, tmp_path):
    cfg = load_config(LaionPoseConfig, preset_or_file(preset))
    cfg.validate()
    assert from_dict(LaionPoseConfig, to_dict(cfg)) == cfg
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(LaionPoseConfig, preset_or_file(str(path))) == cfg


def test_presets_differ_where_they_should():
    full = load_config(LaionPoseConfig, preset_or_file("laion_pose"))
    tiny = load_config(LaionPoseConfig, preset_or_file("tiny"))
    assert (full.pose.backend, full.pose.device, full.pose_worker_gpus) == ("mmpose", "cuda", 1.0)
    assert (tiny.pose.backend, tiny.pose.device, tiny.pose_worker_gpus) == ("mediapipe", "cpu", 0.0)


def test_layers_apply_in_order_defaults_preset_set_flags():
    args = build_parser().parse_args(
        ["build-laion-pose", "in.parquet", "-o", "out", "--config", "tiny", "--set", "pose.batch_size=3",
         "--set", "filter.max_persons=2", "--max-persons", "5", "--set", "ray.address=null"]
    )  # fmt: skip
    cfg = laion_pose_config(args)
    assert cfg.input.shard_size == 4  # preset over default (1000)
    assert cfg.pose.batch_size == 3  # --set over preset (4)
    assert cfg.filter.max_persons == 5  # named flag over --set
    assert cfg.ray.address is None and cfg.download.image_size == 384


def test_errors_name_the_key():
    with pytest.raises(ValueError, match=r"pose.batch_size: .*'many'"):
        load_config(LaionPoseConfig, parse_overrides(["pose.batch_size=many"]))
    with pytest.raises(ValueError, match="unknown config key.*filter.max_person\\b.*valid keys: min_keypoint_score"):
        load_config(LaionPoseConfig, parse_overrides(["filter.max_person=2"]))
    with pytest.raises(ValueError, match="not of the form"):
        parse_overrides(["pose.batch_size"])
    cfg = load_config(LaionPoseConfig, parse_overrides(["download.resize_mode=stretch"]))
    with pytest.raises(ValueError, match="resize_mode 'stretch' is not one of no, border, keep_ratio"):
        cfg.validate()
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        preset_or_file("nope.yaml")


def test_yaml_that_does_not_parse_is_named_with_its_line(tmp_path):
    from pose_data.config import load_yaml

    broken = tmp_path / "broken.yaml"
    broken.write_text("input:\n  shard_size: [4,\n")
    with pytest.raises(ValueError, match=r"config file .*broken.yaml is not valid YAML: .* at line 3, column 1$"):
        load_yaml(broken)
    with pytest.raises(ValueError, match=r"override 'input.shard_size=\[4,': the value is not valid YAML"):
        parse_overrides(["input.shard_size=[4,"])


def test_a_partial_section_keeps_the_fields_own_defaults():
    """extract-poses' filter defaults differ from FilterConfig's: setting one key must not bring the others back."""
    from pose_data.extract_poses.config import ExtractPosesConfig

    cfg = load_config(ExtractPosesConfig, parse_overrides(["filter.min_keypoint_score=0.4"]))
    assert (cfg.filter.min_keypoint_score, cfg.filter.min_keypoints, cfg.filter.max_persons, cfg.filter.min_image_size) == (0.4, 4, 20, 0)
    assert load_config(LaionPoseConfig, parse_overrides(["filter.max_persons=2"])).filter.min_keypoints == 8
