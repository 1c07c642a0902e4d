"""The tiny SD-1.x model writer and the frozen base-model loader, on the real diffusers/transformers code."""

from __future__ import annotations

import json
import shutil
import time

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from model.nets.base_model import _is_local, encode_images, encode_prompts, load_base_model
from model.nets.tiny_base import CLIP_VOCAB_SIZE, make_clip_tokenizer, make_tiny_base

SENTENCES = [
    "a photo of a person doing yoga",
    "Iron Man is surfing on the sea, 4K, high quality!!",
    "A woman in a red dress dances   in Café Zürich at 5pm; it's raining.",
    "an astronaut's dog wasn't jumping over 1234 hurdles (CGI)",
    " ".join(["skateboarder doing a kickflip"] * 30),  # longer than 77 tokens: truncated
]
YOGA_IDS = [49406, 320, 1125, 539, 320, 2533, 1960, 5523, 49407]
WEIGHT_FILES = [
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("tiny") / "sd", seed=0)


@pytest.fixture(scope="module")
def base(tiny_dir):
    return load_base_model(str(tiny_dir))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids


def _assert_matches_open_clip(tokenizer, text: str) -> None:
    ours = _ids(tokenizer, text)
    ref = open_clip.tokenize([text])[0].tolist()  # pads with 0; SD 1.x's tokenizer pads with <|endoftext|>
    n = sum(1 for t in ref if t != 0)
    assert len(ours) == len(ref) == 77
    assert ours[:n] == ref[:n], text
    assert ours[n - 1] == 49407 and ours[n:] == [49407] * (77 - n)


def test_tokenizer_matches_open_clip_on_real_sentences():
    tok = make_clip_tokenizer()
    assert len(tok) == CLIP_VOCAB_SIZE and tok.model_max_length == 77
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert _ids(tok, SENTENCES[0])[:9] == YOGA_IDS
    for text in SENTENCES:
        _assert_matches_open_clip(tok, text)
    long_ids = _ids(tok, SENTENCES[-1])
    assert long_ids[0] == 49406 and long_ids[-1] == 49407 and 49407 not in long_ids[1:-1]  # truncated, EOS kept


def test_tokenizer_round_trips_through_save_and_load(tiny_dir, tmp_path):
    from transformers import CLIPTokenizer

    folder = tiny_dir / "tokenizer"
    # SD 1.x's own tokenizer layout: the classic vocab/merges pair, no tokenizer.json.
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "tokenizer.json").exists()
    assert len(json.loads((folder / "vocab.json").read_text(encoding="utf-8"))) == CLIP_VOCAB_SIZE
    loaded = CLIPTokenizer.from_pretrained(tiny_dir, subfolder="tokenizer")
    loaded.save_pretrained(tmp_path / "again")
    again = CLIPTokenizer.from_pretrained(tmp_path / "again")
    fresh = make_clip_tokenizer()
    for tok in (loaded, again):
        assert len(tok) == CLIP_VOCAB_SIZE and tok.model_max_length == 77
        for text in SENTENCES:
            assert _ids(tok, text) == _ids(fresh, text)
    _assert_matches_open_clip(again, SENTENCES[2])


def test_make_tiny_base_is_deterministic_small_and_fast(tiny_dir, tmp_path):
    rng_before = torch.random.get_rng_state()
    start = time.perf_counter()
    same = make_tiny_base(tmp_path / "same", seed=0)
    elapsed = time.perf_counter() - start
    other = make_tiny_base(tmp_path / "other", seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert elapsed < 5.0
    for name in WEIGHT_FILES:
        a, b, c = (load_file(d / name) for d in (tiny_dir, same, other))
        assert a.keys() == b.keys() == c.keys() and len(a) > 10
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert any(not torch.equal(a[k], c[k]) for k in a)
    for sub in ("unet", "vae", "text_encoder", "scheduler", "tokenizer"):
        assert (tiny_dir / sub).is_dir()
    size = sum(p.stat().st_size for p in tiny_dir.rglob("*") if p.is_file())
    assert size < 12 * 2**20, size  # 6.3 MB of it is the 49408 x 32 float32 token embedding
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["unet"] == ["diffusers", "UNet2DConditionModel"]


def test_load_base_model_gives_frozen_sd1_layout(base):
    modules = {"unet": base.unet, "vae": base.vae, "text_encoder": base.text_encoder}
    for name, module in modules.items():
        params = list(module.parameters())
        assert params and not any(p.requires_grad for p in params), name
        assert not module.training and not any(m.training for m in module.modules()), name
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params), name
    unet, vae, te = base.unet.config, base.vae.config, base.text_encoder.config
    assert list(unet.down_block_types) == ["CrossAttnDownBlock2D", "DownBlock2D"]
    assert list(unet.up_block_types) == ["UpBlock2D", "CrossAttnUpBlock2D"]
    assert (unet.in_channels, unet.out_channels, unet.sample_size, unet.cross_attention_dim) == (4, 4, 32, 32)
    assert 2 ** (len(vae.block_out_channels) - 1) == 8 and vae.latent_channels == 4 and vae.scaling_factor == 0.18215
    assert (te.vocab_size, te.max_position_embeddings, te.hidden_size, te.num_hidden_layers) == (49408, 77, 32, 2)
    sched = base.noise_scheduler
    assert type(sched).__name__ == "DDPMScheduler"
    assert (sched.config.beta_schedule, sched.config.num_train_timesteps, sched.config.prediction_type) == (
        "scaled_linear",
        1000,
        "epsilon",
    )
    assert sched.betas[0].item() == pytest.approx(0.00085) and sched.betas[-1].item() == pytest.approx(0.012)
    assert _ids(base.tokenizer, SENTENCES[0])[:9] == YOGA_IDS
    assert base.device.type == "cpu" and base.dtype == torch.float32


def test_load_base_model_casts_dtype(tiny_dir):
    half = load_base_model(tiny_dir, dtype=torch.bfloat16)
    for module in (half.unet, half.vae, half.text_encoder):
        assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in module.parameters())


def test_stable_diffusion_pipeline_loads_and_generates(tmp_path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    folder = make_tiny_base(tmp_path / "sd4", sample_size=4)  # latents 4x4 -> 32x32 images
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.vae_scale_factor == 8
    out = pipe(
        ["a photo of a person doing yoga"],
        num_inference_steps=1,
        guidance_scale=7.5,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    image = out.images
    assert image.shape == (1, 32, 32, 3)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0


def test_missing_folders_are_named(tiny_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_base_model(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_base_model("./no/such/sd-folder")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    shutil.rmtree(broken / "vae")
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(FileNotFoundError, match="vae, scheduler"):
        load_base_model(broken)
    # Hub ids are not mistaken for local folders (and vice versa).
    assert not _is_local("CompVis/stable-diffusion-v1-4") and not _is_local("runwayml/stable-diffusion-v1-5")
    assert _is_local("/data/sd") and _is_local("a/b/c") and _is_local("~/sd") and _is_local(str(tiny_dir))


def test_encode_prompts_shapes_and_padding(base):
    emb = encode_prompts(base, ["a photo of a person doing yoga", "a dancer", "a photo of a person doing yoga"])
    assert emb.shape == (3, 77, 32) and emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.equal(emb[0], emb[2]) and not torch.allclose(emb[0], emb[1])
    # Same first token (BOS), same position: causal attention makes position 0 identical across prompts.
    assert torch.allclose(emb[0, 0], emb[1, 0], atol=1e-6)
    with pytest.raises(ValueError, match="list of strings"):
        encode_prompts(base, "a bare string")


def test_encode_images_scales_latents(base):
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    lat = encode_images(base, images, generator=torch.Generator().manual_seed(0))
    assert lat.shape == (2, 4, 8, 6) and not lat.requires_grad
    again = encode_images(base, images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lat, again)
    with torch.no_grad():
        raw = base.vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lat, raw * 0.18215)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        encode_images(base, images * 127.5 + 127.5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encode_images(base, images[0])


def test_make_tiny_base_rejects_non_sd_shapes(tmp_path):
    with pytest.raises(ValueError, match="downscales by 8"):
        make_tiny_base(tmp_path / "a", vae_block_out_channels=(8, 8, 16))
    with pytest.raises(ValueError, match="not divisible by attention_head_dim=8"):
        make_tiny_base(tmp_path / "b", block_out_channels=(32, 36))
    with pytest.raises(ValueError, match="at least 2 blocks"):
        make_tiny_base(tmp_path / "c", block_out_channels=(32,))
    with pytest.raises(ValueError, match="text_heads=3"):
        make_tiny_base(tmp_path / "d", text_heads=3)
    assert not any(tmp_path.iterdir())  # nothing written before the check
