"""Captions for video clips from a transformers vision-language model: the captioning step of ``index-hdvila``.

HD-VILA-100M's public metadata has no captions, so stage 2 would train unconditioned. A video VLM describes each clip
from a few of its frames instead. :class:`VideoCaptioner` loads any transformers-native video-capable VLM through
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` (a hub id, or a local folder: then nothing is
fetched), gives it a clip's frames as one video with their timestamps and a fixed instruction, and decodes greedily,
so a caption is reproducible. It runs on batches of clips; a batch that fails gives its clips an empty caption and
the reason, never an exception. The frames are the ones the indexer already decoded for the clip
(:func:`spread_indices` picks them): nothing is decoded twice.

The default model is SmolVLM2 2.2B Instruct: trained on video, 2.2B parameters (about 5 GB in bf16, so it fits a
24 GB GPU with room for batches), and Apache-2.0, so the captions it writes carry no licence of their own. Qwen2.5-VL
(3B) describes video at least as well but its 3B model is under a research-only licence; it, or any other model of
these families, can be given as ``model``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pose_data.files.hub_revision import hub_revision
from pose_data.hdvila.caption_frames import ClipFrames
from pose_data.quiet import is_verbose, quiet_libraries

log = logging.getLogger(__name__)

DEFAULT_CAPTION_MODEL = "HuggingFaceTB/SmolVLM2-2.2B-Instruct"
DEFAULT_CAPTION_PROMPT = ("Describe this video in one sentence: the people in it, what they are doing, the scene, and how "
                          "the camera moves.")  # fmt: skip
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class CaptionConfig:
    """How clips are captioned (plain values: embedded in the indexer's YAML and manifest).

    model: hub id or local folder of the VLM; None: no captioning.
    prompt: the instruction the model gets with every clip.
    frames: frames per clip the model sees, spread evenly over the clip's kept frames.
    max_tokens: the most tokens a caption may have (greedy decoding stops there or at the end of the sentence).
    batch_size: clips per ``generate`` call.
    max_side: the frames are scaled down to this longest side before they travel to the captioner (the model's own
        processor resizes them again: SmolVLM2 sees 384-pixel frames).
    device: "auto" (cuda when there is a GPU), "cpu", "cuda", "cuda:1".
    dtype: "auto" (bfloat16 on cuda, float32 on cpu) or a torch dtype name.
    recaption: caption every kept clip, also those that have a caption from the caption CSV.
    workers: captioning actors; None: one per GPU of the Ray cluster, or 1 when it has none.
    worker_cpus / worker_gpus: what one actor holds (worker_gpus None: 1 when the cluster has GPUs, else 0).
    """

    model: str | None = None
    prompt: str = DEFAULT_CAPTION_PROMPT
    frames: int = 8
    max_tokens: int = 77
    batch_size: int = 4
    max_side: int = 448
    device: str = "auto"
    dtype: str = "auto"
    recaption: bool = False
    workers: int | None = None
    worker_cpus: float = 1.0
    worker_gpus: float | None = None

    def validate(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValueError(f"caption.model must be a hub id or a folder, got {self.model!r}")
        if self.recaption and self.model is None:
            raise ValueError("caption.recaption (--recaption) needs caption.model (--caption-model)")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("caption.prompt must be a non-empty instruction")
        checked = [("frames", self.frames, 64), ("max_tokens", self.max_tokens, 1024), ("batch_size", self.batch_size, 1024),
                   ("max_side", self.max_side, 4096), *([("workers", self.workers, 1024)] if self.workers is not None else [])]
        for key, value, top in checked:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"caption.{key} must be an integer from 1 to {top}, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"caption.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for key, value in (("worker_cpus", self.worker_cpus), ("worker_gpus", self.worker_gpus)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1024):
                raise ValueError(f"caption.{key} must be a number from 0 to 1024, got {value!r}")


@dataclass
class CaptionResult:
    caption: str
    error: str = ""  # why there is no caption; empty when captioned


def one_line_error(err: BaseException) -> str:
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}"[:300]


class VideoCaptioner:
    """A loaded VLM and its processor; :meth:`caption` turns clips into captions."""

    def __init__(self, cfg: CaptionConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if cfg.model is None:
            raise ValueError("no caption.model given")
        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if self.device.startswith("cuda") else "float32")
        self.dtype = dtype
        local = Path(cfg.model).is_dir()
        self.processor = AutoProcessor.from_pretrained(cfg.model, local_files_only=local)
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=getattr(torch, dtype), local_files_only=local)
        self.model.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is not None:
            self.tokenizer.padding_side = "left"  # generation continues every prompt of a batch at its end
        conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": cfg.prompt}]}]
        self.prompt_text = self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def identity(self) -> dict:
        """What decides the captions, for the manifest: the model (hub id and revision, or folder and content hash),
        the prompt, frames, max tokens and dtype."""
        model = {"model": self.cfg.model}
        if Path(self.cfg.model).is_dir():
            model["folder_sha256"] = folder_sha256(Path(self.cfg.model))
        else:
            model["revision"] = hub_revision(self.cfg.model)
        return {**model, "prompt": self.cfg.prompt, "frames": self.cfg.frames, "max_tokens": self.cfg.max_tokens, "dtype": self.dtype}

    def inputs(self, clips: list[ClipFrames]):
        """The processor's tensors for one batch of clips (one video each, with its frames' timestamps)."""
        from transformers.video_utils import VideoMetadata

        metadata = [VideoMetadata(total_num_frames=c.total or len(c.frames), fps=c.fps, duration=c.duration, frames_indices=list(c.indices),
                                  height=c.frames.shape[1], width=c.frames.shape[2]) for c in clips]  # fmt: skip
        videos = [c.frames if c.frames.flags.writeable else c.frames.copy() for c in clips]  # Ray's shared arrays are read-only
        return self.processor(text=[self.prompt_text] * len(clips), videos=videos, video_metadata=metadata,
                              do_sample_frames=False, padding=True, return_tensors="pt")  # fmt: skip

    def caption_batch(self, clips: list[ClipFrames]) -> list[str]:
        """Captions of one batch, greedy; raises whatever the processor or the model raises."""
        import torch

        inputs = self.inputs(clips).to(self.device)
        # the pixels in the model's dtype; other floats (Qwen2.5-VL's seconds per frame group) stay as they are
        floating = {k: v.to(self.model.dtype) for k, v in inputs.items() if k.startswith("pixel_values") and torch.is_floating_point(v)}
        with torch.inference_mode():
            out = self.model.generate(**{**inputs, **floating}, max_new_tokens=self.cfg.max_tokens, do_sample=False)
        texts = self.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [clean_caption(text) for text in texts]

    def caption(self, clips: list[ClipFrames]) -> list[CaptionResult]:
        """One result per clip, in order: batches of ``batch_size``. A batch that runs out of GPU memory is tried again
        one clip at a time; a batch (or clip) that fails otherwise gives each of its clips an empty caption and the
        reason. An error that leaves the GPU unusable (:func:`is_fatal_device_error`) is raised: the process must go."""
        results = []
        for start in range(0, len(clips), self.cfg.batch_size):
            batch = clips[start : start + self.cfg.batch_size]
            one_by_one = False
            try:
                results += [as_result(text) for text in self.caption_batch(batch)]
            except Exception as err:  # noqa: BLE001 - a failed batch becomes rows with the reason, the run goes on
                if is_fatal_device_error(err):
                    raise
                one_by_one = is_out_of_memory(err) and len(batch) > 1
                if not one_by_one:
                    log.warning("captioning %d clip(s) failed: %s", len(batch), one_line_error(err))
                    results += [CaptionResult("", one_line_error(err)) for _ in batch]
            if one_by_one:  # out of the except block: the failed batch's tensors (held by the traceback) are freed first
                free_device_memory()
                results += [self.caption([clip])[0] for clip in batch]
        return results


def as_result(text: str) -> CaptionResult:
    return CaptionResult(text) if text else CaptionResult("", "the model gave an empty caption")


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def is_fatal_device_error(err: BaseException) -> bool:
    """A CUDA error other than running out of memory (an illegal access, a device-side assert): the CUDA context is
    lost and every later call on this process would fail too."""
    return not is_out_of_memory(err) and ("CUDA error" in str(err) or "CUBLAS_STATUS" in str(err) or "device-side assert" in str(err))


def free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def clean_caption(text: str) -> str:
    """One line of printable text: control characters and U+FFFD (a character cut off at the token limit) become
    spaces, runs of whitespace one space."""
    return " ".join("".join(ch if ch.isprintable() and ch != "\ufffd" else " " for ch in text).split())


def folder_sha256(folder: Path) -> str:
    """SHA-256 over the relative paths and contents of the files below ``folder`` (in sorted order), leaving out
    hidden ones (``.cache/`` of a hub download, ``.git/``, lock files): what ``from_pretrained`` reads."""
    digest = hashlib.sha256()
    files = [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    for path in sorted(files):
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class CaptionerLoadError(RuntimeError):
    """The captioning model could not be loaded; the message is one line naming the model and the cause."""


class CaptionBatchRunner:
    """The captioning step as a plain class (a Ray actor wraps it unchanged): the model is loaded once; a load
    failure is kept and raised by :meth:`ready` (and by every call), as one line instead of a worker crash."""

    def __init__(self, cfg: CaptionConfig, num_threads: int | None = None, exit_on_fatal: bool = False):
        self.exit_on_fatal = exit_on_fatal  # as a Ray actor: a lost GPU ends the process, Ray restarts it and retries
        quiet_libraries(is_verbose())  # a Ray worker: the driver's --verbose choice arrives in the environment
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.captioner: VideoCaptioner | None = None
        self.error: CaptionerLoadError | None = None
        self.clips, self.busy_s, self.first_start, self.last_end = 0, 0.0, None, None
        try:
            self.captioner = VideoCaptioner(cfg)
        except Exception as err:  # noqa: BLE001 - any cause becomes the one line ready() raises
            self.error = CaptionerLoadError(f"the captioning model {cfg.model!r} could not be loaded: {one_line_error(err)}")

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def identity(self) -> dict:
        self.ready()
        return self.captioner.identity()

    def caption(self, clips: list[ClipFrames], start: int, stop: int) -> list[CaptionResult]:
        """Captions of ``clips[start:stop]`` (a shard's clips travel once; each batch names its slice)."""
        if self.error is not None and self.exit_on_fatal:  # restarted and the model would not load again: go, again
            log.error("%s: ending this captioning worker", self.error)
            os._exit(1)
        self.ready()
        began = time.time()
        try:
            results = self.captioner.caption(clips[start:stop])
        except Exception as err:
            if self.exit_on_fatal and is_fatal_device_error(err):
                log.error("the GPU is unusable (%s): ending this captioning worker so that it is restarted", one_line_error(err))
                os._exit(1)
            raise
        self.clips += stop - start
        self.busy_s += time.time() - began
        self.first_start = began if self.first_start is None else self.first_start
        self.last_end = time.time()
        return results

    def timing(self) -> dict:
        """Clips captioned, seconds spent captioning, and when the first batch began and the last ended (epoch s)."""
        return {"clips": self.clips, "busy_s": self.busy_s, "first_start": self.first_start, "last_end": self.last_end}
