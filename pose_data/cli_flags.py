"""The named flags of the command lines, each mapped to the dotted config key it sets.

Every default lives in the config dataclasses, not here: an unset flag is None and left out of the layer that
:func:`flag_layer` makes, which ``pipelines.cli`` (``pose-data``) and ``fyp-eval`` put above ``--config`` and ``--set``.
"""

from __future__ import annotations

import argparse

from pose_data.config import set_dotted

LAION_POSE_FLAGS: dict[str, tuple[str, type, str]] = {
    "--url-col": ("input.url_col", str, "URL column of INPUT (default URL)"),
    "--caption-col": ("input.caption_col", str, "caption column of INPUT (default TEXT)"),
    "--shard-size": ("input.shard_size", int, "input rows per output shard (default 1000)"),
    "--image-size": ("download.image_size", int, "img2dataset image_size (default 512)"),
    "--resize-mode": ("download.resize_mode", str, "img2dataset resize_mode: no|border|keep_ratio|keep_ratio_largest|center_crop"),
    "--processes": ("download.processes", int, "download tasks at once (default 1)"),
    "--threads": ("download.threads", int, "download threads per task (default 16)"),
    "--timeout": ("download.timeout", int, "seconds per request (default 10)"),
    "--retries": ("download.retries", int, "download retries (default 0)"),
    "--max-image-bytes": ("download.max_image_bytes", int, "largest body downloaded, bytes (default 20 MiB)"),
    "--deadline": ("download.deadline", float, "seconds per request in total (default 60)"),
    "--pose-backend": ("pose.backend", str, "mmpose (RTMDet + RTMPose), mediapipe (offline, 1 person); with hands and face: mmpose-wholebody, mediapipe-holistic (offline)"),
    "--device": ("pose.device", str, "cpu or cuda (default cpu)"),
    "--batch-size": ("pose.batch_size", int, "images per pose call and boxes per keypoint-model batch (default 16)"),
    "--det-model": ("pose.det_model", str, "MMPose backend detector: alias (rtmdet-m) or config path"),
    "--det-checkpoint": ("pose.det_checkpoint", str, "detector weights: auto (official URL), a path, or none (random)"),
    "--pose-model": ("pose.pose_model", str, "MMPose backend keypoint model: alias (rtmpose-m) or config path"),
    "--pose-checkpoint": ("pose.pose_checkpoint", str, "keypoint weights: auto, a path, or none (random)"),
    "--min-keypoint-score": ("filter.min_keypoint_score", float, "keypoint score threshold (default per backend: mmpose 0.3, mediapipe 0.5)"),
    "--min-keypoints": ("filter.min_keypoints", int, "keypoints above the score a person needs (default 8)"),
    "--min-hand-keypoints": ("filter.min_hand_keypoints", int, "a kept image needs a hand with this many points scoring at least --min-keypoint-score (whole-body backends; default: off)"),
    "--min-person-area": ("filter.min_person_area", float, "person box area as a fraction of the image (default 0)"),
    "--max-persons": ("filter.max_persons", int, "more kept persons than this: too_many_persons (default 3)"),
    "--min-image-size": ("filter.min_image_size", int, "shorter side of the original, pixels (default 256)"),
    "--skeleton-style": ("skeleton_style", str, "openpose (ControlNet annotator), openpose_full (ControlNet 1.1: body, hands, face) or mmpose"),
    "--ray-address": ("ray.address", str, "join a Ray cluster (auto, HOST:PORT or ray://host:port); default: a local Ray of its own"),
    "--num-pose-workers": ("ray.num_pose_workers", int, "pose actors, one model load each (default 1)"),
    "--pose-worker-cpus": ("ray.pose_worker_cpus", float, "CPUs per pose actor (default 1)"),
    "--pose-worker-gpus": ("ray.pose_worker_gpus", float, "GPUs per pose actor (default 1 with --device cuda)"),
    "--preview-images": ("preview_images", int, "kept images on preview.png (default 16, 0: none)"),
}



HDVILA_FLAGS: dict[str, tuple[str, type, str]] = {
    "--shard-size": ("shard_size", int, "clips per index shard (default 100)"),
    "--min-duration": ("filter.min_duration", float, "decoded seconds below this: too_short (default 0)"),
    "--max-duration": ("filter.max_duration", float, "decoded seconds above this: filtered (default none)"),
    "--min-frames": ("filter.min_frames", int, "decoded frames below this: too_short (default 1)"),
    "--min-resolution": ("filter.min_resolution", int, "shorter side below this: filtered (default 0)"),
    "--size": ("clips.size", int, "clip shards: shorter side in pixels (default: source size)"),
    "--fps": ("clips.fps", float, "clip shards: frame rate (default: source rate)"),
    "--crf": ("clips.crf", int, "clip shards: libx264 CRF (default 23)"),
    "--frames": ("clips.frames", int, "clip shards: N JPEG frames per clip instead of an mp4"),
    "--stride": ("clips.stride", int, "with --frames: keep every S-th decoded frame (default 1)"),
    "--download-timeout": ("download_timeout", int, "seconds per yt-dlp download (default 60)"),
    "--ray-address": ("ray_address", str, "join a Ray cluster (auto, HOST:PORT or ray://host:port); default: a local Ray of its own"),
    "--preview-clips": ("preview_clips", int, "kept clips on preview.png (default 12, 0: none)"),
    "--caption-model": ("caption.model", str, "video VLM (hub id or folder) captioning kept clips that have no --captions caption"),
    "--caption-frames": ("caption.frames", int, "frames of a clip the captioner sees, spread over it (default 8)"),
    "--caption-prompt": ("caption.prompt", str, "the captioner's instruction (default: one sentence on the people, actions, scene, camera)"),
    "--caption-max-tokens": ("caption.max_tokens", int, "the most tokens of a caption (default 77)"),
    "--caption-batch-size": ("caption.batch_size", int, "clips per captioner call (default 4)"),
    "--caption-workers": ("caption.workers", int, "captioning actors (default: one per GPU of the cluster, or 1)"),
    "--caption-device": ("caption.device", str, "auto (cuda when there is a GPU), cpu or cuda"),
}
HDVILA_SWITCHES = {
    "--write-clips": ("clips.write_clips", "also write OUT/clips/NNNNN.tar training shards"),
    "--square": ("clips.square", "clip shards: centre-crop to a square"),
    "--clip-spans-to-video": ("clip_spans_to_video", "clip spans running past the video's end (recorded) instead of span_out_of_range"),
    "--download": ("download", "fetch missing videos with yt-dlp into VIDEOS/_downloaded"),
    "--allow-private-addresses": ("allow_private_addresses", "with --download: also fetch non-public addresses (local serving only)"),
    "--recaption": ("caption.recaption", "with --caption-model: caption every kept clip, also those with a --captions caption"),
}

EXTRACT_POSES_FLAGS: dict[str, tuple[str, type, str]] = {
    **{flag: LAION_POSE_FLAGS[flag] for flag in (
        "--pose-backend", "--device", "--batch-size", "--det-model", "--det-checkpoint", "--pose-model",
        "--pose-checkpoint", "--min-keypoint-score", "--min-person-area", "--skeleton-style")},
    "--min-keypoints": ("filter.min_keypoints", int, "confident keypoints a person needs to be drawn (default 4)"),
    "--max-persons": ("filter.max_persons", int, "more kept persons than this: too_many_persons, drawn black (default 20)"),
    "--fps": ("sampling.fps", float, "sample the video at this rate (nearest frame per tick); default 8, fyp-generate's rate; 0: every frame"),
    "--frame-stride": ("sampling.frame_stride", int, "keep every K-th frame instead of sampling at --fps"),
    "--max-frames": ("sampling.max_frames", int, "stop after this many sampled frames"),
    "--crf": ("crf", int, "libx264 quality of skeleton.mp4, 0-51 (default 18)"),
}  # fmt: skip


def flag_layer(args: argparse.Namespace, flags: dict) -> dict:
    """The named flags the user gave, as a nested config dict (unset flags are None and left out)."""
    layer: dict = {}
    for flag, (key, *_rest) in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            set_dotted(layer, key, value)
    return layer
