"""CLIP score and frame consistency of a video, from a transformers ``CLIPModel``.

- **CLIP score** (text alignment): the cosine similarity of the prompt's CLIP text embedding and each frame's
  CLIP image embedding, per frame, averaged over the frames of a video. Reported as ``100 * cosine`` (range
  -100..100; real videos score about 20-35), the scale the Follow-Your-Pose paper's table uses, as do the
  text-to-video papers it compares with (Tune-A-Video, and CLIPScore without its 2.5 weight and clipping).
- **Frame consistency**: the mean cosine similarity of the CLIP image embeddings of consecutive frames,
  also reported as ``100 * cosine`` (a percentage: identical frames give exactly 100).

Cosines are computed in float64 from the model's embeddings as ``a.b / sqrt((a.a)(b.b))``, so a frame compared
with itself gives exactly 1.0, and means are exact sums (:func:`math.fsum`); frames are embedded in an order of
their own (:meth:`ClipEmbedder.image_embeddings`), so no figure depends on the order of the frames, to the last bit.
A video is embedded as it is decoded (:class:`ImageEmbeddingStream`: each frame made the model's small input at once,
a batch of those held); for a video of at most a batch of distinct frames that is the same to the last bit, for a
longer one the batches follow the video's order, which can move the figures in their last bits (about 1e-6).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

#: Scores are stored as this many times the cosine (module doc).
SCALE = 100.0
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


class ClipModelLoadError(RuntimeError):
    """The CLIP model or its processor could not be loaded; the message is one line naming it and the way out."""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (n, d) ``a`` and (n, d) or (d,) ``b``, float64, clipped to [-1, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), a.shape)
    dot = np.einsum("nd,nd->n", a, b)
    norms = np.sqrt(np.einsum("nd,nd->n", a, a) * np.einsum("nd,nd->n", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(norms > 0, dot / norms, 0.0), -1.0, 1.0)


def exact_mean(values) -> float | None:
    """The mean of ``values`` (order-independent, :func:`math.fsum`); None for no values."""
    values = [float(v) for v in values]
    return math.fsum(values) / len(values) if values else None


def frame_clip_cosines(text_embedding: np.ndarray, image_embeddings: np.ndarray) -> np.ndarray:
    """The text-frame cosine of every frame."""
    return cosines(image_embeddings, text_embedding)


def consecutive_cosines(image_embeddings: np.ndarray) -> np.ndarray:
    """Cosine of frames (0, 1), (1, 2), ...: n - 1 values."""
    image_embeddings = np.asarray(image_embeddings)
    return cosines(image_embeddings[:-1], image_embeddings[1:])


def clip_score(text_embedding: np.ndarray, image_embeddings: np.ndarray) -> float | None:
    """``100 *`` the mean text-frame cosine of a video (module doc)."""
    mean = exact_mean(frame_clip_cosines(text_embedding, image_embeddings))
    return None if mean is None else SCALE * mean


def frame_consistency(image_embeddings: np.ndarray) -> float | None:
    """``100 *`` the mean cosine of consecutive frames; None for a video of one frame."""
    mean = exact_mean(consecutive_cosines(image_embeddings))
    return None if mean is None else SCALE * mean


class ClipEmbedder:
    """A ``CLIPModel`` and its processor: prompts and RGB frames to embeddings (float32 numpy)."""

    def __init__(self, model, processor, *, device: str = "cpu", source: str = "") -> None:
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = device
        self.source = source

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu") -> ClipEmbedder:
        """Load a hub id or a local folder holding a ``CLIPModel`` and its processor files (tokenizer and image
        processor); :class:`ClipModelLoadError` in one line when either cannot be loaded."""
        from transformers import CLIPModel, CLIPProcessor

        local = Path(os.path.expanduser(name_or_path))
        if local.exists() and not (local / "config.json").is_file():
            raise ClipModelLoadError(f"--clip-model {name_or_path}: the folder has no config.json; it must hold a transformers CLIPModel "
                                     "and its processor (save_pretrained of both)")  # fmt: skip
        source = str(local) if local.exists() else name_or_path
        try:
            model = CLIPModel.from_pretrained(source)
            processor = CLIPProcessor.from_pretrained(source)
        except Exception as err:  # noqa: BLE001 - a hub error, a missing file, a wrong model type: one line each
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            where = "a local folder" if local.exists() else "a hub id (downloading needs internet the first time)"
            raise ClipModelLoadError(
                f"the CLIP model {name_or_path} ({where}) could not be loaded: {type(err).__name__}: {first[:300]}; "
                "pass --clip-model DIR, a folder with a transformers CLIPModel and its processor files"
            ) from err
        return cls(model, processor, device=device, source=source)

    def text_embedding(self, prompt: str) -> np.ndarray:
        """(d,) embedding of ``prompt`` (truncated to CLIP's 77 tokens)."""
        import torch

        tokens = self.processor.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.get_text_features(**tokens)
        return _features(out)[0]

    def image_embeddings(self, frames: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """(n, d) embeddings of RGB uint8 (height, width, 3) frames. Each distinct frame is embedded once, and the
        distinct frames go to the model ``batch_size`` at a time in the order of their content hashes, so the
        batches, and so every bit of the result, do not depend on the frames' order (a batched model can differ in
        the last bits between batch compositions)."""
        by_key: dict[bytes, np.ndarray] = {}
        keys = []
        for frame in frames:
            frame = np.ascontiguousarray(frame)
            key = frame_key(frame)
            by_key.setdefault(key, frame)
            keys.append(key)
        order = sorted(by_key)
        chunks = [self.embed_batch([by_key[key] for key in order[start : start + batch_size]]) for start in range(0, len(order), batch_size)]
        if not chunks:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        row_of = {key: i for i, key in enumerate(order)}
        return np.concatenate(chunks)[[row_of[key] for key in keys]]

    def embed_batch(self, frames: list[np.ndarray]) -> np.ndarray:
        """(n, d) embeddings of these frames, in one model call."""
        return self.embed_pixels(self.pixel_values(frames))

    def pixel_values(self, frames: list[np.ndarray]):
        """The model's input for these frames: (n, 3, s, s) float tensor (resized, cropped, normalised; each frame on
        its own, so one frame at a time gives the same values)."""
        # channels_last stated: a 1- or 3-pixel-tall frame would otherwise be read as channels-first
        return self.processor.image_processor(images=frames, return_tensors="pt", input_data_format="channels_last")["pixel_values"]

    def embed_pixels(self, pixels) -> np.ndarray:
        """(n, d) embeddings of :meth:`pixel_values`' output, in one model call."""
        import torch

        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return _features(out)


def frame_key(frame: np.ndarray) -> bytes:
    """A frame's content hash (its pixels and shape): equal frames, one key."""
    return hashlib.blake2b(frame.tobytes(), digest_size=16, person=str(frame.shape).encode()[:16]).digest()


class ImageEmbeddingStream:
    """The embeddings of a video's frames handed in one at a time (:meth:`add`), holding no frame: each distinct
    frame is made the model's input at once (:meth:`ClipEmbedder.pixel_values`, 3 x 224 x 224 for CLIP, whatever the
    frame's size) and embedded once, ``batch_size`` distinct frames per model call, each call's frames in the order
    of their content hashes. :meth:`result` gives what :meth:`ClipEmbedder.image_embeddings` gives for the whole
    list: the very same for at most ``batch_size`` distinct frames, else the same but for the last bits (the batches
    follow the frames' order)."""

    def __init__(self, embedder: ClipEmbedder, batch_size: int) -> None:
        self.embedder, self.batch_size = embedder, batch_size
        self.pending: dict = {}  # key -> model input (3, s, s) of the distinct frames not embedded yet
        self.row_of: dict[bytes, int] = {}  # key -> its row in the embedded chunks
        self.chunks: list[np.ndarray] = []
        self.keys: list[bytes] = []  # one per frame added

    def add(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame)
        key = frame_key(frame)
        self.keys.append(key)
        if key not in self.row_of and key not in self.pending:
            self.pending[key] = self.embedder.pixel_values([frame])[0]
            if len(self.pending) >= self.batch_size:
                self._embed_pending()

    def _embed_pending(self) -> None:
        import torch

        if not self.pending:
            return
        order = sorted(self.pending)
        embedded = len(self.row_of)
        self.chunks.append(self.embedder.embed_pixels(torch.stack([self.pending[key] for key in order])))
        self.row_of.update((key, embedded + i) for i, key in enumerate(order))
        self.pending = {}

    def result(self) -> np.ndarray:
        """(n, d): the embedding of every frame added, in order."""
        self._embed_pending()
        if not self.chunks:
            return np.zeros((0, self.embedder.model.config.projection_dim), np.float32)
        return np.concatenate(self.chunks)[[self.row_of[key] for key in self.keys]]


def _features(out) -> np.ndarray:
    """transformers 4 returns the projected features, 5 an output whose ``pooler_output`` holds them."""
    import torch

    tensor = out if isinstance(out, torch.Tensor) else out.pooler_output
    return tensor.float().cpu().numpy()
