"""One ``fyp-generate`` video: :func:`generate_one` makes it and writes it with its sidecar (and keypoints).

The sidecar (``clip.mp4.json``, format :data:`SIDECAR_FORMAT`) records every setting, the seed, the models, the
frame count and where the poses came from, so that ``fyp-eval`` can score the video later. Every file is written
under a hidden temporary name and renamed into place at the end (the sidecar last: it marks the video done), so an
error or Ctrl-C leaves the earlier result of the output whole. The names of these files and the checks they pass:
:mod:`model.generation.outputs`.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from pathlib import Path

from model.generation.outputs import Inputs, check_output, keypoints_path, old_sidecar_path, sidecar_path
from model.generation.video_settings import VideoSettings
from pose_data.files.json_file import read_json
from pose_data.files.manifest import file_sha256

SIDECAR_FORMAT = "fyp-generated-video"


def _remove_old_sidecar(output: Path) -> None:
    """Delete a sidecar of the old name (``clip.json``) that describes this video: its new one replaces it."""
    old = old_sidecar_path(output)
    try:
        done = read_json(old) if old.is_file() else None
    except ValueError:
        return
    if isinstance(done, dict) and done.get("format") == SIDECAR_FORMAT and done.get("video") == output.name:
        old.unlink(missing_ok=True)


def generate_one(pipe, prompt: str, pose: str, output: Path, settings: VideoSettings, *, progress: bool, on_step=None) -> dict:
    """Make one video and its sidecar; returns the sidecar. ``on_step(done, total)``: called after each window-step."""
    import numpy as np

    from model.generation.pose_source import load_pose_frames
    from pose_data.extract_poses.config import ExtractPosesConfig
    from pose_data.files.atomic import write_json_atomic
    from pose_data.files.manifest import package_versions
    from pose_data.media.video_writer import VIDEO_SUFFIXES, write_video
    from pose_data.pose.estimator import PoseModelConfig

    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output {output}: must end in {' or '.join(VIDEO_SUFFIXES)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a prompt is needed (--prompt TEXT)")
    if not pose:
        raise ValueError("a pose source is needed (--pose SOURCE)")
    inputs = Inputs()
    inputs.add_pose(pose, "the pose source")
    inputs.add_models({k: v for k, v in pipe.sources.items() if k != "video_layers_file"})
    check_output(output, inputs)
    started = time.perf_counter()
    settings.validate()
    height = pipe.default_size if settings.height is None else settings.height
    width = pipe.default_size if settings.width is None else settings.width
    pipe.check_arguments(settings.num_frames or 1, height, width, settings.window, settings.steps)
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    device_name = str(pipe.device)
    extract = ExtractPosesConfig(pose=PoseModelConfig(backend=settings.pose_backend, device=device_name if device_name.startswith("cuda") else "cpu"))
    poses = load_pose_frames(
        pose, width=width, height=height, num_frames=settings.num_frames, fps=settings.fps, frame_stride=settings.frame_stride,
        kind=settings.source_kind, encoder_style=pipe.skeleton_style, skeleton_style=settings.skeleton_style,
        allow_style_mismatch=settings.allow_style_mismatch, extract_config=extract,
    )  # fmt: skip
    num_frames = settings.num_frames or len(poses.frames)
    result = pipe(
        prompt, poses.frames[:num_frames], num_frames=num_frames, height=height, width=width,
        negative_prompt=settings.negative_prompt, window=settings.window, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, pose_scale=settings.pose_scale, seed=seed, progress=progress, on_step=on_step,
    )  # fmt: skip
    frames = result.frames
    if settings.side_by_side:
        frames = np.concatenate([poses.frames[:num_frames], frames], axis=2)
    # every file is written under a hidden temporary name first and all are renamed into place at the end, so an
    # error or Ctrl-C leaves the earlier result of this output (video, sidecar, keypoints) whole, and no half of a new one
    tag = secrets.token_hex(4)
    staged: list[tuple[Path, Path]] = []  # (temporary, final)

    def stage(final: Path) -> Path:
        staged.append((final.with_name(f".{final.stem}.tmp-{tag}{final.suffix}"), final))
        return staged[-1][0]

    try:
        keypoints, rows = poses.keypoints, poses.keypoint_rows
        keypoints_sha256 = file_sha256(keypoints) if keypoints else None
        if poses.extracted is not None:
            keypoints_file = keypoints_path(output)
            keypoints_sha256 = file_sha256(poses.extracted.save(stage(keypoints_file)))
            keypoints = str(keypoints_file)
        if keypoints:
            keypoints = str(Path(keypoints).resolve())
        write_video(frames, stage(output), settings.fps, comment={"format": SIDECAR_FORMAT, "prompt": prompt, "seed": seed})
        sidecar = {
            "format": SIDECAR_FORMAT,
            "video": output.name,
            "prompt": prompt,
            "seed": seed,
            "settings": dataclasses.asdict(settings),
            "frames": num_frames,
            "fps": settings.fps,
            "height": height,
            "width": width,
            "side_by_side": settings.side_by_side,
            "windows": [list(w) for w in result.windows],
            "models": {**pipe.sources, "skeleton_style": pipe.skeleton_style, "video_layers_config": pipe.model.config.to_dict()},
            "device": device_name,
            "dtype": str(pipe.dtype).replace("torch.", ""),
            "pose": {
                "source": poses.source, "kind": poses.kind, "skeleton_style": poses.skeleton_style,
                "source_frames": poses.source_frames[:num_frames], "times": None if poses.times is None else poses.times[:num_frames],
                "keypoints": keypoints, "keypoint_rows": None if rows is None else rows[:num_frames],
                "keypoints_sha256": keypoints_sha256,
            },  # fmt: skip
            "versions": package_versions(),
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json_atomic(stage(sidecar_path(output)), sidecar)
        for temporary, final in staged:  # the sidecar last: it is what marks the video done
            temporary.replace(final)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    _remove_old_sidecar(output)
    return sidecar
