"""Stage 1 for real: tiny SD base saved and reloaded, real LAION-Pose shards built by the pipeline."""

from __future__ import annotations

import collections
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from laion_shards import build_laion_pose_shards
from model.training.stage1_config import Stage1Config, preset_or_file
from pose_data.config import from_dict, load_config, to_dict


@pytest.fixture(scope="module")
def laion_pose_dir(ray_local, local_site, tmp_path_factory):
    """A real LAION-Pose output with a handful of kept samples (real photos and variants of them), in two shards."""
    return build_laion_pose_shards(tmp_path_factory.mktemp("s1data") / "laion_pose", local_site)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from model.nets.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("base") / "tiny-sd", seed=0)


def tiny_cfg(tmp_path, laion_pose_dir, tiny_base, **overrides) -> Stage1Config:
    layers = [preset_or_file("stage1-tiny"), {
        "output_dir": str(tmp_path / "run"), "data": {"shards": str(laion_pose_dir), "resolution": 64},
        "model": {"base": str(tiny_base)}, "validation": {"every": 0, "num_inference_steps": 2}, "log_every": 1,
    }]  # fmt: skip
    cfg = load_config(Stage1Config, *layers)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_presets_load_and_round_trip():
    for name in ("stage1", "stage1-tiny"):
        cfg = load_config(Stage1Config, preset_or_file(name))
        cfg.validate()
        assert from_dict(Stage1Config, to_dict(cfg)) == cfg
    full = load_config(Stage1Config, preset_or_file("stage1"))
    assert (full.data.resolution, full.max_steps, full.optim.learning_rate) == (512, 100_000, 3e-5)


def test_reads_the_shards_with_one_crop_for_image_and_skeleton(laion_pose_dir):
    from model.datasets.laion_pose import LaionPoseStream
    from model.datasets.shard_stream import RankPosition

    stream = LaionPoseStream(str(laion_pose_dir), resolution=64, seed=0, center_crop=False, epochs=1)
    samples = list(stream.samples())
    assert len(samples) == 5
    for s in samples:
        assert s.pixel_values.shape == s.pose.shape == (3, 64, 64)
        assert -1.0 <= float(s.pixel_values.min()) and float(s.pixel_values.max()) <= 1.0
        assert float(s.pose.max()) > 0.5 and s.caption.startswith("a photo of")
    again = list(LaionPoseStream(str(laion_pose_dir), resolution=64, seed=0, center_crop=False, epochs=1).samples())
    assert all(torch.equal(a.pose, b.pose) and a.key == b.key for a, b in zip(samples, again))
    ranks = [[s.key for s in LaionPoseStream(str(laion_pose_dir), resolution=64, seed=0, epochs=1, rank=r, world_size=2).samples()] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(s.key for s in samples) and not set(ranks[0]) & set(ranks[1])  # one GPU each
    assert all(rank == [s.key for s in samples if s.key in rank] for rank in ranks)  # a shard's stream: its own order
    position, used = RankPosition(), 0
    for batch in LaionPoseStream(str(laion_pose_dir), resolution=64, seed=0, center_crop=False, epochs=1):
        if used == 3:
            break
        position.update(batch["position"])  # empty items too (a finished stream's turn)
        used += batch["num_samples"]
    resumed = list(LaionPoseStream(str(laion_pose_dir), resolution=64, seed=0, center_crop=False, epochs=1, start=position.to_dict()).samples())
    assert [s.key for s in resumed] == [s.key for s in samples[3:]]
    assert torch.equal(resumed[0].pixel_values, samples[3].pixel_values)


def test_only_the_encoder_trains_and_frozen_weights_stay_bit_identical(tmp_path, laion_pose_dir, tiny_base):
    from model.training.stage1 import Stage1Trainer

    trainer = Stage1Trainer(tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, checkpoint_every=0))
    frozen = {name: _state(getattr(trainer.base, name)) for name in ("unet", "vae", "text_encoder")}
    encoder_before = _state(trainer.encoder)
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert all(isinstance(p, AttnProcessor2_0) for p in trainer.base.unet.attn_processors.values())  # SDPA
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in trainer.encoder.parameters()}
    trainer.train()
    for name, before in frozen.items():
        after = getattr(trainer.base, name).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed"
        assert all(not p.requires_grad for p in getattr(trainer.base, name).parameters())
    assert any(not torch.equal(encoder_before[k], v) for k, v in trainer.encoder.state_dict().items())
    assert (tmp_path / "run" / "pose_encoder" / "config.json").is_file()


def test_loss_falls_when_overfitting_a_few_samples(tmp_path, laion_pose_dir, tiny_base):
    from model.training.stage1 import Stage1Trainer, diffusion_loss

    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=60, checkpoint_every=0, batch_size=4)
    cfg.data.caption_dropout = 0.0
    cfg.optim.learning_rate, cfg.optim.warmup_steps = 1e-2, 0
    trainer = Stage1Trainer(cfg)
    batch = trainer.next_batch()

    def fixed_loss() -> float:  # same noise and timesteps every time
        torch.manual_seed(123)
        with torch.no_grad():
            return float(sum(diffusion_loss(trainer.base, trainer.encoder, batch, pose_scale=1.0, min_snr_gamma=None) for _ in range(4)))

    before = fixed_loss()
    trainer.train()
    after = fixed_loss()
    assert after < 0.93 * before, (before, after)  # measured here: 4.52 -> 3.99


def test_resume_is_exact(tmp_path, laion_pose_dir, tiny_base):
    """2N steps in one go == N steps, a new process-like trainer resuming `latest`, N more steps."""
    from model.training.stage1 import Stage1Trainer

    common = dict(max_steps=4, checkpoint_every=2, batch_size=2)
    straight = Stage1Trainer(tiny_cfg(tmp_path / "a", laion_pose_dir, tiny_base, **common))
    straight.train()

    first = Stage1Trainer(tiny_cfg(tmp_path / "b", laion_pose_dir, tiny_base, **common))
    first.train(until_step=2)
    assert (tmp_path / "b" / "run" / "checkpoints" / "checkpoint-0000002").is_dir()
    cfg = tiny_cfg(tmp_path / "b", laion_pose_dir, tiny_base, resume="latest", **common)
    cfg.data.num_workers = 2  # the resumed half reads with two DataLoader workers
    second = Stage1Trainer(cfg)
    assert (second.state.step, second.state.samples) == (2, 4)
    second.train()
    a, b = straight.encoder.state_dict(), second.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_grid_and_tensorboard(tmp_path, laion_pose_dir, tiny_base):
    from model.training.stage1 import Stage1Trainer

    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=2, checkpoint_every=0)
    cfg.validation.every, cfg.validation.num_poses = 2, 2
    cfg.validation.prompts = ["a person", "an astronaut"]
    Stage1Trainer(cfg).train()
    grid = np.asarray(Image.open(tmp_path / "run" / "validation" / "step-0000002.png"))
    assert grid.shape == (2 * 64, 3 * 64, 3)  # rows: poses; columns: skeleton + one image per prompt
    assert grid[:, :64].max() > 0 and grid[:, 64:].std() > 0
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


def test_gradient_accumulation_counts_micro_batches(tmp_path, laion_pose_dir, tiny_base):
    from model.training.stage1 import Stage1Trainer

    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=2, checkpoint_every=0, batch_size=1, gradient_accumulation_steps=3)
    cfg.optim.lr_schedule, cfg.optim.warmup_steps = "linear", 0
    cfg.model.gradient_checkpointing = True
    trainer = Stage1Trainer(cfg)
    assert trainer.base.unet.is_gradient_checkpointing
    trainer.train()
    assert (trainer.state.step, trainer.state.samples) == (2, 6)
    # the LR schedule advanced once per optimizer step, not per micro-batch: linear decay 2 of 2 steps
    assert trainer.lr_schedule.get_last_lr()[0] == pytest.approx(0.0)


def test_cli_bf16_mixed_precision_run_and_resume(tmp_path, laion_pose_dir, tiny_base):
    """fyp-train as a user runs it (own process: accelerate's precision is per process)."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    fyp = Path(sys.executable).parent / "fyp-train"
    args = [str(fyp), "stage1", "--config", "stage1-tiny", f"data.shards={laion_pose_dir}", f"model.base={tiny_base}",
            f"output_dir={tmp_path / 'run'}", "mixed_precision=bf16", "validation.every=0", "checkpoint_every=1"]  # fmt: skip
    first = subprocess.run([*args, "max_steps=1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run([*args, "max_steps=2", "--resume", "latest"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stderr and "at step 1" in second.stderr
    weights = load_file(tmp_path / "run" / "pose_encoder" / "diffusion_pytorch_model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # trainable weights stay fp32 under bf16
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2
    bad = subprocess.run([*args, "mixed_precision=fp8"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "mixed_precision 'fp8' is not one of no, fp16, bf16" in bad.stderr


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_targets_and_min_snr_weighting(tiny_base, laion_pose_dir, prediction_type):
    from diffusers import DDPMScheduler

    from model.datasets.laion_pose import LaionPoseStream, collate
    from model.nets.base_model import load_base_model
    from model.nets.pose_encoder import PoseEncoder
    from model.training.noise_loss import snr
    from model.training.stage1 import diffusion_loss

    base = load_base_model(tiny_base)
    base.noise_scheduler = DDPMScheduler.from_config(base.noise_scheduler.config, prediction_type=prediction_type)
    encoder = PoseEncoder.for_unet(base.unet)
    batch = collate(list(LaionPoseStream(str(laion_pose_dir), resolution=64, epochs=1).samples())[:2])

    def run(gamma):
        torch.manual_seed(7)
        return diffusion_loss(base, encoder, batch, pose_scale=1.0, min_snr_gamma=gamma)

    # the same draws by hand: latents, noise, timesteps in the order diffusion_loss takes them
    torch.manual_seed(7)
    from model.nets.base_model import encode_images, encode_prompts

    latents = encode_images(base, batch["pixel_values"])
    encode_prompts(base, batch["captions"])
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (2,))
    sched = base.noise_scheduler
    target = noise if prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
    with torch.no_grad():
        pred = base.unet(sched.add_noise(latents, noise, t), t, encode_prompts(base, batch["captions"])).sample
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert float(run(None)) == pytest.approx(float(per_sample.mean()), rel=1e-5)
    s = snr(sched, t)
    weight = torch.clamp(s, max=5.0) / (s + 1 if prediction_type == "v_prediction" else s)
    assert float(run(5.0)) == pytest.approx(float((per_sample * weight).mean()), rel=1e-5)


def test_workers_do_not_repeat_samples_and_keep_the_order(laion_pose_dir):
    """Before the shared stream, every DataLoader worker yielded the whole stream (each sample once per worker)."""
    from model.datasets.laion_pose import LaionPoseStream

    def keys(workers: int) -> list[list[str]]:
        stream = LaionPoseStream(str(laion_pose_dir), resolution=64, seed=1, epochs=2, batch_size=2)
        return [b["keys"] for b in torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers) if b["num_samples"]]

    single = keys(0)
    counts = collections.Counter(k for b in single for k in b)
    assert len(counts) == 5 and set(counts.values()) == {2}  # two epochs: every sample twice
    assert keys(2) == single and keys(3) == single


def test_a_bad_sample_is_skipped_and_counted_not_fatal(tmp_path, laion_pose_dir, tiny_base):
    import shutil

    import webdataset as wds

    from model.training.stage1 import Stage1Trainer

    data = tmp_path / "data"
    shutil.copytree(laion_pose_dir / "shards", data)
    good = next(iter(wds.WebDataset(str(sorted(data.glob("*.tar"))[0]), shardshuffle=False)))
    with wds.TarWriter(str(data / "zz-bad.tar")) as tar:
        tar.write({"__key__": "corrupt", "jpg": b"\xff\xd8\xff not a jpeg", "pose.png": good["pose.png"], "txt": b"x"})
    cfg = tiny_cfg(tmp_path, data, tiny_base, max_steps=4, checkpoint_every=0, batch_size=2)
    cfg.data.shuffle_buffer = 0
    summary = Stage1Trainer(cfg).train()
    assert summary["steps"] == 4 and summary["failed_samples"] >= 1  # 6 samples an epoch, one of them corrupt
    assert summary["samples"] >= 8


def test_the_pose_encoder_records_its_skeleton_style_and_refuses_another(tmp_path, laion_pose_dir, tiny_base, caplog):
    from model.nets.pose_encoder import PoseEncoder
    from model.training.stage1 import Stage1Trainer

    assert json.loads((laion_pose_dir / "manifest.json").read_text())["config"]["skeleton_style"] == "openpose"
    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=1, checkpoint_every=1)
    summary = Stage1Trainer(cfg).train()
    trained = PoseEncoder.from_pretrained(tmp_path / "run" / "pose_encoder")
    assert trained.config.skeleton_style == "openpose" == summary["skeleton_style"]
    trained.register_to_config(skeleton_style="mmpose")
    trained.save_pretrained(tmp_path / "mmpose_encoder")
    cfg = tiny_cfg(tmp_path / "other", laion_pose_dir, tiny_base, max_steps=1)
    cfg.model.init_pose_encoder = str(tmp_path / "mmpose_encoder")
    with pytest.raises(ValueError, match="trained on 'mmpose' skeletons but data.shards holds 'openpose' skeletons"):
        Stage1Trainer(cfg)
    info = tmp_path / "run" / "checkpoints" / "checkpoint-0000001" / "fyp_run.json"
    info.write_text(json.dumps({"stage": "stage1", "skeleton_style": "mmpose"}))
    with pytest.raises(ValueError, match="the checkpoint .* was trained on 'mmpose' skeletons"):
        Stage1Trainer(tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=2, resume="latest"))
    # the official pose_encoder.pth (T2I-Adapter's layout) is taken as mmpose-trained, an assumption: continuing it on
    # openpose shards warns and the result records openpose, the style it was last trained on
    from official_release import official_adapter_keys

    official = tmp_path / "checkpoints" / "pose_encoder.pth"
    official.parent.mkdir()
    torch.save(official_adapter_keys(trained), official)
    assert PoseEncoder.from_official_state_dict(official).config.skeleton_style == "mmpose"
    cfg = tiny_cfg(tmp_path / "official", laion_pose_dir, tiny_base, max_steps=1)
    cfg.model.init_pose_encoder = str(official.parent)  # the official checkpoints/ folder
    with caplog.at_level(logging.WARNING):
        assert Stage1Trainer(cfg).train()["skeleton_style"] == "openpose"
    assert "taken as the official encoder, trained on 'mmpose' skeletons" in caplog.text
    assert PoseEncoder.from_pretrained(tmp_path / "official" / "run" / "pose_encoder").config.skeleton_style == "openpose"


def test_a_launcher_world_size_accelerate_did_not_pick_up_is_refused(monkeypatch):
    from accelerate import Accelerator

    from model.training.trainer_core import check_launcher_world_size

    accelerator = Accelerator(cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_launcher_world_size(accelerator)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match=r"started 4 processes \(WORLD_SIZE=4\) but accelerate runs 1.*ACCELERATE_USE_CPU=true"):
        check_launcher_world_size(accelerator)
