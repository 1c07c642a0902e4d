"""Stage 2 for real: clip shards written by index-hdvila from the bundled real videos, the tiny SD base saved and
reloaded, real PyAV decoding, real accelerate (and real torchrun with two CPU processes)."""

from __future__ import annotations

import collections
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_shards import build_clip_shards, jpeg, raw_samples, write_shard
from conftest import REPO
from model.training.stage2_config import Stage2Config, preset_or_file
from pose_data.config import from_dict, load_config, to_dict


@pytest.fixture(scope="module")
def clips_dir(ray_local, tmp_path_factory):
    return build_clip_shards(tmp_path_factory.mktemp("s2") / "hdvila")


@pytest.fixture(scope="module")
def frames_dir(ray_local, tmp_path_factory):
    return build_clip_shards(tmp_path_factory.mktemp("s2f") / "hdvila_frames", frames=6)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from model.nets.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("base") / "tiny-sd", seed=0)


def tiny_cfg(out: Path, clips, tiny_base, **overrides) -> Stage2Config:
    layer = {"output_dir": str(out), "data": {"clips": str(clips)}, "model": {"base": str(tiny_base)},
             "validation": {"every": 0}, "checkpoint_every": 0}  # fmt: skip
    cfg = load_config(Stage2Config, preset_or_file("stage2-tiny"), layer)
    for key, value in overrides.items():
        node, *path = key.split(".")
        target = cfg if not path else getattr(cfg, node)
        setattr(target, path[-1] if path else node, value)
    return cfg


def test_presets_load_round_trip_and_carry_the_official_values():
    for name in ("stage2", "stage2-tiny"):
        cfg = load_config(Stage2Config, preset_or_file(name))
        cfg.validate()
        assert from_dict(Stage2Config, to_dict(cfg)) == cfg
    full = load_config(Stage2Config, preset_or_file("stage2"))
    assert (full.data.resolution, full.data.num_frames, full.data.frame_stride, full.max_steps) == (512, 8, 4, 50_000)
    assert (full.optim.learning_rate, full.optim.lr_schedule, full.optim.weight_decay, full.optim.max_grad_norm) == (3e-5, "constant", 1e-2, 1.0)
    assert (full.batch_size, full.mixed_precision, full.model.gradient_checkpointing, full.model.conv_temporal) == (1, "fp16", True, True)
    assert full.model.trainable == ["attn1.to_q", "attn2.to_q", "attn_temp", "conv_temporal"]
    text = (REPO / "model" / "configs" / "stage2.yaml").read_text()
    assert all(word in text for word in ("paper:", "official:", "ours:"))


# ------------------------------------------------------------------------------------------------------- data


def test_reads_mp4_clip_shards(clips_dir):
    from model.datasets.hdvila_clips import HdvilaClipStream

    stream = HdvilaClipStream(str(clips_dir), num_frames=4, frame_stride=3, resolution=64, epochs=1)
    samples = list(stream.samples())
    assert len(samples) == 7
    for s in samples:
        assert s.pixel_values.shape == (4, 3, 64, 64)
        assert -1.0 <= float(s.pixel_values.min()) and float(s.pixel_values.max()) <= 1.0
        assert float((s.pixel_values[0] - s.pixel_values[-1]).abs().mean()) > 0.005  # real motion between frames
    again = list(HdvilaClipStream(str(clips_dir), num_frames=4, frame_stride=3, resolution=64, epochs=1).samples())
    assert all(a.key == b.key and torch.equal(a.pixel_values, b.pixel_values) for a, b in zip(samples, again))


def test_reads_jpeg_frame_shards_in_order(frames_dir):
    from model.datasets.hdvila_clips import HdvilaClipStream

    # all 6 stored frames at stride 1: the offset must be 0 and the frames the JPEGs in order
    samples = list(HdvilaClipStream(str(frames_dir), num_frames=6, frame_stride=1, resolution=64, epochs=1).samples())
    assert len(samples) == 7
    shard = sorted((frames_dir / "clips").glob("*.tar"))[0]
    raw = {r["__key__"]: r for r in raw_samples(shard)}
    for s in samples:
        if s.key not in raw:
            continue
        expected = [np.asarray(Image.open(io.BytesIO(raw[s.key][f"{k:03d}.jpg"])).convert("RGB")) for k in range(6)]
        got = ((s.pixel_values + 1) / 2 * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        assert np.abs(got.astype(int) - np.stack(expected).astype(int)).max() <= 1
    too_long = HdvilaClipStream(str(frames_dir), num_frames=4, frame_stride=2, resolution=64, epochs=1, batch_size=7, num_streams=1)
    batch = next(iter(too_long))
    assert batch["num_samples"] == 0 and len(batch["failures"]) == 7
    assert "clip has 6 frames, a sample needs 7 (num_frames 4, frame_stride 2)" in batch["failures"][0].reason


def test_bad_samples_become_counted_failures(clips_dir, tmp_path):
    from model.datasets.hdvila_clips import HdvilaClipStream

    good = raw_samples(sorted((clips_dir / "clips").glob("*.tar"))[0])[:2]
    bad = [
        {"__key__": "broken", "mp4": b"\x00\x00\x00\x18ftypmp42" + os.urandom(500), "txt": b""},
        {"__key__": "an_image", "jpg": jpeg(), "txt": b"not a clip"},
    ]
    shard = write_shard(tmp_path / "mixed" / "00000.tar", [good[0], bad[0], bad[1], good[1]])
    batches = [b for b in HdvilaClipStream(str(shard), num_frames=4, frame_stride=1, resolution=64, epochs=1, batch_size=2) if b["raw"]]
    assert [b["num_samples"] for b in batches] == [1, 1]
    reasons = {f.key: f.reason for b in batches for f in b["failures"]}
    assert set(reasons) == {"broken", "an_image"} and "does not decode" in reasons["broken"]
    assert "no mp4 and no numbered jpg" in reasons["an_image"]
    assert [json.loads(b["position"]["state"])["sample"] for b in batches] == [2, 4]  # where the shard's reader stands after each
    assert all(f.shard == str(shard) for b in batches for f in b["failures"])


@pytest.mark.parametrize("workers", [2, 3])
def test_batches_do_not_depend_on_workers_and_ranks_split_the_stream(clips_dir, workers):
    from model.datasets.hdvila_clips import HdvilaClipStream

    def keys(num_workers: int, **split) -> list[list[str]]:
        stream = HdvilaClipStream(str(clips_dir), num_frames=2, resolution=64, epochs=2, batch_size=2, seed=3, shuffle_buffer=4, **split)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)
        return [b["keys"] for b in loader if b["num_samples"]]

    single = keys(0)
    counts = collections.Counter(k for batch in single for k in batch)
    assert len(counts) == 7 and set(counts.values()) == {2}  # 2 epochs of 7 clips
    assert keys(workers) == single  # same batches, same order, no sample repeated per worker
    ranks = [keys(workers, rank=r, world_size=2) for r in (0, 1)]
    assert ranks == [keys(0, rank=r, world_size=2) for r in (0, 1)]
    assert collections.Counter(k for rank in ranks for b in rank for k in b) == counts  # the ranks share the epochs


# ---------------------------------------------------------------------------------------------------- trainer


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_only_the_chosen_attention_parameters_train(tmp_path, clips_dir, tiny_base):
    from model.training.stage2 import Stage2Trainer

    trainer = Stage2Trainer(tiny_cfg(tmp_path / "run", clips_dir, tiny_base, max_steps=3))
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert model.pose_encoder is None  # pose-free
    before = {name: _snapshot(getattr(trainer.base, name)) for name in ("unet", "vae", "text_encoder")}
    trained = {name for name, _ in trainer.trained}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for _, p in trainer.trained}
    trainer.train()
    assert set(id(p) for p in trainer.optimizer.state) <= optimised and trainer.optimizer.state  # state only for those
    changed = {k for k, v in trainer.base.unet.state_dict().items() if not torch.equal(before["unet"][k], v)}
    assert changed and changed <= trained  # to_q and the temporal layers moved ...
    assert any(".attn_temp." in k for k in changed) and any(".attn1.to_q." in k for k in changed)
    untouched = set(before["unet"]) - trained  # ... and every other weight is bit-identical
    assert all(torch.equal(before["unet"][k], trainer.base.unet.state_dict()[k]) for k in untouched)
    for name in ("vae", "text_encoder"):
        after = getattr(trainer.base, name).state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after)


def test_resume_is_exact_and_independent_of_workers(tmp_path, clips_dir, tiny_base):
    """6 steps straight == 3 steps, then a new trainer resuming `latest` (with 2 DataLoader workers) to 6."""
    from model.training.stage2 import Stage2Trainer

    straight = Stage2Trainer(tiny_cfg(tmp_path / "a", clips_dir, tiny_base, max_steps=6, checkpoint_every=3))
    straight.train()
    first = Stage2Trainer(tiny_cfg(tmp_path / "b", clips_dir, tiny_base, max_steps=6, checkpoint_every=3))
    first.train(until_step=3)
    cfg = tiny_cfg(tmp_path / "b", clips_dir, tiny_base, max_steps=6, checkpoint_every=3, resume="latest")
    cfg.data.num_workers = 2
    second = Stage2Trainer(cfg)
    assert (second.state.step, second.state.samples, len(second.state.positions)) == (3, 3, 1)
    assert sum(state["emitted"] for state in second.state.positions[0]["streams"].values()) == 3
    second.train()
    a, b = straight.base.unet.state_dict(), second.base.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_outputs_video_layers_gif_and_summary(tmp_path, clips_dir, tiny_base):
    from diffusers import UNet2DConditionModel

    from model.nets.video_layers import load_video_unet, read_video_layers_config
    from model.training.stage2 import Stage2Trainer

    cfg = tiny_cfg(tmp_path / "run", clips_dir, tiny_base, max_steps=2)
    cfg.validation.every, cfg.validation.prompts = 2, ["a person riding a bike", "a rabbit"]
    trainer = Stage2Trainer(cfg)
    trainer.train()
    out = tmp_path / "run"
    config = read_video_layers_config(out / "video_layers")
    assert config["video_layers"]["conv_temporal"] is True and config["frames"] == {"num_frames": 4, "frame_stride": 2, "resolution": 64}
    assert config["base_model"] == str(tiny_base)
    fresh = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    loaded, _ = load_video_unet(fresh, out / "video_layers")
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    latents, text = torch.randn(4, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(latents, 5, text, 4), model(latents, 5, text, 4))
    gif = Image.open(out / "validation" / "step-0000002.gif")
    assert (gif.n_frames, gif.size) == (4, (64, 2 * 64))  # 4 frames, one row per prompt
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stage"] == "stage2" and 0 < summary["trainable_parameters"] < summary["unet_parameters"]


def test_a_run_where_most_samples_fail_stops_naming_the_shards(tmp_path, clips_dir, tiny_base):
    from model.training.stage2 import Stage2Trainer

    broken = [{"__key__": f"b{i}", "mp4": os.urandom(300), "txt": b""} for i in range(12)]
    shard = write_shard(tmp_path / "bad" / "00000.tar", broken)
    trainer = Stage2Trainer(tiny_cfg(tmp_path / "run", tmp_path / "bad", tiny_base, max_steps=2))
    with pytest.raises(ValueError, match=r"8 of 8 samples failed to load.*" + str(shard).replace("/", ".") + r" \(8\)"):
        trainer.train()


def _fyp_train(*args, env=None, timeout=600):
    exe = Path(sys.executable).parent / "fyp-train"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_runs_and_bad_inputs_are_one_line(tmp_path, clips_dir, tiny_base):
    common = ["stage2", "--config", "stage2-tiny", f"data.clips={clips_dir}", f"model.base={tiny_base}", "validation.every=0"]
    # bf16 mixed precision with validation: the sampler meets accelerate's fp32 outputs (own process: precision is per process)
    run = _fyp_train(*common[:-1], "validation.every=1", f"output_dir={tmp_path / 'run'}", "max_steps=1", "mixed_precision=bf16")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "video_layers" / "diffusion_pytorch_model.safetensors").is_file()
    assert Image.open(tmp_path / "run" / "validation" / "step-0000001.gif").n_frames == 4
    from safetensors.torch import load_file

    trained = load_file(tmp_path / "run" / "video_layers" / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float32 for k, v in trained.items() if ".to_q." in k or ".attn_temp." in k)
    other = _fyp_train(*common, f"output_dir={tmp_path / 'run'}", "max_steps=2", "model.trainable=[attn_temp]", "--resume", "latest")
    assert other.returncode == 2 and "was written with another config: " in other.stderr and "model.trainable [" in other.stderr and "Traceback" not in other.stderr
    missing = _fyp_train("stage2", "data.clips=/no/such/folder", f"output_dir={tmp_path / 'x'}")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == "fyp-train stage2: error: shard(s) not found: /no/such/folder"
    bad = _fyp_train(*common, "model.attention=causal", f"output_dir={tmp_path / 'y'}")
    assert bad.returncode == 2 and "is not one of sparse_causal, first_frame, full, none" in bad.stderr
    frames_only = _fyp_train(*common[:-1], f"data.clips={tmp_path}", f"output_dir={tmp_path / 'z'}")
    assert frames_only.returncode == 2 and "no .tar shards under" in frames_only.stderr


def test_a_truncated_or_garbage_shard_is_a_counted_failure(clips_dir, tmp_path):
    from model.datasets.hdvila_clips import HdvilaClipStream

    good = sorted((clips_dir / "clips").glob("*.tar"))[0]
    data = good.read_bytes()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a_truncated.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "d" / "b_garbage.tar").write_bytes(os.urandom(3000))
    stream = HdvilaClipStream(str(tmp_path / "d"), num_frames=2, resolution=64, epochs=1, batch_size=1)
    stream.urls = sorted(stream.urls)
    batches = list(stream)
    failures = [f for b in batches for f in b["failures"] if f.key == "(shard)"]  # (+ the sample cut in half)
    assert sorted(f.shard for f in failures) == [str(tmp_path / "d" / "a_truncated.tar"), str(tmp_path / "d" / "b_garbage.tar")]
    assert all(f.reason.startswith("the shard cannot be read on: ReadError") for f in failures)
    assert sum(b["num_samples"] for b in batches) >= 1  # the samples before the truncation still count


def test_continuing_from_video_layers_keeps_what_they_trained(tmp_path, clips_dir, tiny_base):
    from safetensors.torch import load_file

    from model.training.stage2 import Stage2Trainer

    Stage2Trainer(tiny_cfg(tmp_path / "a", clips_dir, tiny_base, max_steps=1)).train()
    cfg = tiny_cfg(tmp_path / "b", clips_dir, tiny_base, max_steps=1)
    cfg.model.init_video_layers, cfg.model.trainable = str(tmp_path / "a" / "video_layers"), ["attn_temp"]
    trainer = Stage2Trainer(cfg)
    assert {n.split(".attn_temp.")[0] for n, _ in trainer.trained} and all(".attn_temp." in n for n, _ in trainer.trained)
    trainer.train()
    a = load_file(tmp_path / "a" / "video_layers" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "video_layers" / "diffusion_pytorch_model.safetensors")
    to_q = [k for k in a if ".to_q." in k and ".attn_temp." not in k]
    assert to_q and all(torch.equal(a[k], b[k]) for k in to_q)  # run a's to_q, kept although b did not train it
    assert any(not torch.equal(a[k], b[k]) for k in a if ".attn_temp." in k)


def test_a_shard_with_repeated_member_names_is_a_failure_naming_it(clips_dir, tmp_path):
    import tarfile

    from model.datasets.hdvila_clips import HdvilaClipStream

    good = raw_samples(sorted((clips_dir / "clips").glob("*.tar"))[0])[0]
    shard = tmp_path / "dup.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("k.mp4", good["mp4"]), ("k.txt", b"a"), ("k.txt", b"b")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    batches = list(HdvilaClipStream(str(shard), num_frames=2, resolution=64, epochs=1))
    failures = [f for b in batches for f in b["failures"]]
    assert [f.shard for f in failures if f.key == "(shard)"] == [str(shard)]
