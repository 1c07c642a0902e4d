"""A tiny, randomly initialised SmolVLM2-family video captioner, for ``index-hdvila --caption-model`` offline.

It is the default captioner's family (``HuggingFaceTB/SmolVLM2-2.2B-Instruct``): a ``SmolVLMForConditionalGeneration``
(a SigLIP-style vision tower, pixel-shuffle connector, Llama text model) and transformers' own ``SmolVLMProcessor``
with its image and video processors, its special tokens and its video chat template, saved so that
``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` load it like the real one. Only the vocabulary
differs: SmolLM2's 49,152-token BPE cannot be built offline, so the tokenizer is a byte-level BPE of the same kind
with 1,024 tokens learnt (deterministically) from the words of the CLIP vocabulary that ships in ``open_clip_torch``.
Its captions are random words: plumbing, not descriptions. :func:`make_tiny_qwen_captioner` writes the same for the
other family ``--caption-model`` takes, Qwen2.5-VL (its processor classes, special tokens and a Qwen chat template).
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.nets.tiny_base import clip_bpe_vocab_and_merges

#: The special tokens of SmolVLM2's tokenizer that its processor and chat template use.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
                  "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]  # fmt: skip
VOCAB_SIZE = 1024


def make_captioner_tokenizer(vocab_size: int = VOCAB_SIZE, special_tokens: list[str] = SPECIAL_TOKENS, **roles):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with a family's special tokens (SmolVLM2's by default), learnt from
    CLIP's vocabulary words; ``roles`` (``eos_token=...``) replace SmolVLM2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    vocab, _merges = clip_bpe_vocab_and_merges()
    # the merged tokens after the 512 byte characters, as words; those of non-ASCII bytes are left out
    words = [word for token in list(vocab)[512:20000] if (word := token.removesuffix("</w>")).isascii()]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator([" ".join(words[i : i + 50]) for i in range(0, len(words), 50)], trainer)
    if not roles:
        roles = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
                 "extra_special_tokens": {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                                          "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"}}  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", unk_token="<|endoftext|>", padding_side="left", **roles)


def make_tiny_captioner(out_dir: str | Path, *, seed: int = 0, image_size: int = 64, patch_size: int = 16, hidden_size: int = 32) -> Path:
    """Write a tiny random SmolVLM2-family model + processor to ``out_dir`` (``from_pretrained`` loads it)."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_captioner_tokenizer()
    scale_factor = 2
    size = {"longest_edge": image_size}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=size, max_image_size=size, do_image_splitting=False),
        video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        tokenizer=tokenizer, image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2, chat_template=DEFAULT_CHAT_TEMPLATE,
    )  # fmt: skip
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    config = SmolVLMConfig(
        vision_config={"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": image_size, "patch_size": patch_size},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096, **ids},
        scale_factor=scale_factor, image_token_id=tokenizer.convert_tokens_to_ids("<image>"), **ids,
    )  # fmt: skip
    return save_random_model(SmolVLMForConditionalGeneration, config, processor, ids, seed=seed, out=out)


#: Qwen2.5-VL's special tokens that its processor and chat template use, and its chat template (the official one
#: without the system turn and tool calls: what a captioning prompt needs).
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_qwen_captioner(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 32) -> Path:
    """Write a tiny random Qwen2.5-VL (the other family ``--caption-model`` names) with transformers' own Qwen2.5-VL
    processor and its image and video processors, the family's special tokens and a Qwen chat template."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,  # fmt: skip
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_captioner_tokenizer(special_tokens=QWEN_SPECIAL_TOKENS, eos_token="<|im_end|>")
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16}  # a few 28-pixel cells per frame
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=pixels), video_processor=Qwen2VLVideoProcessor(size=pixels),
                                    tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE)  # fmt: skip
    token = tokenizer.convert_tokens_to_ids
    ids = {"eos_token_id": token("<|im_end|>"), "pad_token_id": token("<|endoftext|>")}
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 1, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_heads": 2, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": hidden_size, "window_size": 56,
                       "fullatt_block_indexes": [0]},
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096, "bos_token_id": None,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}, **ids},
        image_token_id=token("<|image_pad|>"), video_token_id=token("<|video_pad|>"), vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )  # fmt: skip
    return save_random_model(Qwen2_5_VLForConditionalGeneration, config, processor, ids, seed=seed, out=out)


def save_random_model(model_class, config, processor, ids: dict, *, seed: int, out: Path) -> Path:
    """``model_class(config)`` with weights drawn from ``seed``, greedy by default, saved with ``processor`` to ``out``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config.update(**ids, do_sample=False)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
