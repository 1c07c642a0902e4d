"""Training that cannot be turned against its user or its own results (issue 18): a checkpoint folder from someone
else runs no code on resume, a used output_dir is not silently mixed with a new run, a damaged checkpoint is skipped
or refused in one line, video-layer and pose-encoder files with bad sizes are refused before anything is allocated,
and every number of a stage config is checked before any model loads. Real tiny models, real LAION-Pose and HD-VILA
shards, real accelerate checkpoints, the real CLIs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_stage1 import laion_pose_dir, tiny_base, tiny_cfg  # noqa: F401 - fixtures shared with the stage-1 tests
from test_train_stage2 import clips_dir  # noqa: F401 - the stage-2 tests' clip shards

from conftest import REPO

BIN = Path(sys.executable).parent
CARPHONE = REPO / "pose_data" / "sample_data" / "driving" / "carphone.mp4"


class Trap:
    """Unpickling this creates ``path``: proof that code from the checkpoint ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def plant(file: Path, marker: Path) -> None:
    """Replace ``file`` with a live payload saved as torch.save saves (checked: loading it as a full pickle, as
    accelerate loads ``custom_checkpoint_0.pkl``, does create ``marker``)."""
    torch.save({"state": Trap(str(marker))}, file)
    torch.load(file, weights_only=False)
    assert marker.exists()
    marker.unlink()


def fyp_train(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fyp-train"), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def stage1_run(laion_pose_dir, tiny_base, tmp_path_factory):  # noqa: F811
    """A finished 2-step stage-1 run with checkpoints at steps 1 and 2."""
    from model.training.stage1 import Stage1Trainer

    root = tmp_path_factory.mktemp("stage1run")
    Stage1Trainer(tiny_cfg(root, laion_pose_dir, tiny_base, max_steps=2, checkpoint_every=1, checkpoints_total_limit=None)).train()
    return root / "run"


def copy_run(run: Path, where: Path) -> Path:
    shutil.copytree(run, where / "run")
    return where / "run"


# ------------------------------------------------------------------------------- 1. no code runs on resume


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"])
def test_a_planted_pickle_in_a_checkpoint_never_runs_on_resume(stage1_run, laion_pose_dir, tiny_base, tmp_path, name):  # noqa: F811
    from model.training.stage1 import Stage1Trainer

    run = copy_run(stage1_run, tmp_path)
    checkpoint = run / "checkpoints" / "checkpoint-0000002"
    marker = tmp_path / "code-ran"
    plant(checkpoint / name, marker)
    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, checkpoint_every=1, checkpoints_total_limit=None,
                   resume=str(checkpoint))  # fmt: skip
    try:
        outcome = Stage1Trainer(cfg)
    except Exception as err:  # noqa: BLE001 - whatever happens, first: did the payload run?
        outcome = err
    assert not marker.exists(), "code planted in the checkpoint ran on resume"
    if name == "custom_checkpoint_0.pkl":  # a file fyp-train no longer reads: never opened
        assert not isinstance(outcome, Exception), outcome
        assert outcome.state.step == 2 and (checkpoint / "training_state.json").is_file()
    else:  # read weights-only: refused in one line naming the file
        assert isinstance(outcome, ValueError), outcome
        assert f"{name}: not a readable PyTorch state dict: it holds objects other than tensors" in str(outcome)
        assert "\n" not in str(outcome)


def test_stage2_resume_through_the_cli_runs_no_planted_code(clips_dir, tiny_base, tmp_path):  # noqa: F811
    args = ["stage2", "--config", "stage2-tiny", f"data.clips={clips_dir}", f"model.base={tiny_base}", "validation.every=0",
            f"output_dir={tmp_path / 'run'}", "checkpoint_every=1"]  # fmt: skip
    first = fyp_train(*args, "max_steps=1")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-0000001"
    marker = tmp_path / "code-ran"
    plant(checkpoint / "custom_checkpoint_0.pkl", marker)  # ignored: the state is training_state.json
    resumed = fyp_train(*args, "max_steps=2", "--resume", checkpoint)
    assert not marker.exists(), "code planted in the checkpoint ran on resume"
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    plant(checkpoint / "random_states_0.pkl", marker)  # read weights-only: refused in one line naming the file
    refused = fyp_train(*args, "max_steps=2", "--resume", checkpoint)
    assert not marker.exists()
    assert refused.returncode == 2 and "random_states_0.pkl: not a readable PyTorch state dict" in one_line_error(refused.stderr)


def test_a_checkpoint_of_an_older_fyp_train_is_refused_with_the_reason(stage1_run, laion_pose_dir, tiny_base, tmp_path):  # noqa: F811
    from model.training.stage1 import Stage1Trainer

    run = copy_run(stage1_run, tmp_path)
    checkpoint = run / "checkpoints" / "checkpoint-0000002"
    (checkpoint / "training_state.json").unlink()
    plant(checkpoint / "custom_checkpoint_0.pkl", tmp_path / "code-ran")
    with pytest.raises(ValueError, match=r"no training_state\.json: it was written by an older fyp-train.* no longer opened"):
        Stage1Trainer(tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, resume=str(checkpoint)))
    assert not (tmp_path / "code-ran").exists()


# ------------------------------------------------------------------------------------- 4. a used output_dir


def test_a_fresh_run_over_an_earlier_one_is_refused_and_overwrite_starts_clean(laion_pose_dir, tiny_base, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["stage1", "--config", "stage1-tiny", f"data.shards={laion_pose_dir}", f"model.base={tiny_base}", f"output_dir={run}",
            "validation.every=0", "checkpoint_every=1", "checkpoints_total_limit=5"]  # fmt: skip
    first = fyp_train(*args, "max_steps=3")
    assert first.returncode == 0, first.stderr[-3000:]
    (run / "notes.txt").write_text("mine")
    fresh = fyp_train(*args, "max_steps=2")
    line = one_line_error(fresh.stderr)
    assert fresh.returncode == 2 and f"output_dir {run} holds an earlier run" in line
    assert "--resume latest" in line and "--overwrite" in line and "checkpoint-0000003" in line
    past = fyp_train(*args, "max_steps=2", "--resume", "latest")  # its newest checkpoint is past max_steps: nothing to train
    assert past.returncode == 2 and "is at step 3, past max_steps 2" in one_line_error(past.stderr)
    both = fyp_train(*args, "max_steps=2", "--resume", "latest", "--overwrite")
    assert both.returncode == 2 and "--resume and --overwrite exclude each other" in one_line_error(both.stderr)
    again = fyp_train(*args, "max_steps=2", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-0000001", "checkpoint-0000002"]
    assert json.loads((run / "config.json").read_text())["max_steps"] == 2
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    assert (run / "notes.txt").read_text() == "mine"  # --overwrite deletes only what a run writes


def _planted_run_folder(out: Path) -> None:
    """What a stage-1 run leaves in output_dir, and the user's own files beside (and inside) it."""
    checkpoint = out / "checkpoints" / "checkpoint-0000001"
    checkpoint.mkdir(parents=True)
    for name in ("training_state.json", "model.safetensors", "optimizer.bin", "random_states_0.pkl", "fyp_run.json"):
        (checkpoint / name).write_bytes(b"x")
    (out / "checkpoints" / ".checkpoint-0000002.partial").mkdir()  # a killed run's half checkpoint
    (out / "config.json").write_text(json.dumps({"output_dir": str(out), "max_steps": 3, "optim": {}}))
    (out / "summary.json").write_text(json.dumps({"stage": "stage1", "steps": 3}))
    (out / "logs" / "stage1").mkdir(parents=True)
    (out / "logs" / "stage1" / "events.out.tfevents.1").write_bytes(b"x")
    (out / "logs" / "important.log").write_text("mine")
    (out / "validation").mkdir()
    (out / "validation" / "step-0000001.png").write_bytes(b"x")
    (out / "validation" / "mine.png").write_bytes(b"mine")
    (out / "pose_encoder").mkdir()
    (out / "pose_encoder" / "config.json").write_text("{}")
    (out / "pose_encoder" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")


def test_overwrite_deletes_only_what_fyp_train_wrote_and_never_a_users_files(tmp_path):
    from model.training.run_folder import check_overwritable, clear_run_outputs, refuse_fresh_start

    out = tmp_path / "run"
    _planted_run_folder(out)
    clear_run_outputs(out, ("pose_encoder",), "stage1")
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["logs", "logs/important.log", "notes.txt", "validation", "validation/mine.png"]

    # a checkpoint folder holding a file of the user's: nothing is deleted, the file is named
    _planted_run_folder(other := tmp_path / "other")
    (other / "checkpoints" / "checkpoint-0000001" / "my_notes.txt").write_text("mine")
    before = sorted(p for p in other.rglob("*"))
    with pytest.raises(ValueError, match=r"checkpoint-0000001 holds files fyp-train did not write \(my_notes\.txt\)"):
        clear_run_outputs(other, ("pose_encoder",), "stage1")
    assert sorted(p for p in other.rglob("*")) == before

    # a project folder used as output_dir: its own config.json is neither replaced by a fresh run nor deleted
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text(json.dumps({"name": "my project"}))
    for refuse in (lambda: check_overwritable(project, ("pose_encoder",)),
                   lambda: refuse_fresh_start(project, ("pose_encoder",), resume_latest=False)):  # fmt: skip
        with pytest.raises(ValueError, match="holds a config.json that fyp-train did not write"):
            refuse()
    assert json.loads((project / "config.json").read_text()) == {"name": "my project"}


def test_a_checkpoint_with_a_foreign_run_info_is_one_line(stage1_run, laion_pose_dir, tiny_base, tmp_path):  # noqa: F811
    from model.training.stage1 import Stage1Trainer

    run = copy_run(stage1_run, tmp_path)
    checkpoint = run / "checkpoints" / "checkpoint-0000002"
    for text in ("[]", "{not json"):
        (checkpoint / "fyp_run.json").write_text(text)
        with pytest.raises(ValueError, match=r"fyp_run\.json: not (readable JSON|what fyp-train writes there)") as refused:
            Stage1Trainer(tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, resume=str(checkpoint)))
        assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"seed": 1}, "seed 0 there, 1 here"),
        ({"batch_size": 1}, "batch_size 2 there, 1 here"),
        ({"optim.learning_rate": 0.002}, "optim.learning_rate 0.001 there, 0.002 here"),
        ({"data.caption_dropout": 0.5}, "data.caption_dropout 0.1 there, 0.5 here"),
        ({"optim.warmup_steps": 0}, "optim.warmup_steps 5 there, 0 here"),
        ({"model.pose_scale": 0.5}, "model.pose_scale 1.0 there, 0.5 here"),
        ({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps 1 there, 2 here"),
        ({"log_every": 7, "validation.guidance_scale": 2.0, "data.num_workers": 1}, None),  # may change
    ],
)
def test_resume_refuses_a_config_that_changes_the_weights_or_the_data(stage1_run, laion_pose_dir, tiny_base, tmp_path, change, expected):  # noqa: F811
    from model.training.stage1 import Stage1Trainer

    copy_run(stage1_run, tmp_path)
    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, checkpoint_every=1, checkpoints_total_limit=None, resume="latest")
    for key, value in change.items():
        section, _, leaf = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, leaf, value)
    if expected is None:
        assert Stage1Trainer(cfg).state.step == 2
        return
    with pytest.raises(ValueError, match="was written with another config: ") as refused:
        Stage1Trainer(cfg)
    assert expected in str(refused.value) and "--overwrite" in str(refused.value)


# ------------------------------------------------------------------------------- 10. damaged checkpoints


@pytest.mark.parametrize("damaged", ["optimizer.bin", "model.safetensors", "training_state.json", "random_states_0.pkl"])
def test_resume_latest_skips_a_damaged_checkpoint_and_an_explicit_one_is_refused(
    stage1_run, laion_pose_dir, tiny_base, tmp_path, caplog, damaged  # noqa: F811
):
    from model.training.stage1 import Stage1Trainer

    run = copy_run(stage1_run, tmp_path)
    newest = run / "checkpoints" / "checkpoint-0000002"
    file = newest / damaged
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])  # a disk that filled up, a copy cut short
    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, checkpoint_every=1, checkpoints_total_limit=None, resume="latest")
    with caplog.at_level(logging.WARNING):
        trainer = Stage1Trainer(cfg)
    assert trainer.state.step == 1  # the previous, complete checkpoint
    assert f"skipping checkpoint-0000002, which does not read back: {file}" in caplog.text
    cfg = tiny_cfg(tmp_path, laion_pose_dir, tiny_base, max_steps=3, resume=str(newest))
    with pytest.raises(ValueError, match=str(file).replace(".", r"\.")) as refused:
        Stage1Trainer(cfg)
    assert "\n" not in str(refused.value)


# ------------------------------------------------------------------ 10, 15. video layers and pose encoders


def _video_layers(tiny_base, folder: Path) -> Path:  # noqa: F811
    from diffusers import UNet2DConditionModel

    from model.nets.video_layers import save_video_layers
    from model.nets.video_unet import VideoLayersConfig, VideoUNet

    unet = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet")
    return save_video_layers(VideoUNet(unet, VideoLayersConfig(conv_temporal=True, conv_temporal_rank=8)), folder)


def _set_layers(key, value):
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["video_layers"][key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return change


WEIGHTS = "diffusion_pytorch_model.safetensors"
VIDEO_LAYER_CASES = {
    "cut": (lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:3000]), rf"{WEIGHTS}: not a readable safetensors file"),
    "empty": (lambda f: (f / WEIGHTS).write_bytes(b""), rf"{WEIGHTS}: not a readable safetensors file"),
    "garbage": (lambda f: (f / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json" * 50), rf"{WEIGHTS}: not a readable safetensors file"),
    "config_list": (lambda f: (f / "config.json").write_text("[]"), r"config\.json is missing or not a video-layers config"),
    "rank_string": (_set_layers("conv_temporal_rank", "8"), r"config\.json: video_layers\.conv_temporal_rank must be an integer from 1 to 4096, got '8'"),
    "rank_fraction": (_set_layers("conv_temporal_rank", 1.5), r"config\.json: video_layers\.conv_temporal_rank must be an integer from 1 to 4096, got 1\.5"),
    "rank_huge": (_set_layers("conv_temporal_rank", 10**12), r"config\.json: video_layers\.conv_temporal_rank must be an integer"),
    "flag_string": (_set_layers("conv_temporal", "yes"), r"config\.json: video_layers\.conv_temporal must be true or false"),
    "unknown_key": (_set_layers("depth", 3), r"config\.json: video_layers: unknown key\(s\) depth"),
}


@pytest.mark.parametrize("case", sorted(VIDEO_LAYER_CASES))
def test_bad_video_layer_folders_are_one_line_errors_naming_file_and_key(tiny_base, clips_dir, tmp_path, case, capsys):  # noqa: F811
    from diffusers import UNet2DConditionModel

    from model.nets.video_layers import load_video_unet

    folder = _video_layers(tiny_base, tmp_path / "video_layers")
    change, expected = VIDEO_LAYER_CASES[case]
    change(folder)
    with pytest.raises(ValueError, match=expected) as refused:
        load_video_unet(UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet"), folder)
    assert "\n" not in str(refused.value)
    if case in ("rank_string", "cut"):  # the commands that read them: exit 2, one line naming the file
        from model.generation.cli import main as generate_main
        from model.training.cli import main as train_main

        named = "conv_temporal_rank" if case == "rank_string" else WEIGHTS
        code = generate_main(["--base", str(tiny_base), "--video-layers", str(folder), "--pose", str(CARPHONE), "--prompt", "a",
                              "--output", str(tmp_path / "o.mp4")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err, err
        code = train_main(["stage2", "--config", "stage2-tiny", f"data.clips={clips_dir}", "model.base=/no/such/base",
                           f"output_dir={tmp_path / 'run'}", "--init-video-layers", str(folder)])  # fmt: skip
        err = capsys.readouterr().err  # refused before the (missing) base model is looked for
        assert code == 2 and named in one_line_error(err), err


def _pose_encoder_folder(folder: Path, **config) -> Path:
    from model.nets.pose_encoder import PoseEncoder

    PoseEncoder(channels=(32, 64, 64, 64)).save_pretrained(folder)
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, **config}))
    return folder


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"in_channels": 10**7}, r"config\.json: in_channels must be an integer from 1 to 16, got 10000000"),
        ({"channels": [20_000_000, 64, 64, 64]}, r"config\.json: channels must be a list of 1 to 8 integers from 1 to 4096"),
        ({"channels": [4096] * 8, "num_res_blocks": 8}, r"config\.json: .* make [\d,]+ parameters, more than the limit of 1,000,000,000"),
        ({"num_res_blocks": "2"}, r"config\.json: num_res_blocks must be an integer from 1 to 8, got '2'"),
        ({"channels": [32.5, 64, 64, 64]}, r"config\.json: channels must be a list"),
        ({"downscale_factor": 4096}, r"config\.json: downscale_factor must be an integer from 1 to 64"),
    ],
)
def test_a_pose_encoder_config_asking_for_too_much_is_refused_before_allocating(tmp_path, tiny_base, laion_pose_dir, config, expected, capsys):  # noqa: F811
    from model.nets.pose_encoder import load_pose_encoder

    folder = _pose_encoder_folder(tmp_path / "pose_encoder", **config)
    with pytest.raises(ValueError, match=expected):
        load_pose_encoder(folder)
    from model.generation.cli import main as generate_main
    from model.training.cli import main as train_main

    code = generate_main(["--base", str(tiny_base), "--pose-encoder", str(folder), "--pose", str(CARPHONE), "--prompt", "a",
                          "--output", str(tmp_path / "o.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "config.json" in err and "Traceback" not in err, err
    code = train_main(["stage1", "--config", "stage1-tiny", f"data.shards={laion_pose_dir}", "model.base=/no/such/base",
                       f"output_dir={tmp_path / 'run'}", "--init-pose-encoder", str(folder)])  # fmt: skip
    err = capsys.readouterr().err  # refused before the (missing) base model is looked for
    assert code == 2 and "config.json" in one_line_error(err), err


def test_a_cut_pose_encoder_weights_file_is_named(tmp_path):
    from model.nets.pose_encoder import load_pose_encoder

    folder = _pose_encoder_folder(tmp_path / "pose_encoder")
    weights = folder / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=rf"{WEIGHTS}: not a readable safetensors file"):
        load_pose_encoder(folder)


# ----------------------------------------------------------------------- 12. every number checked up front


@pytest.mark.parametrize(
    "stage, override, expected",
    [
        ("stage1", "log_every=0", "log_every must be an integer >= 1, got 0"),
        ("stage1", "validation.num_inference_steps=0", "validation.num_inference_steps must be an integer from 1 to 999, got 0"),
        ("stage1", "validation.guidance_scale=nan", "validation.guidance_scale must be a finite number >= 0, got nan"),
        ("stage1", "optim.learning_rate=-1", "optim.learning_rate must be a finite number > 0, got -1"),
        ("stage1", "optim.adam_beta2=1.0", "optim.adam_beta2 must be a finite number >= 0 and < 1, got 1.0"),
        ("stage1", "optim.min_snr_gamma=inf", "optim.min_snr_gamma must be a finite number > 0, got inf"),
        ("stage1", "seed=-1", "seed must be an integer from 0 to 4294967295, got -1"),
        ("stage1", "checkpoints_total_limit=0", "checkpoints_total_limit must be an integer >= 1, got 0"),
        ("stage1", "data.caption_dropout=nan", "data.caption_dropout must be a finite number >= 0 and <= 1, got nan"),
        ("stage1", "model.pose_scale=nan", "model.pose_scale must be a finite number, got nan"),
        ("stage1", "validation.prompts=[]", "validation.prompts is empty but validation.every is 20"),
        ("stage2", "validation.fps=0", "validation.fps must be a finite number > 0 and <= 100, got 0"),
        ("stage2", "validation.num_inference_steps=0", "validation.num_inference_steps must be an integer from 1 to 999, got 0"),
        ("stage2", "validation.guidance_scale=nan", "validation.guidance_scale must be a finite number >= 0, got nan"),
        ("stage2", "log_every=0", "log_every must be an integer >= 1, got 0"),
        ("stage2", "model.conv_temporal_rank=100000", "model.conv_temporal_rank must be an integer from 1 to 4096, got 100000"),
        ("stage2", "validation.num_frames=0", "validation.num_frames must be an integer from 1 to 1024, got 0"),
    ],
)
def test_every_number_of_a_stage_config_is_checked_before_anything_loads(tmp_path, capsys, stage, override, expected):
    """No data, no base model: the config alone is refused, exit 2, one line naming the key (these failed after
    training started, with ZeroDivisionError or a NaN GIF, or late)."""
    from model.training.cli import main as train_main

    data = "data.shards" if stage == "stage1" else "data.clips"
    code = train_main([stage, "--config", f"{stage}-tiny", f"{data}=/no/such/data", "model.base=/no/such/base",
                       f"output_dir={tmp_path / 'run'}", override])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
