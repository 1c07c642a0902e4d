"""The inflated video UNet on the tiny SD base (fp32): exactness against the image model, causality, the maths of
sparse-causal and temporal attention against a reimplementation written here, and checkpoint loading."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from model.nets.pose_encoder import PoseEncoder
from model.nets.pose_unet import PoseGuidedUNet
from model.nets.video_unet import VideoLayersConfig, VideoUNet
from official_release import official_adapter_keys

LATENT = 8  # latents 8x8 -> poses 64x64


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from model.nets.tiny_base import make_tiny_base

    return make_tiny_base(tmp_path_factory.mktemp("base") / "tiny-sd", seed=0)


@pytest.fixture()
def unet(tiny_base):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet").eval()


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.2) -> None:
    """Give every weight of ``module`` (e.g. zero-initialised layers) random non-zero values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _pose_encoder(unet) -> PoseEncoder:
    encoder = PoseEncoder.for_unet(unet)
    _randomize(encoder, seed=5, scale=0.05)  # non-zero residuals: the pose matters
    return encoder.eval()


def _text(b: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.randn(b, 77, 32, generator=torch.Generator().manual_seed(seed))


def _latents(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ["sparse_causal", "first_frame", "full", "none"])
@pytest.mark.parametrize("group_norm", ["per_frame", "across_frames"])
@torch.no_grad()
def test_copies_of_one_frame_give_stage1_output_per_frame(unet, attention, group_norm):
    encoder = _pose_encoder(unet)
    stage1 = PoseGuidedUNet(copy.deepcopy(unet), encoder)
    video = VideoUNet(unet, VideoLayersConfig(attention=attention, group_norm=group_norm, conv_temporal=True), encoder)
    f = 4
    latent, pose = _latents(1), torch.rand(1, 3, 8 * LATENT, 8 * LATENT, generator=torch.Generator().manual_seed(9))
    expected = stage1(latent, 500, _text(), pose=pose)  # (1, 4, h, w)
    out = video(latent.repeat(f, 1, 1, 1), 500, _text(), num_frames=f, pose=pose.unsqueeze(2).repeat(1, 1, f, 1, 1))
    assert out.shape == (f, 4, LATENT, LATENT)
    assert float((expected - stage1(latent, 500, _text(), pose=None)).abs().max()) > 1e-3  # the pose does matter
    for frame in out:
        torch.testing.assert_close(frame, expected[0], atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_no_cross_frame_attention_and_fresh_layers_give_the_2d_model_frame_by_frame(unet):
    plain = copy.deepcopy(unet)
    video = VideoUNet(unet, VideoLayersConfig(attention="none", conv_temporal=True))
    b, f = 2, 3
    latents, text = _latents(b * f), _text(b)
    out = video(latents, torch.tensor([100, 700]), text, num_frames=f)
    expected = plain(latents, torch.tensor([100] * f + [700] * f), text.repeat_interleave(f, dim=0)).sample
    assert torch.equal(out, expected)  # bit for bit: the new layers add exact zeros
    _randomize(video.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn_temp, seed=1)
    assert not torch.allclose(video(latents, torch.tensor([100, 700]), text, num_frames=f), expected)  # the test can fail


def _with_frame_changed(latents: torch.Tensor, j: int) -> torch.Tensor:
    changed = latents.clone()
    changed[j] += torch.randn(changed[j].shape, generator=torch.Generator().manual_seed(11))
    return changed


@torch.no_grad()
def test_sparse_causal_per_frame_never_looks_ahead(unet):
    f, j = 5, 3
    video = VideoUNet(unet, VideoLayersConfig(attention="sparse_causal", group_norm="per_frame", conv_temporal=True))
    latents = _latents(f)
    a = video(latents, 300, _text(), num_frames=f)
    b = video(_with_frame_changed(latents, j), 300, _text(), num_frames=f)
    assert torch.equal(a[:j], b[:j])  # every earlier frame bit-identical
    assert all(not torch.allclose(a[k], b[k]) for k in range(j, f))  # frame j and the ones attending to it change


@pytest.mark.parametrize("config", [dict(attention="full"), dict(attention="sparse_causal", group_norm="across_frames")])
@torch.no_grad()
def test_full_attention_or_pooled_group_norm_do_look_ahead(unet, config):
    f, j = 5, 3
    video = VideoUNet(unet, VideoLayersConfig(**config))
    latents = _latents(f)
    a, b = video(latents, 300, _text(), num_frames=f), video(_with_frame_changed(latents, j), 300, _text(), num_frames=f)
    assert not torch.allclose(a[0], b[0])


# ------------------------------------------------------------------------------ the maths, reimplemented here


def _attend(attn, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax attention of one query sequence (t, c) over one key/value sequence (s, c), by hand."""
    heads = attn.heads
    q, k, v = attn.to_q(q_in), attn.to_k(kv_in), attn.to_v(kv_in)
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        qh, kh, vh = (x[:, h * d : (h + 1) * d] for x in (q, k, v))
        weights = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1)  # (t, s)
        outs.append(weights @ vh)
    return attn.to_out[0](torch.cat(outs, dim=-1))


@pytest.mark.parametrize("f", [1, 2, 5])
@torch.no_grad()
def test_sparse_causal_attention_matches_a_reimplementation(unet, f):
    video = VideoUNet(unet, VideoLayersConfig(attention="sparse_causal"))
    block = video.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    b, t, c = 2, 6, block.norm1.normalized_shape[0]
    x = torch.randn(b * f, t, c, generator=torch.Generator().manual_seed(f))
    video.frames.num_frames = f
    out = block.attn1(x)  # through the processor
    for v in range(b):
        frames = x[v * f : (v + 1) * f]
        for i in range(f):
            keys = torch.cat([frames[0], frames[max(i - 1, 0)]])  # frame 0 and frame i-1 (frame 0: itself twice)
            torch.testing.assert_close(out[v * f + i], _attend(block.attn1, frames[i], keys), atol=1e-5, rtol=1e-5)


def _conv1d_by_hand(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (c_in, f), weight (c_out, c_in, 3), zero padding 1 -> (c_out, f)."""
    f = x.shape[1]
    padded = torch.cat([torch.zeros(x.shape[0], 1), x, torch.zeros(x.shape[0], 1)], dim=1)
    return torch.stack([sum(weight[:, :, k] @ padded[:, i + k] for k in range(3)) for i in range(f)], dim=1)


@pytest.mark.parametrize("f", [1, 2, 5])
@torch.no_grad()
def test_temporal_attention_and_conv_match_a_reimplementation(unet, f):
    block2d = copy.deepcopy(unet.down_blocks[0].attentions[0].transformer_blocks[0])
    video = VideoUNet(unet, VideoLayersConfig(attention="none", conv_temporal=True))
    block = video.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    for name in ("attn_temp", "norm_temp", "conv_temporal"):
        _randomize(getattr(block, name), seed=len(name) + f)
    b, t, c = 2, 6, block.norm1.normalized_shape[0]
    x = torch.randn(b * f, t, c, generator=torch.Generator().manual_seed(10 + f))
    video.frames.num_frames = f
    out = block(x)
    spatial = block2d(x)  # the image block, frame by frame
    for v in range(b):
        for p in range(t):
            seq = spatial[v * f : (v + 1) * f, p]  # (f, c): one position over the frames
            normed = F.layer_norm(seq, (c,), block.norm_temp.weight, block.norm_temp.bias)
            seq = _attend(block.attn_temp, normed, normed) + seq  # self-attention over the frames, residual
            conv = block.conv_temporal
            seq = (_conv1d_by_hand(_conv1d_by_hand(seq.T, conv.down.weight), conv.up.weight) + seq.T).T
            torch.testing.assert_close(out[v * f : (v + 1) * f, p], seq, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------ parameters and processors


def test_trainable_selection_and_added_layer_names(unet):
    video = VideoUNet(unet, VideoLayersConfig(conv_temporal=True))
    chosen = dict(video.select_trainable())
    assert chosen and all(p.requires_grad for p in chosen.values())
    assert {n.split(".")[-3] if ".to_out." in n else n.split(".")[-2] for n in chosen} >= {"to_q", "down", "up"}
    assert all(".attn1.to_q." in n or ".attn2.to_q." in n or ".attn_temp." in n or ".conv_temporal." in n for n in chosen)
    assert not any(".attn1.to_k." in n or ".norm_temp." in n for n in chosen)  # norm_temp stays frozen (official)
    frozen = [n for n, p in video.named_parameters() if not p.requires_grad]
    assert any(n.endswith("attn1.to_k.weight") for n in frozen)
    names = set(video.unet.state_dict())
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_out.0.bias" in names
    assert "down_blocks.0.attentions.0.transformer_blocks.0.norm_temp.weight" in names
    assert "up_blocks.1.attentions.0.transformer_blocks.0.conv_temporal.up.weight" in names
    with pytest.raises(ValueError, match=r"\['attn3'\] match no UNet parameter"):
        video.select_trainable(["attn_temp", "attn3"])


def test_replaced_processors_are_detected(unet):
    video = VideoUNet(unet, VideoLayersConfig())
    video.check_processors()
    from diffusers.models.attention_processor import AttnProcessor2_0

    video.unet.set_attn_processor(AttnProcessor2_0())  # what set_default_attn_processor / xformers switching do
    with pytest.raises(ValueError, match="lost their cross-frame processor"):
        video.check_processors()
    video.restore_processors()
    video.check_processors()
    with pytest.raises(ValueError, match="inflated already"):
        VideoUNet(video.unet, VideoLayersConfig())
    with pytest.raises(ValueError, match="is not one of sparse_causal, first_frame, full, none"):
        VideoLayersConfig(attention="causal").validate()


# ------------------------------------------------------------------------------------------- saving and loading


@torch.no_grad()
def test_official_stage2_checkpoint_loads_by_name(tiny_base, tmp_path):
    from diffusers import UNet2DConditionModel

    from model.nets.video_layers import load_video_unet

    load = lambda: UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet").eval()  # noqa: E731
    released = VideoUNet(load(), VideoLayersConfig.official())
    _randomize(released.unet, seed=21, scale=0.05)  # a "trained" model: every weight differs from the base
    encoder = PoseEncoder.for_unet(released.unet)
    _randomize(encoder.adapter, seed=22, scale=0.05)
    state = dict(released.unet.state_dict())
    state.update({f"skeleton_adapter.{k}": v for k, v in official_adapter_keys(encoder).items()})
    (tmp_path / "unet").mkdir()
    torch.save(state, tmp_path / "unet" / "diffusion_pytorch_model.bin")

    model, pose_encoder = load_video_unet(load(), tmp_path)
    assert model.config == VideoLayersConfig.official() and model.pose_encoder is pose_encoder
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in released.unet.state_dict().items())
    encoder.identity_output_convs()
    pose = torch.rand(1, 3, 3, 8 * LATENT, 8 * LATENT, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(pose_encoder(pose), encoder(pose)))
    released.pose_encoder = encoder
    latents = _latents(3)
    assert torch.equal(model(latents, 10, _text(), 3, pose=pose), released(latents, 10, _text(), 3, pose=pose))

    state["down_blocks.0.attentions.0.transformer_blocks.0.attn_extra.weight"] = torch.zeros(1)
    del state["up_blocks.1.attentions.0.transformer_blocks.0.norm_temp.bias"]
    torch.save(state, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match=r"attn_extra\.weight.*missing \['up_blocks\.1\.attentions\.0\.transformer_blocks\.0\.norm_temp\.bias'\]"):
        load_video_unet(load(), tmp_path / "bad.bin")


@torch.no_grad()
def test_video_layers_round_trip_onto_a_fresh_base(tiny_base, tmp_path):
    from diffusers import UNet2DConditionModel

    from model.nets.video_layers import load_video_unet, read_video_layers_config, save_video_layers

    load = lambda: UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet").eval()  # noqa: E731
    config = VideoLayersConfig(attention="first_frame", group_norm="across_frames", conv_temporal=True, conv_temporal_rank=8)
    trained = VideoUNet(load(), config)
    for name, p in trained.select_trainable():
        p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    save_video_layers(trained, tmp_path / "video_layers", frames={"num_frames": 8, "frame_stride": 4}, base_model=str(tiny_base))
    saved = read_video_layers_config(tmp_path / "video_layers")
    assert saved["video_layers"] == config.to_dict() and saved["frames"]["num_frames"] == 8
    model, _ = load_video_unet(load(), tmp_path / "video_layers")
    latents = _latents(6)
    assert torch.equal(model(latents, 10, _text(2), 3), trained(latents, 10, _text(2), 3))
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "video_layers" / "diffusion_pytorch_model.safetensors"))
    assert all(".attn_temp." in k or ".norm_temp." in k or ".conv_temporal." in k or ".to_q." in k for k in keys)
    assert not any("attn1.to_k" in k or "resnets" in k for k in keys)


def test_default_trainable_set_fits_a_model_without_the_temporal_conv(unet):
    video = VideoUNet(unet, VideoLayersConfig(conv_temporal=False))  # the default config
    names = [n for n, _ in video.select_trainable()]
    assert names and not any("conv_temporal" in n for n in names) and any(".attn_temp." in n for n in names)


@torch.no_grad()
def test_video_layers_missing_an_added_layer_are_refused(tiny_base, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file

    from model.nets.video_layers import load_video_unet, save_video_layers

    load = lambda: UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet").eval()  # noqa: E731
    save_video_layers(VideoUNet(load(), VideoLayersConfig()), tmp_path / "layers")
    weights = tmp_path / "layers" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    dropped = "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_out.0.weight"
    save_file({k: v for k, v in state.items() if k != dropped}, str(weights))
    with pytest.raises(ValueError, match=f"missing \\['{dropped}'\\]"):
        load_video_unet(load(), tmp_path / "layers")
