"""PoseEncoder and PoseGuidedUNet with tiny random models on CPU: identity at init, gradients, pose_scale, frame order,
sizes, and loading T2I-Adapter / official Follow Your Pose weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import T2IAdapter, UNet2DConditionModel

from model.nets.pose_encoder import PoseEncoder, official_to_diffusers_keys
from model.nets.pose_unet import PoseGuidedUNet

OFFICIAL_CHANNELS = (320, 640, 1280, 1280)


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    return model.eval()


def unet_inputs(n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, 4, 8, 8, generator=g)
    timesteps = torch.tensor([10, 500][:n] + [999] * max(0, n - 2))
    text = torch.randn(n, 5, 32, generator=g)
    return latents, timesteps, text


def random_pose(*shape: int, seed: int = 2) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def randomize_(module: torch.nn.Module, seed: int = 3, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


# ------------------------------------------------------------------------------------------- identity and training


def test_fresh_encoder_leaves_the_unet_bit_for_bit_unchanged(unet):
    model = PoseGuidedUNet(unet, PoseEncoder.for_unet(unet))
    latents, t, text = unet_inputs()
    pose = random_pose(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(latents, t, text)
        guided = model(latents, t, text, pose=pose)
        features = model.pose_encoder(pose)
        zero_residuals = [torch.zeros(2, 32, 8, 8), torch.zeros(2, 64, 4, 4)]
        explicit = unet(latents, t, text, down_intrablock_additional_residuals=zero_residuals, return_dict=False)[0]
    assert all(torch.count_nonzero(f) == 0 for f in features)
    assert plain.shape == (2, 4, 8, 8) and plain.abs().sum() > 0
    assert torch.equal(guided, plain)
    assert torch.equal(explicit, plain)
    assert torch.equal(plain, unet(latents, t, text).sample)


def test_first_step_gives_the_zero_convs_gradients_and_none_to_the_frozen_unet(unet):
    unet.requires_grad_(False)  # stays frozen for the rest of this module: the other tests run under no_grad
    encoder = PoseEncoder.for_unet(unet)
    model = PoseGuidedUNet(unet, encoder)
    latents, t, text = unet_inputs()
    target = torch.randn(latents.shape, generator=torch.Generator().manual_seed(7))
    loss = F.mse_loss(model(latents, t, text, pose=random_pose(2, 3, 64, 64)), target)
    loss.backward()
    for conv in encoder.out_convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
        assert conv.bias.grad is not None and conv.bias.grad.abs().sum() > 0
    # The body sits behind zero weights: its gradient is exactly zero on this first step.
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in encoder.adapter.parameters())
    assert all(p.grad is None for p in unet.parameters())

    # One optimiser step on the zero convs makes the pose change the prediction.
    torch.optim.SGD(encoder.parameters(), lr=1.0).step()
    with torch.no_grad():
        assert not torch.equal(model(latents, t, text, pose=random_pose(2, 3, 64, 64)), model(latents, t, text))


def test_residuals_are_added_under_gradient_checkpointing(unet):
    checkpointed = UNet2DConditionModel.from_config(unet.config)
    checkpointed.load_state_dict(unet.state_dict())
    checkpointed.enable_gradient_checkpointing()
    checkpointed.train().requires_grad_(False)
    encoder = randomize_(PoseEncoder.for_unet(unet))
    latents, t, text = unet_inputs()
    pose = random_pose(2, 3, 64, 64)
    out = PoseGuidedUNet(checkpointed, encoder)(latents, t, text, pose=pose)
    out.square().mean().backward()
    with torch.no_grad():
        torch.testing.assert_close(out, PoseGuidedUNet(unet, encoder)(latents, t, text, pose=pose), rtol=0, atol=1e-6)
        assert not torch.equal(out, unet(latents, t, text).sample)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_pose_scale_scales_the_residuals(unet):
    encoder = randomize_(PoseEncoder.for_unet(unet))
    model = PoseGuidedUNet(unet, encoder)
    latents, t, text = unet_inputs()
    pose = random_pose(2, 3, 64, 64)
    with torch.no_grad():
        once, twice = encoder(pose), encoder(pose, pose_scale=2.0)
        assert all(f.abs().sum() > 0 for f in once)
        assert all(torch.equal(b, 2 * a) for a, b in zip(once, twice))
        assert torch.equal(model(latents, t, text, pose=pose, pose_scale=0.0), model(latents, t, text))
        assert not torch.equal(model(latents, t, text, pose=pose), model(latents, t, text))


def test_sequence_features_are_per_frame_features_in_b_f_order(unet):
    encoder = randomize_(PoseEncoder.for_unet(unet))
    b, f = 2, 3
    video = random_pose(b, 3, f, 64, 64)
    with torch.no_grad():
        features = encoder(video)
        per_frame = [encoder(video[i : i + 1, :, j]) for i in range(b) for j in range(f)]  # (b f) order
    assert [tuple(x.shape) for x in features] == [(b * f, 32, 8, 8), (b * f, 64, 4, 4)]
    for level, feature in enumerate(features):
        expected = torch.cat([frame[level] for frame in per_frame])
        torch.testing.assert_close(feature, expected, rtol=0, atol=1e-6)


def test_sequence_pose_guides_frame_latents(unet):
    model = PoseGuidedUNet(unet, randomize_(PoseEncoder.for_unet(unet)))
    latents, t, text = unet_inputs(n=4)
    video = random_pose(2, 3, 2, 64, 64)
    with torch.no_grad():
        from_video = model(latents, t, text, pose=video)
        from_frames = model(latents, t, text, pose=video.permute(0, 2, 1, 3, 4).reshape(4, 3, 64, 64))
    assert from_video.shape == (4, 4, 8, 8)
    torch.testing.assert_close(from_video, from_frames, rtol=0, atol=1e-5)


def test_residuals_follow_the_unet_dtype(unet):
    bf16_unet = UNet2DConditionModel.from_config(unet.config).to(torch.bfloat16).eval()
    model = PoseGuidedUNet(bf16_unet, randomize_(PoseEncoder.for_unet(bf16_unet)))
    latents, t, text = unet_inputs()
    with torch.no_grad():
        out = model(latents.bfloat16(), t, text.bfloat16(), pose=random_pose(2, 3, 64, 64))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 8, 8)


# ------------------------------------------------------------------------------------------------ shapes and errors


def test_shapes_and_bad_sizes(unet):
    encoder = PoseEncoder.for_unet(unet)
    assert tuple(encoder.config.channels) == (32, 64) and encoder.total_downscale_factor == 16
    assert [tuple(x.shape) for x in encoder(random_pose(3, 3, 96, 64))] == [(3, 32, 12, 8), (3, 64, 6, 4)]
    with pytest.raises(ValueError, match=r"multiples of 16.*72x64"):
        encoder(random_pose(1, 3, 72, 64))
    with pytest.raises(ValueError, match="4 channels"):
        encoder(random_pose(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        encoder(random_pose(3, 64, 64))
    with pytest.raises(ValueError, match="block_out_channels"):
        PoseGuidedUNet(unet, PoseEncoder(channels=(32, 64, 64)))
    with pytest.raises(ValueError, match="do not match"):
        PoseGuidedUNet(unet, encoder)(*unet_inputs(), pose=random_pose(2, 3, 128, 128))
    with pytest.raises(ValueError, match="channels must be a list of 1 to 8 integers"):
        PoseEncoder(channels=())


def test_save_pretrained_round_trip(tmp_path):
    encoder = randomize_(PoseEncoder(channels=(32, 64), num_res_blocks=1))
    encoder.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = PoseEncoder.from_pretrained(tmp_path)
    assert tuple(loaded.config.channels) == (32, 64) and loaded.config.num_res_blocks == 1
    pose = random_pose(2, 3, 32, 48)
    with torch.no_grad():
        assert all(torch.equal(a, b) and a.abs().sum() > 0 for a, b in zip(encoder(pose), loaded(pose)))


# ------------------------------------------------------------------------------------------------ pretrained weights


def test_from_t2i_adapter_equals_the_t2i_adapter(tmp_path):
    torch.manual_seed(4)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8)
    adapter.save_pretrained(tmp_path)
    encoder = PoseEncoder.from_t2i_adapter(tmp_path)
    pose = random_pose(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = adapter(pose), encoder(pose)
    assert len(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(expected, got))

    light = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, adapter_type="light_adapter")
    with pytest.raises(ValueError, match="light_adapter"):
        PoseEncoder.from_t2i_adapter(light)


def official_key_shapes(channels, nums_rb: int, cin: int) -> dict[str, tuple[int, ...]]:
    """The state dict of T2I-Adapter's original ``Adapter(cin, channels, nums_rb, ksize=1, sk=True, use_conv=False)``
    as read from its code: ``conv_in`` 3x3; flat ``body`` of ResnetBlocks, block k = i * nums_rb + j goes from
    channels[i-1] (first block of a level > 0) or channels[i] to channels[i]; ``in_conv`` (ksize) only when the
    channels change (sk=True), ``block1`` 3x3, ``block2`` ksize, no ``skep`` (sk=True), AvgPool has no weights."""
    shapes = {"conv_in.weight": (channels[0], cin, 3, 3), "conv_in.bias": (channels[0],)}
    for i, out_c in enumerate(channels):
        for j in range(nums_rb):
            k = i * nums_rb + j
            in_c = channels[i - 1] if (i != 0 and j == 0) else out_c
            if in_c != out_c:
                shapes[f"body.{k}.in_conv.weight"] = (out_c, in_c, 1, 1)
                shapes[f"body.{k}.in_conv.bias"] = (out_c,)
            shapes[f"body.{k}.block1.weight"] = (out_c, out_c, 3, 3)
            shapes[f"body.{k}.block1.bias"] = (out_c,)
            shapes[f"body.{k}.block2.weight"] = (out_c, out_c, 1, 1)
            shapes[f"body.{k}.block2.bias"] = (out_c,)
    return shapes


def official_state_dict(channels, nums_rb: int = 2, cin: int = 192, seed: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_key_shapes(channels, nums_rb, cin).items():
        fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 1
        state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


def official_forward(state: dict[str, torch.Tensor], x: torch.Tensor, levels: int, nums_rb: int) -> list[torch.Tensor]:
    """The official adapter's forward written out with the official key names (no diffusers module involved)."""
    x = F.conv2d(F.pixel_unshuffle(x, 8), state["conv_in.weight"], state["conv_in.bias"], padding=1)
    features = []
    for i in range(levels):
        for j in range(nums_rb):
            k = i * nums_rb + j
            if i != 0 and j == 0:
                x = F.avg_pool2d(x, kernel_size=2, stride=2)
            if f"body.{k}.in_conv.weight" in state:
                x = F.conv2d(x, state[f"body.{k}.in_conv.weight"], state[f"body.{k}.in_conv.bias"])
            h = F.relu(F.conv2d(x, state[f"body.{k}.block1.weight"], state[f"body.{k}.block1.bias"], padding=1))
            x = x + F.conv2d(h, state[f"body.{k}.block2.weight"], state[f"body.{k}.block2.bias"])
        features.append(x)
    return features


def test_official_pose_encoder_checkpoint_loads_every_key(tmp_path):
    state = official_state_dict(OFFICIAL_CHANNELS)
    assert len(state) == 38  # conv_in (2) + 8 blocks x block1/block2 (32) + in_conv of blocks 2 and 4 (4)
    path = tmp_path / "pose_encoder.pth"
    torch.save(state, path)
    encoder = PoseEncoder.from_official_state_dict(path)
    assert tuple(encoder.config.channels) == OFFICIAL_CHANNELS

    # Values land where they belong: every official tensor appears at exactly one encoder key, and all body weights
    # come from the checkpoint.
    params = {k: v for k, v in encoder.state_dict().items() if k.startswith("adapter.")}
    assert len(params) == len(state)
    for key, value in state.items():
        homes = [name for name, param in params.items() if param.shape == value.shape and torch.equal(param, value)]
        assert len(homes) == 1, key
    assert encoder.state_dict()["adapter.body.1.in_conv.weight"].equal(state["body.2.in_conv.weight"])
    assert encoder.state_dict()["adapter.body.3.resnets.1.block2.bias"].equal(state["body.7.block2.bias"])

    pose = random_pose(1, 3, 128, 64)
    with torch.no_grad():
        got = encoder(pose)
        expected = official_forward(state, pose, levels=4, nums_rb=2)
    assert [tuple(x.shape) for x in got] == [(1, 320, 16, 8), (1, 640, 8, 4), (1, 1280, 4, 2), (1, 1280, 2, 1)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_official_checkpoint_errors_and_prefix():
    channels, config = (32, 64), {"channels": (32, 64)}
    state = official_state_dict(channels)
    ddp = {f"module.{k}": v for k, v in state.items()}
    pose = random_pose(1, 3, 32, 32)
    with torch.no_grad():
        a, b = (
            PoseEncoder.from_official_state_dict(state, **config)(pose),
            PoseEncoder.from_official_state_dict(ddp, **config)(pose),
        )
    assert all(torch.equal(x, y) for x, y in zip(a, b))

    with pytest.raises(ValueError, match=r"body\.1\.skep\.weight"):
        PoseEncoder.from_official_state_dict({**state, "body.1.skep.weight": torch.zeros(32, 32, 1, 1)}, **config)
    with pytest.raises(ValueError, match=r"body\.4\.block1\.weight"):  # a third level that the config does not have
        PoseEncoder.from_official_state_dict({**state, "body.4.block1.weight": torch.zeros(64, 64, 3, 3)}, **config)
    missing = {k: v for k, v in state.items() if k != "body.3.block2.bias"}
    with pytest.raises(ValueError, match=r"missing \['adapter\.body\.1\.resnets\.1\.block2\.bias'\]"):
        PoseEncoder.from_official_state_dict(missing, **config)
    with pytest.raises(ValueError, match="wrong shapes"):
        PoseEncoder.from_official_state_dict({**state, "conv_in.bias": torch.zeros(31)}, **config)
    assert set(official_to_diffusers_keys(state, num_res_blocks=2, num_levels=2)) == {
        k for k in PoseEncoder(**config).state_dict() if k.startswith("adapter.")
    }
