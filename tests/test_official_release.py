"""The official Follow Your Pose release as a user downloads it: the stage-2 folder written by accelerate's real
``save_state`` (``.bin``, safetensors, sharded), the bare file, the ``checkpoints/`` folder above it, and
``pose_encoder.pth``; loaded through ``fyp-generate`` and the Python API, never unpickling anything but weights."""

from __future__ import annotations

import json
import math
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from model.generation.cli import main as generate_main
from model.generation.pose_source import _fit
from model.nets.pose_encoder import PoseEncoder, load_pose_encoder
from model.nets.video_layers import load_video_unet
from official_release import (
    official_adapter_keys,
    official_checkpoints,
    official_example_video,
    released_model,
    save_like_official_training,
    save_sharded,
)
from pose_data.extract_poses.sequence import read_pose_sequence
from pose_data.media.video_writer import write_video
from pose_data.pose.keypoints import PersonPose
from pose_data.skeleton.render import render_skeleton

REPO = Path(__file__).resolve().parents[1]
CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))  # 29.97 fps
BIKES = Path(str(resources.files("pose_data") / "sample_data" / "hdvila" / "bikes.mp4"))  # 25 fps
SIZE = 64


class Trap:
    """Unpickling this creates ``path``: proof that code from the checkpoint ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny base and a "trained" official stage-2 model on it, with its state in the official key layout."""
    from model.nets.tiny_base import make_tiny_base

    root = tmp_path_factory.mktemp("official")
    base = make_tiny_base(root / "tiny-sd", seed=0, sample_size=8)  # 64x64 by default: the README's commands run as written
    model, encoder, state = released_model(base)
    bare = root / "diffusion_pytorch_model.bin"
    torch.save(state, bare)
    return {"root": root, "base": base, "model": model, "encoder": encoder, "state": state, "bare": bare}


def unet_of(base):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["bin", "safetensors", "sharded-bin", "sharded-safetensors", "ddp-bin", "parent", "index-file"])
def test_every_release_layout_loads_exactly_the_released_weights(release, tmp_path, layout):
    state = release["state"]
    if layout in ("bin", "safetensors", "parent"):
        folder = save_like_official_training(state, tmp_path / "followyourpose_checkpoint-1000", safe_serialization=layout == "safetensors")
        written = sorted(p.name for p in folder.iterdir())
        assert written == sorted([{"safetensors": "model.safetensors"}.get(layout, "pytorch_model.bin"), "optimizer.bin", "scheduler.bin", "random_states_0.pkl"])
        source = tmp_path if layout == "parent" else folder
    elif layout.startswith("sharded") or layout == "index-file":
        folder = save_sharded(state, tmp_path / "sharded", safe_serialization=layout != "sharded-bin")
        index = next(folder.glob("*.index.json"))
        assert len(json.loads(index.read_text())["weight_map"]) == len(state) and len(list(folder.glob("*-of-*"))) > 2
        source = index if layout == "index-file" else folder
    else:  # a checkpoint saved from a DDP-wrapped model: every key starts with module.
        folder = tmp_path / "ddp"
        folder.mkdir()
        torch.save({f"module.{k}": v for k, v in state.items()}, folder / "pytorch_model.bin")
        source = folder
    model, encoder = load_video_unet(unet_of(release["base"]), source)
    assert same_weights(model.unet, release["model"].unet)
    assert encoder is model.pose_encoder and encoder.config.skeleton_style == "mmpose"
    assert same_weights(encoder, release["encoder"])


def test_a_release_folder_never_unpickles_its_other_files(release, tmp_path, capsys):
    folder = save_like_official_training(release["state"], tmp_path / "checkpoints" / "followyourpose_checkpoint-1000", safe_serialization=False)
    marker = tmp_path / "code-ran"
    for name in ("random_states_0.pkl", "optimizer.bin", "scheduler.bin", "scaler.pt", "custom_checkpoint_0.pkl"):
        (folder / name).write_bytes(pickle.dumps(Trap(str(marker))))
    pickle.loads((folder / "scaler.pt").read_bytes())  # the trap is live: unpickling creates the marker ...
    assert marker.exists()
    marker.unlink()
    model, _ = load_video_unet(unet_of(release["base"]), folder)  # ... loading the folder does not
    assert same_weights(model.unet, release["model"].unet) and not marker.exists()
    code = generate_main(["--base", str(release["base"]), "--video-layers", str(tmp_path / "checkpoints"), "--pose", str(CARPHONE),
                          "--pose-backend", "mediapipe", "--prompt", "a man", "--num-frames", "2", "--steps", "1", "--height", str(SIZE),
                          "--width", str(SIZE), "--no-progress", "--output", str(tmp_path / "out.mp4")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert not marker.exists()
    # a model file that is itself a pickle with code in it is refused, not run, in one line without torch's advice
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Trap(str(marker))}))
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: not a readable PyTorch state dict: weights-only loading refused it"):
        load_video_unet(unet_of(release["base"]), folder)
    code = generate_main(["--base", str(release["base"]), "--video-layers", str(folder), "--pose", str(CARPHONE), "--prompt", "a",
                          "--output", str(tmp_path / "o.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "weights_only" not in err and "protocol" not in err, err
    assert not marker.exists()


def test_a_folder_without_weights_says_what_it_looked_for(release, tmp_path, capsys):
    folder = tmp_path / "followyourpose_checkpoint-1000"
    folder.mkdir()
    (folder / "random_states_0.pkl").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"no stage-2 weights there.*pytorch_model\.bin.*model\.safetensors.*checkpoint-N"):
        load_video_unet(unet_of(release["base"]), folder)
    code = generate_main(["--base", str(release["base"]), "--video-layers", str(folder), "--pose", str(CARPHONE), "--prompt", "a",
                          "--output", str(tmp_path / "o.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "followyourpose_checkpoint-1000" in err and "pytorch_model.bin" in err
    index = tmp_path / "model.safetensors.index.json"
    index.write_text('{"weight_map": {"conv_in.weight": "../escape.safetensors"}}')
    with pytest.raises(ValueError, match=r"shard names must be weight files beside the index, got \['\.\./escape"):
        load_video_unet(unet_of(release["base"]), index)


def test_this_projects_own_folders_are_not_taken_for_the_release(release, tmp_path):
    from safetensors.torch import save_file

    from model.nets.video_layers import save_video_layers
    from model.nets.video_unet import VideoLayersConfig, VideoUNet

    run = tmp_path / "runs" / "stage2"
    trained = VideoUNet(unet_of(release["base"]), VideoLayersConfig())
    save_video_layers(trained, run / "video_layers")
    model, encoder = load_video_unet(unet_of(release["base"]), run)  # a stage-2 output folder: its video_layers/
    assert encoder is None and model.config == VideoLayersConfig() and same_weights(model.unet, trained.unet)
    # a training checkpoint holds the trained weights under the trainer's names: say what to use instead
    checkpoint = run / "checkpoints" / "checkpoint-0000005"
    checkpoint.mkdir(parents=True)
    save_file({"unet.conv_in.weight": torch.zeros(1)}, str(checkpoint / "model.safetensors"))
    with pytest.raises(ValueError, match="a fyp-train training checkpoint .* use the run's video_layers/ folder"):
        load_video_unet(unet_of(release["base"]), run / "checkpoints")
    (run / "video_layers" / "config.json").unlink()  # our weights file without its config is not the release either
    with pytest.raises(ValueError, match="its config.json is missing or not a video-layers config"):
        load_video_unet(unet_of(release["base"]), run / "video_layers")


def test_the_checkpoints_parent_takes_the_latest_checkpoint_with_weights(release, tmp_path):
    _, _, older = released_model(release["base"], seed=40)
    save_like_official_training(older, tmp_path / "checkpoint-500")
    save_like_official_training(release["state"], tmp_path / "followyourpose-checkpoint-1000-final")
    (tmp_path / "checkpoint-2000").mkdir()  # an interrupted save: no weights
    (tmp_path / "notes").mkdir()
    model, _ = load_video_unet(unet_of(release["base"]), tmp_path)
    assert same_weights(model.unet, release["model"].unet)
    assert model.weights_file == str(tmp_path / "followyourpose-checkpoint-1000-final" / "model.safetensors")


def test_wrong_files_are_named_for_what_they_are(release, tmp_path):
    lfs = tmp_path / "followyourpose_checkpoint-1000" / "pytorch_model.bin"  # a clone without git-lfs
    lfs.parent.mkdir()
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 3438366373\n")
    with pytest.raises(ValueError, match="pytorch_model.bin: a Git LFS pointer, not the weights"):
        load_video_unet(unet_of(release["base"]), lfs.parent)
    (tmp_path / "page.pth").write_text("<html><body>Not found</body></html>")
    with pytest.raises(ValueError, match=r"page\.pth: not a readable PyTorch state dict") as refused:
        load_pose_encoder(tmp_path / "page.pth")
    assert "tensors only" not in str(refused.value)  # garbage is not reported as a planted object
    (tmp_path / "code.pth").write_bytes(pickle.dumps({"w": Trap(str(tmp_path / "ran"))}, protocol=2))
    with pytest.raises(ValueError, match=r"holds objects other than tensors, which weights-only loading refuses \(Unsupported global"):
        load_pose_encoder(tmp_path / "code.pth")
    assert not (tmp_path / "ran").exists()
    with pytest.raises(ValueError, match="a Stable Diffusion folder .* give it as --base"):
        load_video_unet(unet_of(release["base"]), release["base"])


def test_the_official_pose_encoder_records_the_mmpose_style(release, tmp_path):
    path = tmp_path / "checkpoints" / "pose_encoder.pth"
    path.parent.mkdir()
    torch.save(official_adapter_keys(release["encoder"]), path)
    for source in (path, path.parent):  # the file, or the official checkpoints/ folder holding it
        encoder = load_pose_encoder(source)
        assert encoder.config.skeleton_style == "mmpose" and same_weights(encoder, release["encoder"])
    assert PoseEncoder.from_official_state_dict(path, skeleton_style=None).config.skeleton_style is None


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def generate(args: list[str], capsys) -> tuple[int, str]:
    code = generate_main([*args, "--steps", "2", "--num-frames", "4", "--seed", "3", "--height", str(SIZE), "--width", str(SIZE), "--no-progress"])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def driving_keypoints(tmp_path_factory):
    """extract-poses on the bundled 29.97 fps video at its defaults (real MediaPipe): keypoints.parquet, skeleton.mp4."""
    out = tmp_path_factory.mktemp("poses")
    pose_data = str(Path(sys.executable).parent / "pose-data")
    proc = subprocess.run([pose_data, "extract-poses", str(CARPHONE), "--output", str(out), "--pose-backend", "mediapipe", "--device", "cpu",
                           "--max-frames", "12", "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "carphone"


def test_fyp_generate_reads_every_layout_to_the_same_frames(release, driving_keypoints, tmp_path, capsys):
    checkpoints = official_checkpoints(tmp_path, release["base"], release["state"], release["encoder"])
    save_like_official_training(release["state"], tmp_path / "safetensors" / "followyourpose_checkpoint-1000")
    save_sharded(release["state"], tmp_path / "sharded")
    keypoints = str(driving_keypoints / "keypoints.parquet")
    base = ["--base", str(checkpoints / "stable-diffusion-v1-4"), "--pose-encoder", str(checkpoints / "pose_encoder.pth"),
            "--pose", keypoints, "--prompt", "Iron man on the beach"]  # fmt: skip
    videos = {}
    for name, layers in (("bare", release["bare"]), ("bin", checkpoints / "followyourpose_checkpoint-1000"), ("parent", checkpoints),
                         ("safetensors", tmp_path / "safetensors" / "followyourpose_checkpoint-1000"), ("sharded", tmp_path / "sharded")):  # fmt: skip
        out = tmp_path / f"{name}.mp4"
        code, err = generate([*base, "--video-layers", str(layers), "--output", str(out)], capsys)
        assert code == 0, err
        videos[name] = decode(out)
    assert videos["bare"].shape == (4, SIZE, SIZE, 3)
    assert all(np.array_equal(v, videos["bare"]) for v in videos.values())

    sidecar = json.loads((tmp_path / "bin.mp4.json").read_text())
    assert sidecar["models"]["skeleton_style"] == "mmpose" and sidecar["pose"]["skeleton_style"] == "mmpose"
    parent = json.loads((tmp_path / "parent.mp4.json").read_text())["models"]  # which checkpoint the parent folder gave
    assert parent["video_layers"] == str(checkpoints)
    assert parent["video_layers_file"] == str(checkpoints / "followyourpose_checkpoint-1000" / "pytorch_model.bin")
    # the keypoints are drawn in the encoder's (MMPose) style: the pipeline gets exactly those skeletons
    sequence = read_pose_sequence(keypoints)
    rows = sequence.table.to_pylist()[:4]
    assert sidecar["pose"]["keypoint_rows"] == [0, 1, 2, 3]
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline
    from model.generation.pose_source import load_pose_frames

    poses = load_pose_frames(keypoints, width=SIZE, height=SIZE, num_frames=4, fps=8.0, encoder_style="mmpose")
    first = rows[0]
    people = [PersonPose(bbox=tuple(b), score=1.0, keypoints=k) for b, k in zip(first["bboxes"], first["keypoints"])]
    mmpose = render_skeleton("mmpose", people, first["width"], first["height"], sequence.info["min_keypoint_score"])
    openpose = render_skeleton("openpose", people, first["width"], first["height"], sequence.info["min_keypoint_score"])
    assert first["status"] == "ok" and not np.array_equal(mmpose, openpose)
    assert poses.skeleton_style == "mmpose" and np.array_equal(poses.frames[0], _fit(mmpose, SIZE, SIZE))
    pipe = FollowYourPosePipeline.from_parts(checkpoints / "stable-diffusion-v1-4", checkpoints / "pose_encoder.pth",
                                             checkpoints / "followyourpose_checkpoint-1000")  # fmt: skip
    frames = pipe("Iron man on the beach", poses.frames, num_frames=4, height=SIZE, width=SIZE, num_inference_steps=2, seed=3, progress=False).frames
    write_video(frames, tmp_path / "api.mp4", 8.0)  # the Python API makes the same video, encoded the same way
    assert np.array_equal(decode(tmp_path / "api.mp4"), videos["bin"])

    # an extract-poses skeleton video drawn in the openpose style is refused for the official (mmpose) encoder
    code, err = generate([*base[:4], "--video-layers", str(checkpoints), "--pose", str(driving_keypoints / "skeleton.mp4"), "--prompt", "a",
                          "--output", str(tmp_path / "refused.mp4")], capsys)  # fmt: skip
    assert code == 2 and "'openpose' skeleton style" in err and "'mmpose'" in err and "Traceback" not in err


@pytest.mark.parametrize("video, rate", [(CARPHONE, 30000 / 1001), (BIKES, 25.0)])
def test_extract_poses_then_generate_agree_on_the_frame_rate_by_default(release, video, rate, tmp_path, capsys):
    with av.open(str(video)) as container:
        assert abs(float(container.streams.video[0].average_rate) - rate) < 1e-3  # the real videos are what they say
    proc = subprocess.run([str(Path(sys.executable).parent / "pose-data"), "extract-poses", str(video), "--output", str(tmp_path / "poses"),
                           "--pose-backend", "mediapipe", "--device", "cpu", "--max-frames", "20", "--skeleton-style", "mmpose", "--no-progress"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / "poses" / video.stem
    info = read_pose_sequence(folder / "keypoints.parquet").info
    assert info["sampled_fps"] == 8.0 and info["frames"] == 20
    skeleton = folder / "skeleton.mp4"
    with av.open(str(skeleton)) as container:
        assert float(container.streams.video[0].average_rate) == 8.0 and container.streams.video[0].frames == 20
    for source in (skeleton, folder / "keypoints.parquet"):
        out = tmp_path / f"{source.suffix[1:]}.mp4"
        code = generate_main(["--base", str(release["base"]), "--video-layers", str(release["bare"]), "--pose", str(source), "--prompt", "a", "--num-frames", "12", "--steps", "1",
                              "--height", str(SIZE), "--width", str(SIZE), "--no-progress", "--output", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        sidecar = json.loads(out.with_name(out.name + ".json").read_text())
        assert sidecar["pose"]["keypoint_rows"] == list(range(12))  # frame for frame
        assert len(decode(out)) == 12
    code = generate_main(["--base", str(release["base"]), "--video-layers", str(release["bare"]), "--pose", str(skeleton), "--prompt", "a", "--num-frames", "30",
                          "--fps", "4", "--output", str(tmp_path / "short.mp4")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and re.search(r"has 20 frame\(s\) and gives 10 pose frame\(s\) at 4 fps but --num-frames is 30", err), err


def readme_official_commands() -> list[str]:
    text = (REPO / "docs" / "official-weights.md").read_text()
    match = re.search(r"## Use the official weights\n.*?```bash\n(.*?)```", text, re.S)
    assert match, "the README's official-weights walk-through is gone"
    joined = match.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_readme_official_weights_walkthrough_runs_as_written(release, tmp_path):
    """The README's commands, word for word, in a folder laid out as the official README says, with the bundled
    29.97 fps video as the user's own ``dance.mp4`` and the official example skeleton video's stand-in."""
    official_checkpoints(tmp_path, release["base"], release["state"], release["encoder"])
    shutil.copy(CARPHONE, tmp_path / "dance.mp4")
    official_example_video(tmp_path / "pose_example" / "vis_ikun_pose2.mov")
    commands = readme_official_commands()
    assert any(c.startswith("fyp-generate") for c in commands) and any(c.startswith("pose-data extract-poses") for c in commands)
    bin_dir = Path(sys.executable).parent
    for command in commands:
        words = shlex.split(command)
        proc = subprocess.run([str(bin_dir / words[0]), *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
        assert "Traceback" not in proc.stderr
    outputs = [Path(w) for c in commands if c.startswith("fyp-generate") for w in shlex.split(c)[shlex.split(c).index("--output") + 1 :][:1]]
    assert len(outputs) == 2
    for out in outputs:
        sidecar = json.loads((tmp_path / f"{out}.json").read_text())
        assert sidecar["models"]["skeleton_style"] == "mmpose" and sidecar["models"]["video_layers"].endswith("followyourpose_checkpoint-1000")
        assert sidecar["pose"]["kind"] == "skeleton_video" and sidecar["frames"] == 24 and sidecar["height"] == SIZE
        assert len(decode(tmp_path / out)) == 24
    # the example stand-in (untagged, 30 fps) gives 8 pose frames a second; extract-poses' video feeds frame for frame
    example = json.loads((tmp_path / f"{outputs[0]}.json").read_text())["pose"]
    assert example["source_frames"] == [math.ceil(k * 30 / 8 - 0.5) for k in range(24)]  # nearest frame, earlier on a tie
    own = json.loads((tmp_path / f"{outputs[1]}.json").read_text())["pose"]
    assert own["source_frames"] == list(range(24)) and own["skeleton_style"] == "mmpose"


def test_the_official_example_videos_are_read_as_skeleton_videos(tmp_path):
    """Thin MMPose-style lines lose most of their colour to MPEG-4's inter-frame coding; still a skeleton video."""
    from model.generation.pose_source import detect_kind, looks_like_skeletons
    from pose_data.media.video_writer import Mp4Writer

    assert detect_kind(official_example_video(tmp_path / "vis_ikun_pose1.mov")) == "skeleton_video"
    assert detect_kind(CARPHONE) == detect_kind(BIKES) == "driving_video"
    # dark scenes stay driving videos: a dim performer under two neon signs; white street lamps and one red tail light
    stage = np.zeros((256, 256, 3), np.uint8)
    stage[60:200, 100:140] = np.random.default_rng(0).integers(30, 60, (140, 40, 1))
    stage[10:20, 10:40], stage[220:226, 150:200] = (255, 0, 200), (0, 200, 255)
    night = np.zeros((256, 256, 3), np.uint8)
    night[100:110, 50:60] = night[100:110, 150:160] = night[100:110, 200:210] = 240
    night[200:210, 120:130] = (220, 30, 30)
    assert looks_like_skeletons(stage) is False and looks_like_skeletons(night) is False
    with Mp4Writer(tmp_path / "night.mp4", 25) as writer:  # H.264 spreads the red light's hue: still one hue
        for i in range(50):
            writer.add(np.maximum(night, np.uint8(i % 3)))
    assert detect_kind(tmp_path / "night.mp4") == "driving_video"
