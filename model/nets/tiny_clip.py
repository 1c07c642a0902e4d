"""A tiny, randomly initialised ``CLIPModel`` with its processor, for ``fyp-eval`` offline.

It has the structure ``openai/clip-vit-large-patch14`` has (text and vision towers, projections, a
``CLIPProcessor`` with the real CLIP BPE tokenizer of :mod:`model.nets.tiny_base` and a CLIP image processor) but a
few hundred thousand random parameters and 32-pixel images, so the real loading and scoring code runs where no
CLIP weights can be downloaded. Its scores are cosines of random features: plumbing, not a measurement.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.nets.tiny_base import CLIP_MAX_LENGTH, CLIP_VOCAB_SIZE, make_clip_tokenizer


def make_tiny_clip(out_dir: str | Path, *, seed: int = 0, image_size: int = 32, hidden_size: int = 32, projection_dim: int = 16) -> Path:
    """Write a tiny random ``CLIPModel`` + ``CLIPProcessor`` to ``out_dir`` (``from_pretrained`` loads it)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = {"vocab_size": CLIP_VOCAB_SIZE, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": CLIP_MAX_LENGTH, "bos_token_id": 49406, "eos_token_id": 49407,
            "pad_token_id": 49407}  # fmt: skip
    vision = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": image_size, "patch_size": image_size // 4}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=image_processor, tokenizer=make_clip_tokenizer()).save_pretrained(out)
    return out
