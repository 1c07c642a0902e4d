"""A tiny, randomly initialised Stable Diffusion 1.x base model in diffusers layout.

No SD or CLIP weights can be downloaded where this project is developed and tested, so tests and
smoke runs use a model with SD 1.x's *structure* (every part, file and config key the real loading
code reads) but a few hundred thousand random parameters.  The folder it writes is loaded by
:func:`model.nets.base_model.load_base_model` and by ``diffusers.StableDiffusionPipeline.from_pretrained``
exactly like ``CompVis/stable-diffusion-v1-4``:

    out_dir/
      model_index.json
      unet/          UNet2DConditionModel  (CrossAttnDown.. + DownBlock2D, UpBlock2D + ..CrossAttnUp)
      vae/           AutoencoderKL         (4 blocks: downscale 8, latent_channels 4, scaling 0.18215)
      text_encoder/  CLIPTextModel         (vocab 49408, 77 positions, hidden = cross_attention_dim)
      tokenizer/     CLIPTokenizer         (the REAL CLIP BPE vocabulary: token ids match SD's)
      scheduler/     DDPMScheduler         (SD's betas: scaled_linear 0.00085 -> 0.012, 1000 steps)

Only the tokenizer is real: it is built from the BPE merges that ship inside ``open_clip_torch``
(``open_clip/bpe_simple_vocab_16e6.txt.gz``), so prompts tokenize to the same ids as with SD 1.x.

Run ``fyp-train make-tiny-base DIR`` to write one.
"""

from __future__ import annotations

import gzip
import importlib.resources
import json
import math
from pathlib import Path

import torch

# The CLIP BPE file: line 0 is a "#version" header; SD/CLIP use the first 49152 - 256 - 2 merges.
_BPE_PACKAGE, _BPE_FILE = "open_clip", "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2  # = 48894; lines [1 : 48895] of the file
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 bytes+"</w>" + 48894 merges + 2 special tokens
CLIP_MAX_LENGTH = 77

# SD 1.x's noise schedule (the `scheduler/` config of CompVis/stable-diffusion-v1-4, as a DDPM).
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}
SD_VAE_SCALING_FACTOR = 0.18215


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-character table (256 entries, in CLIP's vocab order).

    Printable Latin-1 bytes map to themselves; the remaining bytes (controls, space, ...) are
    shifted to code points 256, 257, ... so every byte has a visible, whitespace-free character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    order = printable + [b for b in range(256) if b not in printable]
    return {b: table[b] for b in order}


def clip_bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP tokenizer's ``vocab`` (49,408 token -> id) and ``merges`` (48,894 pairs, by rank).

    Read from the BPE file that ships in ``open_clip_torch``; the id order is CLIP's own: the 256
    byte characters, the same with ``</w>``, one token per merge, then ``<|startoftext|>`` (49406)
    and ``<|endoftext|>`` (49407).
    """
    try:
        bpe = importlib.resources.files(_BPE_PACKAGE) / _BPE_FILE
        lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"the CLIP BPE vocabulary {_BPE_PACKAGE}/{_BPE_FILE} was not found: install open_clip_torch"
        ) from err
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    if len(merges) != _N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{_BPE_FILE}: expected {_N_MERGES} merge pairs after the header, got a different file")
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"CLIP vocabulary has {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def make_clip_tokenizer(vocab_and_merges: tuple[dict[str, int], list[tuple[str, str]]] | None = None):
    """A ``transformers.CLIPTokenizer`` equal to SD 1.x's (``openai/clip-vit-large-patch14``'s).

    Pads with ``<|endoftext|>`` (49407) like SD 1.x; ``model_max_length`` 77.  ``vocab_and_merges``
    defaults to :func:`clip_bpe_vocab_and_merges`.
    transformers 5 takes ``vocab=`` (a dict) and ``merges=`` (a list of *pairs*): ``vocab_file=``
    is silently ignored there and a list of "a b" strings is rejected by tokenizers 0.23.
    """
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges or clip_bpe_vocab_and_merges()
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=CLIP_MAX_LENGTH,
    )


def _save_tokenizer(folder: Path) -> None:
    """Save the tokenizer as SD 1.x's ``tokenizer/`` folder holds it: ``vocab.json`` + ``merges.txt``.

    transformers 5 always adds a ``tokenizer.json`` (3.6 MB here); SD 1.x checkpoints have none and
    transformers rebuilds the same tokenizer from the two classic files in well under a second, so
    dropping it keeps the tiny model small and exercises the loading path real checkpoints take.
    """
    vocab, merges = clip_bpe_vocab_and_merges()
    make_clip_tokenizer((vocab, merges)).save_pretrained(folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")


def _check_sizes(
    sample_size: int,
    block_out_channels: tuple[int, ...],
    cross_attention_dim: int,
    attention_head_dim: int,
    vae_block_out_channels: tuple[int, ...],
    text_heads: int,
) -> None:
    if len(block_out_channels) < 2:
        raise ValueError(
            f"block_out_channels={block_out_channels}: need at least 2 blocks (cross-attention ones + a plain last one)"
        )
    if sample_size < 2 ** (len(block_out_channels) - 1):
        raise ValueError(f"sample_size={sample_size} is smaller than the UNet's downscale 2**{len(block_out_channels) - 1}")
    bad = [c for c in block_out_channels if c % attention_head_dim]
    if bad:
        raise ValueError(
            f"block_out_channels {bad} are not divisible by attention_head_dim={attention_head_dim} (SD's number of heads)"
        )
    if cross_attention_dim % text_heads:
        raise ValueError(
            f"cross_attention_dim={cross_attention_dim} (the text hidden size) is not divisible by text_heads={text_heads}"
        )
    if 2 ** (len(vae_block_out_channels) - 1) != 8:
        raise ValueError(
            f"vae_block_out_channels={vae_block_out_channels}: SD's VAE downscales by 8, which needs exactly 4 blocks"
        )


def make_tiny_base(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sample_size: int = 32,
    block_out_channels: tuple[int, ...] = (32, 64),
    cross_attention_dim: int = 32,
    attention_head_dim: int = 8,
    layers_per_block: int = 1,
    vae_block_out_channels: tuple[int, ...] = (8, 8, 16, 16),
    text_layers: int = 2,
    text_heads: int = 4,
) -> Path:
    """Write a tiny random SD-1.x-layout model to ``out_dir`` and return its path.

    ``sample_size`` is the UNet's *latent* size (images are 8x larger); ``attention_head_dim`` is
    SD's config value, which diffusers uses as the number of heads.  The text encoder's hidden size
    is ``cross_attention_dim``.  The same seed gives bit-identical weights; torch's global RNG state
    is left untouched.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    block_out_channels, vae_block_out_channels = tuple(block_out_channels), tuple(vae_block_out_channels)
    _check_sizes(sample_size, block_out_channels, cross_attention_dim, attention_head_dim, vae_block_out_channels, text_heads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            # SD's layout: cross-attention in every block but the deepest down / first up block.
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            cross_attention_dim=cross_attention_dim,
            norm_num_groups=min(32, math.gcd(*block_out_channels)),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(vae_block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(vae_block_out_channels),
            block_out_channels=vae_block_out_channels,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=min(32, math.gcd(*vae_block_out_channels)),
            sample_size=sample_size * 8,
            scaling_factor=SD_VAE_SCALING_FACTOR,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB_SIZE,
                hidden_size=cross_attention_dim,
                intermediate_size=4 * cross_attention_dim,
                num_hidden_layers=text_layers,
                num_attention_heads=text_heads,
                max_position_embeddings=CLIP_MAX_LENGTH,
                hidden_act="quick_gelu",
                projection_dim=cross_attention_dim,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407,
            )
        )
    unet.save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    text_encoder.save_pretrained(out / "text_encoder")
    _save_tokenizer(out / "tokenizer")
    DDPMScheduler(**SD_SCHEDULER_CONFIG).save_pretrained(out / "scheduler")
    _write_model_index(out)
    return out


def _write_model_index(out: Path) -> None:
    """``model_index.json`` as ``StableDiffusionPipeline.save_pretrained`` writes it (no safety checker)."""
    import diffusers

    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
