"""The clip captioner (``pose_data.hdvila.captioner``) on a tiny random SmolVLM2-family model and real video frames:
loading through the Auto classes, the frames the model receives, reproducible greedy captions, failed batches as
rows with a reason, and the settings that decide the captions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.nets.tiny_captioner import make_captioner_tokenizer, make_tiny_captioner, make_tiny_qwen_captioner
from pose_data.hdvila.caption_frames import ClipFrames, spread_indices
from pose_data.hdvila.captioner import CaptionConfig, VideoCaptioner, clean_caption, folder_sha256
from pose_data.media.video_decode import decode_span

SAMPLES = Path(__file__).resolve().parents[1] / "pose_data" / "sample_data" / "hdvila"


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory) -> Path:
    return make_tiny_captioner(tmp_path_factory.mktemp("captioner") / "tiny", seed=0)


@pytest.fixture(scope="module")
def captioner(tiny_captioner) -> VideoCaptioner:
    return VideoCaptioner(CaptionConfig(model=str(tiny_captioner), batch_size=2, max_tokens=12))


def decoded(name: str, start: float, end: float) -> tuple[list[np.ndarray], float]:
    frames: list[np.ndarray] = []
    result = decode_span(SAMPLES / name, start, end, on_frame=lambda frame, _t: frames.append(frame.to_ndarray(format="rgb24")))
    return frames, result.fps


def clip_of(name: str, start: float, end: float, k: int = 8) -> ClipFrames:
    frames, fps = decoded(name, start, end)
    indices = spread_indices(len(frames), k)
    return ClipFrames(np.stack([frames[i] for i in indices]), indices, fps, end - start)


def test_spread_indices_take_the_middle_of_equal_parts():
    assert spread_indices(50, 8) == [3, 9, 15, 21, 28, 34, 40, 46]
    assert spread_indices(5, 8) == [0, 1, 2, 3, 4] and spread_indices(8, 8) == list(range(8))
    assert spread_indices(9, 1) == [4]
    for count in range(1, 200):
        picked = spread_indices(count, 8)
        assert picked == sorted(set(picked)) and 0 <= picked[0] and picked[-1] < count and len(picked) == min(count, 8)


def test_the_tiny_captioner_loads_through_the_auto_classes_with_the_real_processor(tiny_captioner, captioner):
    from transformers import SmolVLMForConditionalGeneration, SmolVLMProcessor

    assert isinstance(captioner.processor, SmolVLMProcessor) and isinstance(captioner.model, SmolVLMForConditionalGeneration)
    assert captioner.prompt_text.startswith("<|im_start|>User: <video>Describe this video in one sentence")
    assert captioner.prompt_text.endswith("<end_of_utterance>\nAssistant:")
    tokenizer = captioner.processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<image>") == captioner.model.config.image_token_id
    assert tokenizer.decode(tokenizer("a man riding a bike").input_ids) == "a man riding a bike"
    # the BPE is learnt deterministically: the same tokenizer each time it is built
    assert make_captioner_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_the_model_receives_the_chosen_frames_with_their_timestamps(captioner, monkeypatch):
    clip = clip_of("bikes.mp4", 0.0, 2.0)
    assert clip.indices == [3, 9, 15, 21, 28, 34, 40, 46] and clip.frames.shape == (8, 272, 640, 3)
    received = {}
    real = captioner.processor.__class__.__call__

    def recording(self, *args, **kwargs):
        received.update(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(captioner.processor.__class__, "__call__", recording)
    captioner.caption([clip])
    assert len(received["videos"]) == 1 and np.array_equal(received["videos"][0], clip.frames)
    metadata = received["video_metadata"][0]
    assert metadata.timestamps == pytest.approx([i / 25.0 for i in clip.indices]) and metadata.duration == 2.0
    # what the model's prompt says of the frames: their count and their timestamps
    text = captioner.processor.batch_decode(captioner.inputs([clip])["input_ids"])[0]
    assert "series of eight frames" in text and text.count("Frame from 00:0") == 8


def test_captions_are_reproducible_and_do_not_depend_on_the_batching(tiny_captioner, captioner):
    clips = [clip_of("bikes.mp4", 0.0, 2.0), clip_of("bikes.mp4", 1.0, 3.0), clip_of("bigbuckbunny.mp4", 0.0, 2.0)]
    first = captioner.caption(clips)
    assert all(r.error == "" and r.caption and r.caption == clean_caption(r.caption) for r in first)
    again = VideoCaptioner(CaptionConfig(model=str(tiny_captioner), batch_size=3, max_tokens=12)).caption(clips)
    alone = [captioner.caption([clip])[0] for clip in clips]
    assert [r.caption for r in again] == [r.caption for r in first] == [r.caption for r in alone]


def test_a_failing_batch_gives_its_clips_the_reason_and_the_others_their_captions(captioner, monkeypatch):
    clips = [clip_of("bikes.mp4", 0.0, 2.0), clip_of("bikes.mp4", 0.0, 1.0), clip_of("bigbuckbunny.mp4", 0.0, 2.0)]
    real = captioner.caption_batch

    def failing(batch):
        if any(len(c.indices) == 8 and c.duration == 1.0 for c in batch):
            raise ValueError("the frames could not be processed:\nshape mismatch")
        return real(batch)

    monkeypatch.setattr(captioner, "caption_batch", failing)
    results = captioner.caption(clips)  # batch_size 2: clips 0 and 1 fail together, clip 2 is captioned
    assert [r.error for r in results] == ["ValueError: the frames could not be processed:"] * 2 + [""]
    assert [r.caption for r in results[:2]] == ["", ""] and results[2].caption


def test_a_batch_out_of_gpu_memory_is_captioned_clip_by_clip_and_a_lost_gpu_is_raised(captioner, monkeypatch):
    clips = [clip_of("bikes.mp4", 0.0, 2.0), clip_of("bikes.mp4", 0.0, 1.0), clip_of("bigbuckbunny.mp4", 0.0, 2.0)]
    real, calls = captioner.caption_batch, []

    def out_of_memory_when_two(batch):
        calls.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch)

    monkeypatch.setattr(captioner, "caption_batch", out_of_memory_when_two)
    results = captioner.caption(clips)
    assert calls == [2, 1, 1, 1] and all(r.caption and not r.error for r in results)
    assert [r.caption for r in results] == [captioner.caption([clip])[0].caption for clip in clips]

    def lost_gpu(batch):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(captioner, "caption_batch", lost_gpu)
    with pytest.raises(RuntimeError, match="illegal memory access"):  # not a row: the process has to go
        captioner.caption(clips)
    assert clean_caption("\ufffd\x05 \n") == "" and clean_caption("a man\x11 rides\n a bike\ufffd") == "a man rides a bike"
    monkeypatch.setattr(captioner, "caption_batch", lambda batch: [clean_caption("\ufffd\x05 ")] * len(batch))
    assert [r.error for r in captioner.caption(clips[:2])] == ["the model gave an empty caption"] * 2


def test_caption_settings_are_checked_and_recorded(tiny_captioner, captioner):
    for bad, message in [({"frames": 0}, "caption.frames must be an integer from 1 to 64, got 0"),
                         ({"max_tokens": 2.5}, "caption.max_tokens must be an integer"),
                         ({"prompt": " "}, "caption.prompt must be a non-empty instruction"),
                         ({"dtype": "int8"}, "caption.dtype must be one of auto, float32, float16, bfloat16, got 'int8'")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            CaptionConfig(model="x", **bad).validate()
    identity = captioner.identity()
    assert identity["model"] == str(tiny_captioner) and identity["frames"] == 8 and identity["max_tokens"] == 12
    assert identity["dtype"] == "float32" and len(identity["folder_sha256"]) == 64
    (tiny_captioner / ".cache" / "huggingface").mkdir(parents=True)  # what a hub download into a folder leaves
    (tiny_captioner / ".cache" / "huggingface" / "model.safetensors.lock").write_text("")
    assert folder_sha256(tiny_captioner) == identity["folder_sha256"]
    (tiny_captioner / "notes.txt").write_text("changed")
    try:
        assert VideoCaptioner(CaptionConfig(model=str(tiny_captioner))).identity()["folder_sha256"] != identity["folder_sha256"]
    finally:
        (tiny_captioner / "notes.txt").unlink()
        shutil.rmtree(tiny_captioner / ".cache")


def test_fyp_train_make_tiny_captioner_writes_a_loadable_folder(tmp_path):
    fyp = Path(sys.executable).parent / "fyp-train"
    proc = subprocess.run([str(fyp), "make-tiny-captioner", str(tmp_path / "cap")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"tiny captioner written to {tmp_path / 'cap'}" in proc.stdout
    result = VideoCaptioner(CaptionConfig(model=str(tmp_path / "cap"), max_tokens=4)).caption([clip_of("bikes.mp4", 0.0, 1.0, k=4)])
    assert result[0].error == "" and result[0].caption


def test_a_qwen25_vl_model_captions_through_the_same_code_with_the_clips_timing(tmp_path):
    """The other family the docs name: Qwen2.5-VL reads how far apart the frames are (its temporal position encoding)
    from the clip's frame count, rate and the chosen indices."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    captioner = VideoCaptioner(CaptionConfig(model=str(make_tiny_qwen_captioner(tmp_path / "qwen")), max_tokens=8, batch_size=2))
    assert isinstance(captioner.processor, Qwen2_5_VLProcessor) and isinstance(captioner.model, Qwen2_5_VLForConditionalGeneration)
    assert captioner.prompt_text.startswith("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe this video")
    frames, fps = decoded("bikes.mp4", 0.0, 2.0)  # 50 frames at 25 fps
    indices = spread_indices(len(frames), 8)
    clip = ClipFrames(np.stack([frames[i] for i in indices]), indices, fps, 2.0, len(frames))
    inputs = captioner.inputs([clip])
    # 8 of 50 frames over 2 s: 4 frames a second, so each group of 2 frames (the temporal patch) spans 0.5 s
    assert inputs["second_per_grid_ts"].tolist() == [0.5] and inputs["video_grid_thw"][0, 0].item() == 4
    short = ClipFrames(clip.frames[:4], indices[:4], fps, 2.0, len(frames))
    results = captioner.caption([clip, clip, short])
    assert all(r.caption and not r.error for r in results) and results[0].caption == results[1].caption
    assert [r.caption for r in results] == [captioner.caption([c])[0].caption for c in (clip, clip, short)]

