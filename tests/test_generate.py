"""Pose + text -> video on the tiny SD base: the windowed sampler's properties, the pipeline object and its saved
folder, and ``fyp-generate`` on every pose source kind (the bundled real driving video through real MediaPipe)
and on bad inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from app_models import SIZE, make_tiny_parts
from model.generation.cli import main as generate_main
from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline
from model.generation.sample_video import sample_video, window_starts
from model.nets.base_model import encode_prompts, load_base_model
from model.nets.pose_encoder import PoseEncoder
from model.nets.video_unet import VideoLayersConfig, VideoUNet
from pose_data.media.video_writer import Mp4Writer, read_video_comment

CARPHONE = Path(str(resources.files("pose_data") / "sample_data" / "driving" / "carphone.mp4"))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny base, a pose encoder with non-zero outputs, and video layers whose temporal attention is not the identity."""
    root = tmp_path_factory.mktemp("gen")
    return {**make_tiny_parts(root), "root": root}


@pytest.fixture(scope="module")
def pipe(parts):
    return FollowYourPosePipeline.from_parts(parts["base"], parts["pose_encoder"], parts["video_layers"])


def pose_frames(n: int, seed: int = 0) -> np.ndarray:
    """Skeleton-like frames: coloured bars moving over black."""
    frames = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        frames[i, 10:54, (4 + 2 * i) % 56 : (4 + 2 * i) % 56 + 6] = (255, 0, 85)
        frames[i, 30:34, 8:56] = (0, 255, 170)
    return frames


class Recording(torch.nn.Module):
    """The real video model, with every call's inputs recorded."""

    def __init__(self, model: VideoUNet):
        super().__init__()
        self.inner, self.unet, self.calls = model, model.unet, []

    def check_processors(self):
        self.inner.check_processors()

    def forward(self, x, t, text, num_frames, pose=None, pose_scale=1.0):
        self.calls.append({"t": float(t), "x": x.clone(), "frames": num_frames})
        return self.inner(x, t, text, num_frames=num_frames, pose=pose, pose_scale=pose_scale)


def run_sampler(pipe, n, window, seed=0, steps=3, model=None, poses=None):
    poses = torch.from_numpy(pose_frames(n)).permute(3, 0, 1, 2).unsqueeze(0) if poses is None else poses
    return sample_video(model or pipe.model, pipe.base, ["a dancer"], num_frames=n, height=SIZE, width=SIZE, num_inference_steps=steps,
                        guidance_scale=7.5, generator=torch.Generator().manual_seed(seed), poses=poses, window=window)  # fmt: skip


def test_window_starts():
    assert window_starts(16, 8) == [0, 4, 8]
    assert window_starts(19, 8) == [0, 4, 8, 11]  # the last window moved back to end at frame 18
    assert window_starts(9, 8) == [0, 1]
    assert window_starts(8, 8) == window_starts(5, 8) == [0]
    assert window_starts(7, 3) == [0, 1, 2, 3, 4]  # hop 3 // 2 = 1
    for n, t in ((16, 8), (19, 8), (33, 6), (10, 4)):
        starts = window_starts(n, t)
        covered = np.zeros(n, int)
        for s in starts:
            covered[s : s + t] += 1
        assert covered.min() >= 1 and starts[-1] + t == n
    with pytest.raises(ValueError, match="at least 2"):
        window_starts(8, 1)


def test_up_to_one_window_is_exactly_the_single_window_ddim_sampler(pipe):
    """Reference: DDIM + guidance written out here, one UNet call per step over all frames."""
    n, steps, guidance = 6, 3, 7.5
    poses = torch.from_numpy(pose_frames(n)).permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0
    scheduler = DDIMScheduler.from_config(pipe.base.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    latents = torch.randn((n, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(3)) * scheduler.init_noise_sigma
    text = encode_prompts(pipe.base, ["a dancer", ""])
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond, uncond = pipe.model(torch.cat([latents, latents]), t, text, num_frames=n, pose=torch.cat([poses, poses])).chunk(2)
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        reference = ((pipe.base.vae.decode(latents / pipe.base.vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    for window in (8, 6):
        video = sample_video(pipe.model, pipe.base, ["a dancer"], num_frames=n, height=SIZE, width=SIZE, num_inference_steps=steps,
                             guidance_scale=guidance, generator=torch.Generator().manual_seed(3), poses=poses, window=window)  # fmt: skip
        assert torch.equal(video[0], reference)


def test_every_length_gives_exactly_that_many_frames_and_the_same_seed_the_same_video(pipe):
    poses = pose_frames(24)
    expected = {5: [(0, 5)], 11: [(0, 8), (3, 8)], 16: [(0, 8), (4, 8), (8, 8)], 19: [(0, 8), (4, 8), (8, 8), (11, 8)]}
    for n, windows in expected.items():
        out = pipe("a dancer", poses, num_frames=n, window=8, num_inference_steps=2, seed=1, progress=False)
        assert out.frames.shape == (n, SIZE, SIZE, 3) and out.frames.dtype == np.uint8
        assert out.windows == windows
    a = pipe("a dancer", poses, num_frames=16, num_inference_steps=2, seed=7, progress=False).frames
    b = pipe("a dancer", poses, num_frames=16, num_inference_steps=2, seed=7, progress=False).frames
    c = pipe("a dancer", poses, num_frames=16, num_inference_steps=2, seed=8, progress=False).frames
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_windows_reuse_the_noise_of_the_previous_windows_last_half(pipe):
    recording = Recording(pipe.model)
    run_sampler(pipe, 16, 8, model=recording, steps=2)
    assert [c["frames"] for c in recording.calls] == [8] * 6  # 3 windows x 2 steps, never more than one window
    first_step = [c["x"][:8] for c in recording.calls[:3]]  # the conditional half of windows 0, 4, 8
    for previous, current in zip(first_step, first_step[1:]):
        assert torch.equal(current[:4], previous[4:])


def test_overlapping_windows_agree_with_one_pass_when_frames_are_independent(parts):
    """With frame-independent layers (no cross-frame or temporal attention) a frame's prediction is the same in
    every window: averaging over the overlaps must then give the one-window video."""
    base = load_base_model(parts["base"])
    encoder = PoseEncoder.from_pretrained(parts["pose_encoder"])
    model = VideoUNet(base.unet, VideoLayersConfig(attention="none", temporal_attention=False), encoder).eval()
    independent = FollowYourPosePipeline(base, model)
    windowed = run_sampler(independent, 12, 4)
    whole = run_sampler(independent, 12, 12)
    assert torch.allclose(windowed, whole, atol=2e-5)


def test_with_temporal_layers_the_windows_tie_frames_together(pipe):
    windowed = run_sampler(pipe, 12, 4)
    whole = run_sampler(pipe, 12, 12)
    assert not torch.allclose(windowed, whole, atol=1e-3)  # windows see 4 frames, the whole pass all 12


def test_vae_decodes_in_chunks(pipe):
    sizes = []
    handle = pipe.base.vae.decoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        run_sampler(pipe, 19, 8, steps=1)
    finally:
        handle.remove()
    assert sizes == [8, 8, 3]


def test_pose_scale_zero_is_the_model_without_pose_exactly(pipe):
    poses = pose_frames(10)
    without = pipe("a dancer", None, num_frames=10, height=SIZE, width=SIZE, num_inference_steps=2, seed=4, progress=False)
    zero = pipe("a dancer", poses, num_frames=10, pose_scale=0.0, num_inference_steps=2, seed=4, progress=False)
    full = pipe("a dancer", poses, num_frames=10, num_inference_steps=2, seed=4, progress=False)
    assert np.array_equal(without.frames, zero.frames) and not np.array_equal(zero.frames, full.frames)


def test_saved_pipeline_loads_back_as_the_same_sampler_and_as_a_plain_sd_base(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "pipe")
    loaded = FollowYourPosePipeline.from_pretrained(folder)
    poses = pose_frames(9)
    a = pipe("a dancer", poses, num_inference_steps=2, seed=2, progress=False).frames
    b = loaded("a dancer", poses, num_inference_steps=2, seed=2, progress=False).frames
    assert np.array_equal(a, b) and loaded.skeleton_style == "openpose"
    saved_unet = load_base_model(folder).unet  # unet/ is an ordinary 2D UNet
    assert not any("attn_temp" in k for k in saved_unet.state_dict())
    assert json.loads((folder / "fyp_pipeline.json").read_text())["sources"]["pose_encoder"].endswith("pose_encoder")


def test_pipeline_rejects_bad_arguments(pipe):
    with pytest.raises(ValueError, match="multiple of 16"):
        pipe("a", None, num_frames=4, height=40, width=64, progress=False)
    with pytest.raises(ValueError, match="has 4 frame"):
        pipe("a", pose_frames(4), num_frames=6, progress=False)
    with pytest.raises(ValueError, match="uint8"):
        pipe("a", pose_frames(4).astype(np.float32), progress=False)
    # SD's scheduler (steps_offset 1): 1000 DDIM steps would index timestep 1000 of 0..999 (an IndexError mid-sampling)
    assert pipe.base.noise_scheduler.config.steps_offset == 1
    with pytest.raises(ValueError, match=r"num_inference_steps 1000 would reach timestep 1000, .* use at most 999"):
        pipe("a", pose_frames(4), num_frames=4, num_inference_steps=1000, progress=False)


# ------------------------------------------------------------------------------------------------ fyp-generate


def generate(parts, capsys, *args: str) -> tuple[int, str, str]:
    code = generate_main(["--base", parts["base"], "--pose-encoder", parts["pose_encoder"], "--video-layers", parts["video_layers"],
                          "--steps", "2", "--height", str(SIZE), "--width", str(SIZE), "--no-progress", *args])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def skeleton_video(tmp_path_factory):
    """``pose-data extract-poses`` on the bundled driving video (real MediaPipe): skeleton.mp4 + keypoints.parquet."""
    out = tmp_path_factory.mktemp("extract")
    proc = subprocess.run([str(Path(sys.executable).parent / "pose-data"), "extract-poses", str(CARPHONE), "--output", str(out),
                           "--config", "tiny", "--no-progress"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / "carphone"


def test_generate_from_a_skeleton_video_side_by_side(parts, skeleton_video, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code, stdout, err = generate(parts, capsys, "--pose", str(skeleton_video / "skeleton.mp4"), "--prompt", "a man talking",
                                 "--output", str(out), "--num-frames", "16", "--side-by-side", "--seed", "5")  # fmt: skip
    assert code == 0, err
    frames = decode(out)
    assert len(frames) == 16 and frames[0].shape == (SIZE, 2 * SIZE, 3)
    sidecar = json.loads((tmp_path / "clip.mp4.json").read_text())
    assert sidecar["seed"] == 5 and sidecar["video"] == "clip.mp4" and sidecar["frames"] == 16 and sidecar["windows"] == [[0, 8], [4, 8], [8, 8]]
    assert sidecar["settings"]["guidance"] == 12.5 and sidecar["settings"]["window"] == 8 and sidecar["fps"] == 8
    assert sidecar["models"]["video_layers"] == parts["video_layers"] and sidecar["models"]["skeleton_style"] == "openpose"
    pose = sidecar["pose"]
    assert pose["kind"] == "skeleton_video" and pose["skeleton_style"] == "openpose"
    assert pose["keypoints"] == str(skeleton_video / "keypoints.parquet") and pose["keypoint_rows"] == list(range(16))
    left = np.stack([f[:, :SIZE] for f in frames]).astype(int)  # the skeleton half: mostly black, coloured limbs
    assert (left.max(axis=3) < 30).mean() > 0.6 and left.max() > 150
    assert read_video_comment(out)["seed"] == 5
    assert "16 frames at 8 fps, seed 5" in stdout


def test_generate_from_keypoints_a_folder_and_a_driving_video(parts, skeleton_video, tmp_path, capsys):
    code, _, err = generate(parts, capsys, "--pose", str(skeleton_video / "keypoints.parquet"), "--prompt", "a man",
                            "--output", str(tmp_path / "k.gif"), "--num-frames", "9")  # fmt: skip
    assert code == 0, err
    assert Image.open(tmp_path / "k.gif").n_frames == 9
    sidecar = json.loads((tmp_path / "k.gif.json").read_text())
    assert sidecar["pose"]["kind"] == "keypoints" and sidecar["pose"]["keypoints"].endswith("keypoints.parquet")

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(decode(skeleton_video / "skeleton.mp4")[:12]):
        Image.fromarray(frame).save(folder / f"{i}.png")  # 0.png ... 11.png: natural order, not 0, 1, 10, 11, 2
    code, _, err = generate(parts, capsys, "--pose", str(folder), "--prompt", "a man", "--output", str(tmp_path / "f.mp4"),
                            "--frame-stride", "2")  # fmt: skip
    assert code == 0, err
    sidecar = json.loads((tmp_path / "f.mp4.json").read_text())
    assert sidecar["frames"] == 6 and sidecar["pose"]["source_frames"] == [0, 2, 4, 6, 8, 10] and len(decode(tmp_path / "f.mp4")) == 6

    out = tmp_path / "d.mp4"
    code, _, err = generate(parts, capsys, "--pose", str(CARPHONE), "--pose-backend", "mediapipe", "--prompt", "a man",
                            "--output", str(out), "--num-frames", "10")  # fmt: skip
    assert code == 0, err
    sidecar = json.loads((tmp_path / "d.mp4.json").read_text())
    assert sidecar["pose"]["kind"] == "driving_video" and len(decode(out)) == 10
    keypoints = pq.read_table(sidecar["pose"]["keypoints"]).to_pandas()  # written beside the video
    assert sidecar["pose"]["keypoints"] == str(tmp_path / "d.mp4.keypoints.parquet") and len(keypoints) == 10  # d.gif's would not clash
    assert sidecar["pose"]["keypoints_sha256"] == hashlib.sha256((tmp_path / "d.mp4.keypoints.parquet").read_bytes()).hexdigest()
    assert (keypoints["status"] == "ok").sum() >= 8 and sidecar["pose"]["source_frames"][:3] == [0, 4, 7]


def test_prompts_file_runs_each_line_and_resumes(parts, skeleton_video, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    pose = str(skeleton_video / "skeleton.mp4")
    jobs.write_text("\n".join([
        json.dumps({"prompt": "a man", "pose": pose, "num_frames": 4, "output": "one.mp4", "seed": 1}),
        json.dumps({"prompt": "a woman", "pose": pose, "num-frames": 5, "output": "two.gif", "guidance": 3.0}),
        json.dumps({"prompt": "nobody", "pose": str(tmp_path / "missing.mp4"), "num_frames": 4}),
        json.dumps({"prompt": "x", "pose": pose, "device": "cuda"}),
    ]) + "\n")  # fmt: skip
    code, stdout, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert code == 2
    assert "missing.mp4" in err and "jobs.jsonl:3" in err and "device are set once per run" in err and "Traceback" not in err
    manifest = json.loads((tmp_path / "out" / "generate_manifest.json").read_text())
    assert manifest["counts"] == {"ok": 2, "skipped": 0, "failed": 2}
    assert len(decode(tmp_path / "out" / "one.mp4")) == 4 and Image.open(tmp_path / "out" / "two.gif").n_frames == 5
    assert json.loads((tmp_path / "out" / "two.gif.json").read_text())["settings"]["guidance"] == 3.0
    code, stdout, _ = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert stdout.count("(skipped)") == 2


def test_prompt_lines_with_wrong_types_or_clashing_outputs_fail_alone(parts, skeleton_video, tmp_path, capsys):
    pose = str(skeleton_video / "skeleton.mp4")
    lines = [
        {"prompt": "good", "pose": pose, "num_frames": 4, "output": "good.mp4"},
        {"prompt": "a", "pose": pose, "num_frames": "abc"},
        {"prompt": "a", "pose": pose, "seed": 1.5},
        {"prompt": "a", "pose": pose, "side_by_side": "no"},
        {"prompt": "a", "pose": 5},
        {"prompt": "a", "pose": pose, "window": 1},
        {"prompt": "again", "pose": pose, "output": "good.mp4"},
    ]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    code, _, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    for fragment in ("num_frames must be an integer, got 'abc'", "seed must be an integer, got 1.5", "side_by_side must be true or false, got 'no'",
                     "pose must be a non-empty string, got 5", "window must be >= 2", "output good.mp4 is also line 1's output"):  # fmt: skip
        assert fragment in err, fragment
    manifest = json.loads((tmp_path / "out" / "generate_manifest.json").read_text())
    assert manifest["counts"] == {"ok": 1, "skipped": 0, "failed": 6}


def test_a_changed_pose_source_is_not_taken_for_done(parts, skeleton_video, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    for source in (skeleton_video / "skeleton.mp4", skeleton_video / "keypoints.parquet"):
        jobs.write_text(json.dumps({"prompt": "a", "pose": str(source), "num_frames": 4, "output": "x.mp4", "seed": 3}) + "\n")
        code, stdout, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
        assert code == 0 and "(ok)" in stdout, err
        assert json.loads((tmp_path / "out" / "x.mp4.json").read_text())["pose"]["source"] == str(source)
    code, stdout, _ = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert "(skipped)" in stdout
    (tmp_path / "out" / "x.mp4.json").write_text('{"not": "ours"}')
    code, stdout, _ = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert code == 0 and "(ok)" in stdout


def test_source_kind_detection(skeleton_video, tmp_path):
    from model.generation.pose_source import detect_kind

    frames = decode(skeleton_video / "skeleton.mp4")
    untagged = tmp_path / "untagged_skeletons.mp4"
    with Mp4Writer(untagged, 8) as writer:  # no extract-poses tag: decided by the pixels
        for frame in [np.zeros_like(frames[0])] * 3 + frames:
            writer.add(frame)
    fade_in = tmp_path / "fade_in.mp4"
    with Mp4Writer(fade_in, 30) as writer:  # a real video after a second of black
        for frame in [np.zeros((144, 176, 3), np.uint8)] * 30 + decode(CARPHONE):
            writer.add(frame)
    assert detect_kind(skeleton_video / "skeleton.mp4") == "skeleton_video"
    assert detect_kind(untagged) == "skeleton_video"
    assert detect_kind(fade_in) == "driving_video"
    assert detect_kind(CARPHONE) == "driving_video"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_pose", "does not exist"),
        ("empty_video", "empty file"),
        ("text_as_mp4", "not a readable media file"),
        ("wrong_columns", "lacks the column(s) time, width, height, keypoints"),
        ("too_short", "gives 3 pose frame(s) taking every 1 image(s) of the folder but --num-frames is 8"),
        ("style_mismatch", "'mmpose' skeleton style but the pose encoder was trained on 'openpose'"),
        ("missing_encoder", "pose encoder"),
        ("garbage_encoder", "not a readable PyTorch state dict"),
        ("bad_size", "multiple of 16"),
        ("nan_time", "column 'time' must hold finite, non-decreasing seconds"),
        ("bad_device", "is not a device"),
    ],
)
def test_bad_inputs_are_one_line_errors_with_exit_code_2(parts, tmp_path, capsys, case, expected):
    pose = tmp_path / "pose.mp4"
    extra: list[str] = []
    if case == "empty_video":
        pose.write_bytes(b"")
    elif case == "text_as_mp4":
        pose.write_text("hello, I am a text file\n")
    elif case == "wrong_columns":
        pose = tmp_path / "keypoints.parquet"
        pq.write_table(pa.table({"frame": [0, 1], "x": [1.0, 2.0]}), pose)
    elif case == "too_short":
        pose = tmp_path / "three"
        pose.mkdir()
        for i in range(3):
            Image.fromarray(pose_frames(3)[i]).save(pose / f"{i}.png")
        extra = ["--num-frames", "8"]
    elif case == "style_mismatch":
        with Mp4Writer(pose, 8, comment={"format": "fyp-skeleton-video", "skeleton_style": "mmpose"}) as writer:
            for frame in pose_frames(8):
                writer.add(frame)
    elif case in ("missing_encoder", "garbage_encoder"):
        encoder = tmp_path / ("nope" if case == "missing_encoder" else "garbage.pth")
        if case == "garbage_encoder":
            encoder.write_text("not a checkpoint\n")
        code = generate_main(["--base", parts["base"], "--pose-encoder", str(encoder), "--pose", "x.mp4", "--prompt", "a",
                              "--output", str(tmp_path / "o.mp4")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and expected in err and encoder.name in err and len(err.strip().splitlines()) == 1
        return
    elif case == "nan_time":
        pose = tmp_path / "keypoints.parquet"
        pq.write_table(pa.table({"time": [0.0, float("nan")], "width": [64, 64], "height": [64, 64], "keypoints": [[], []]},
                                schema=pa.schema([("time", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
                                                  ("keypoints", pa.list_(pa.list_(pa.list_(pa.float32()))))])), pose)  # fmt: skip
    elif case == "bad_device":
        extra = ["--device", "cpux"]
    elif case == "bad_size":
        extra = ["--height", "40"]
    code, _, err = generate(parts, capsys, "--pose", str(pose), "--prompt", "a", "--output", str(tmp_path / "o.mp4"), *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fyp-generate: error:") and expected in lines[0], err
    if case not in ("bad_size", "bad_device"):
        assert pose.name in lines[0]
    assert not (tmp_path / "o.mp4").exists()


def test_console_script_exit_code_and_no_traceback(parts, tmp_path):
    proc = subprocess.run([str(Path(sys.executable).parent / "fyp-generate"), "--base", str(tmp_path / "no-base"), "--pose", "p.mp4",
                           "--prompt", "a", "--output", str(tmp_path / "o.mp4")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no-base" in proc.stderr and proc.stderr.startswith("fyp-generate: error:")


# ------------------------------------------------------------------ issue 18: where fyp-generate and the pipeline write


def test_save_pretrained_refuses_a_folder_that_is_not_a_saved_pipeline_and_keeps_other_files_of_one(pipe, tmp_path):
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes\n")
    (notes / "unet").mkdir()  # a name the pipeline uses, in a folder that is not a saved pipeline
    (notes / "unet" / "keep.txt").write_text("keep me\n")
    with pytest.raises(FileExistsError, match=r"mine is not empty and not a saved Follow-Your-Pose pipeline \(no fyp_pipeline.json\)"):
        pipe.save_pretrained(notes)
    assert (notes / "notes.txt").read_text() == "my notes\n" and (notes / "unet" / "keep.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temp folder left beside it
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        pipe.save_pretrained(a_file)

    saved = pipe.save_pretrained(tmp_path / "pipe")  # a saved pipeline: its own parts are replaced, the rest kept
    (saved / "README.md").write_text("# my pipeline\n")
    (saved / "unet" / "stale.bin").write_text("old part")
    pipe.save_pretrained(saved)
    assert (saved / "README.md").read_text() == "# my pipeline\n" and not (saved / "unet" / "stale.bin").exists()
    assert FollowYourPosePipeline.from_pretrained(saved).skeleton_style == "openpose"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (pipe.save_pretrained(empty) / "fyp_pipeline.json").is_file()


def test_height_and_width_are_bounded_in_the_cli_and_the_pipeline(parts, pipe, tmp_path, capsys):
    # a missing --base: the bound is checked before anything is loaded
    code = generate_main(["--base", str(tmp_path / "no-base"), "--pose", "p.mp4", "--prompt", "a", "--output", str(tmp_path / "o.mp4"),
                          "--height", "65536"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fyp-generate: error: --height must be in [1, 4096] pixels") and "65536" in err
    assert len(err.strip().splitlines()) == 1
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"prompt": "a", "pose": "p.mp4", "width": 65536}) + "\n")
    code, _, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(tmp_path / "out"))
    assert code == 2 and "jobs.jsonl:1: width must be in [1, 4096] pixels" in err and "Traceback" not in err
    with pytest.raises(ValueError, match=r"height must be a positive multiple of 16 \(the pose encoder's downscale\) up to 4096, got 4112"):
        pipe("a", None, num_frames=1, height=4112, width=16, num_inference_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"num_inference_steps must be in \[1, 1000\] \(the scheduler's training steps\), got 5000"):
        pipe("a", None, num_frames=1, height=16, width=16, num_inference_steps=5000, progress=False)


def test_an_output_that_is_an_input_is_refused_by_resolved_path(parts, skeleton_video, tmp_path, capsys):
    pose = tmp_path / "pose.mp4"
    pose.write_bytes((skeleton_video / "skeleton.mp4").read_bytes())
    original = pose.read_bytes()
    (tmp_path / "link.mp4").symlink_to(pose)
    code, _, err = generate(parts, capsys, "--pose", str(tmp_path / "link.mp4"), "--prompt", "a", "--output", str(pose), "--num-frames", "4")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"output {pose} is the pose source (--pose) ({pose})" in err and "choose another output" in err
    assert pose.read_bytes() == original
    code, _, err = generate(parts, capsys, "--pose", str(pose), "--prompt", "a", "--output", str(Path(parts["pose_encoder"]) / "x.mp4"))
    assert code == 2 and "lies inside the model given as --pose-encoder" in err and not (Path(parts["pose_encoder"]) / "x.mp4").exists()

    out = tmp_path / "out"
    out.mkdir()
    (out / "skel.mp4").write_bytes(original)
    prompts = out / "a.mp4.json"  # a --prompts file with the name of a sidecar
    prompts.write_text("\n".join(json.dumps(line) for line in [
        {"prompt": "a", "pose": str(out / "skel.mp4"), "num_frames": 4, "output": "skel.mp4"},  # its own pose source
        {"prompt": "a", "pose": str(pose), "num_frames": 4, "output": "a.mp4"},  # its sidecar: the prompts file
        {"prompt": "a", "pose": str(pose), "num_frames": 4, "output": "pose_of_line_4.mp4"},  # another line's pose source
        {"prompt": "a", "pose": str(out / "pose_of_line_4.mp4"), "num_frames": 4, "output": "good.mp4"},
    ]) + "\n")  # fmt: skip
    text = prompts.read_text()
    (out / "pose_of_line_4.mp4").write_bytes(original)
    code, stdout, err = generate(parts, capsys, "--prompts", str(prompts), "--output", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"a.mp4.json:1: output {out / 'skel.mp4'} is line 1's pose source" in err
    assert f"a.mp4.json:2: output {out / 'a.mp4'}: its sidecar file a.mp4.json is the --prompts file" in err
    assert f"a.mp4.json:3: output {out / 'pose_of_line_4.mp4'} is line 4's pose source" in err
    assert (out / "skel.mp4").read_bytes() == original and (out / "pose_of_line_4.mp4").read_bytes() == original and prompts.read_text() == text
    assert json.loads((out / "generate_manifest.json").read_text())["counts"] == {"ok": 1, "skipped": 0, "failed": 3}
    assert len(decode(out / "good.mp4")) == 4


def test_sidecars_are_named_after_the_whole_file_name_and_resume_reads_old_ones(parts, skeleton_video, tmp_path, capsys):
    pose = str(skeleton_video / "skeleton.mp4")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"prompt": "a", "pose": pose, "num_frames": 4, "output": name, "seed": 1})
                              for name in ("clip.mp4", "clip.gif", "generate_manifest.mp4")) + "\n")  # fmt: skip
    out = tmp_path / "out"
    code, _, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(out))
    assert code == 0, err
    for name in ("clip.mp4", "clip.gif", "generate_manifest.mp4"):
        assert json.loads((out / f"{name}.json").read_text())["video"] == name
    assert json.loads((out / "generate_manifest.json").read_text())["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert not (out / "clip.json").exists()
    code, stdout, _ = generate(parts, capsys, "--prompts", str(jobs), "--output", str(out))
    assert stdout.count("(skipped)") == 3

    # a sidecar of an earlier version (clip.json) counts for the video it names, and only for that one
    (out / "clip.mp4.json").rename(out / "clip.json")
    (out / "clip.gif.json").unlink()
    code, stdout, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(out))
    assert code == 0 and f"{out / 'clip.mp4'} (skipped)" in stdout and f"{out / 'clip.gif'} (ok)" in stdout, err
    assert json.loads((out / "clip.json").read_text())["video"] == "clip.mp4"  # not the gif's: it stays
    assert json.loads((out / "clip.gif.json").read_text())["video"] == "clip.gif"


def test_a_bad_output_path_is_named_before_the_model_is_loaded(skeleton_video, tmp_path, capsys):
    pose = str(skeleton_video / "skeleton.mp4")
    missing_base = ["--base", str(tmp_path / "no-base"), "--pose", pose, "--prompt", "a"]
    (tmp_path / "x.mp4").mkdir()
    (tmp_path / "y.mp4.json").mkdir()
    (tmp_path / "a_file").write_text("x")
    for output, expected in ((tmp_path / "x.mp4", f"output {tmp_path / 'x.mp4'} is an existing folder"),
                             (tmp_path / "y.mp4", f"output {tmp_path / 'y.mp4'}: its sidecar file y.mp4.json is an existing folder"),
                             (tmp_path / "a_file" / "z.mp4", f"{tmp_path / 'a_file'} is a file, not a folder")):  # fmt: skip
        code = generate_main([*missing_base, "--output", str(output)])  # the output is named, not the missing base
        err = capsys.readouterr().err
        assert code == 2 and expected in err and "no-base" not in err and len(err.strip().splitlines()) == 1, err


def test_prompt_outputs_outside_the_folder_or_written_twice_fail_before_sampling(parts, skeleton_video, tmp_path, capsys):
    pose = str(skeleton_video / "skeleton.mp4")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "escape").symlink_to(elsewhere)
    (out / "alias").symlink_to(out)
    (out / "x.mp4").mkdir()
    (out / "sub").write_text("a file")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps({"prompt": "a", "pose": pose, "num_frames": 4, "output": name})
                              for name in ("escape/e.mp4", "x.mp4", "sub/s.mp4", "one.mp4", "alias/one.mp4")) + "\n")  # fmt: skip
    code, stdout, err = generate(parts, capsys, "--prompts", str(jobs), "--output", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"jobs.jsonl:1: output {out / 'escape' / 'e.mp4'} is written to {elsewhere / 'e.mp4'}, outside the output folder {out}" in err
    assert "jobs.jsonl:2: output" in err and "x.mp4 is an existing folder" in err
    assert f"jobs.jsonl:3: output {out / 'sub' / 's.mp4'}: {out / 'sub'} is a file, not a folder" in err
    assert "jobs.jsonl:5: output alias/one.mp4 is also line 4's output" in err
    assert list(elsewhere.iterdir()) == [] and len(decode(out / "one.mp4")) == 4
    manifest = json.loads((out / "generate_manifest.json").read_text())
    assert manifest["counts"] == {"ok": 1, "skipped": 0, "failed": 4}
    assert all("seconds" not in v for v in manifest["videos"] if v["status"] == "failed")


def test_ctrl_c_during_prompts_writes_the_manifest_of_what_was_done_and_exits_130(parts, skeleton_video, tmp_path):
    import os
    import signal
    import time

    pose = str(skeleton_video / "skeleton.mp4")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in [
        {"prompt": "a", "pose": pose, "num_frames": 4, "steps": 1, "output": "first.mp4"},
        {"prompt": "a", "pose": pose, "num_frames": 32, "steps": 999, "output": "second.mp4"},  # minutes: interrupted
        {"prompt": "a", "pose": pose, "num_frames": 4, "output": "third.mp4"},
    ]) + "\n")  # fmt: skip
    out = tmp_path / "out"
    command = [str(Path(sys.executable).parent / "fyp-generate"), "--base", parts["base"], "--pose-encoder", parts["pose_encoder"],
               "--video-layers", parts["video_layers"], "--height", str(SIZE), "--width", str(SIZE), "--no-progress",
               "--prompts", str(jobs), "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        assert first.strip() == f"{out / 'first.mp4'} (ok)", first + proc.stderr.read()
        time.sleep(1.0)  # the second line is sampling now (it would take minutes)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fyp-generate: interrupted (Ctrl-C) at {jobs}:2: 1 of 3 video(s) done"), stderr
    manifest = json.loads((out / "generate_manifest.json").read_text())
    assert manifest["counts"] == {"ok": 1, "skipped": 0, "failed": 0, "interrupted": 1} and manifest["not_run"] == [3]
    assert [v["status"] for v in manifest["videos"]] == ["ok", "interrupted"]
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "first.mp4.json", "generate_manifest.json"]  # no half of the second


def test_a_rerun_that_fails_while_writing_leaves_the_earlier_video_sidecar_and_keypoints_whole(parts, tmp_path, capsys, monkeypatch):
    import pose_data.media.video_writer

    out = tmp_path / "d.mp4"
    args = ("--pose", str(CARPHONE), "--pose-backend", "mediapipe", "--prompt", "a man", "--output", str(out), "--num-frames", "4")
    code, _, err = generate(parts, capsys, *args, "--seed", "1")
    assert code == 0, err
    names = ("d.mp4", "d.mp4.json", "d.mp4.keypoints.parquet")
    before = {name: (tmp_path / name).read_bytes() for name in names}
    real_write_video = pose_data.media.video_writer.write_video

    def disk_full(frames, path, fps, **kwargs):  # the encoder gets part of the way, then the disk is full
        real_write_video(frames[:1], path, fps, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pose_data.media.video_writer, "write_video", disk_full)
    code, _, err = generate(parts, capsys, *args, "--seed", "2")  # new settings: the video is made again, and fails
    assert code == 2 and "No space left on device" in err
    assert {name: (tmp_path / name).read_bytes() for name in names} == before  # the earlier result, whole and scorable
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary file left behind
