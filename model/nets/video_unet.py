"""The stage-2 video model: a Stable Diffusion 1.x UNet inflated in place for video, plus the stage-1 pose encoder.

Inflation (:func:`inflate_unet`) keeps diffusers' ``UNet2DConditionModel`` and adds to it:

- pseudo-3D convolution: the frames of all videos go through the 2D layers as one image batch ``(b·f, c, h, w)``
  (the frames of a video contiguous), i.e. each 2D conv is a 1x3x3 conv over ``(b, c, f, h, w)``; no new parameters;
- cross-frame attention on every spatial self-attention ``attn1`` (:mod:`model.nets.cross_frame_attention`);
- temporal attention (and optionally the official temporal conv) after every transformer block's feed-forward
  (:mod:`model.nets.temporal_layers`), starting as the identity;
- GroupNorm ``per_frame`` (the 2D model's, default) or ``across_frames`` (statistics over all frames in the resnets
  and the output norm, as the official code does by normalising 5-D tensors; needed to reproduce its checkpoint).

The state-dict names of the inflated UNet equal the official checkpoint's. :class:`VideoUNet` adds the layout and the
pose: latents ``(b·f, c, h, w)``, one timestep and one text embedding per video (repeated per frame here), and pose
sequences ``(b, 3, f, H, W)`` whose features go in exactly as in stage 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from model.nets.cross_frame_attention import CrossFrameAttnProcessor, check_mode
from model.nets.frame_count import FrameCount
from model.nets.pose_encoder import PoseEncoder
from model.nets.pose_unet import PoseGuidedUNet
from model.nets.temporal_layers import FramePooledGroupNorm, VideoTransformerBlock, add_temporal_layers

GROUP_NORM_MODES = ("per_frame", "across_frames")
#: Parameter-name patterns trained in stage 2 by default: the official set (``configs/pose_train.yaml``).
DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp", "conv_temporal")
#: Names of the modules inflation adds (their weights exist only in an inflated UNet).
ADDED_MODULES = ("attn_temp", "norm_temp", "conv_temporal")
#: The largest temporal-conv rank (the official 160; a rank above a block's channels becomes channels // 2 anyway).
MAX_CONV_TEMPORAL_RANK = 4096


@dataclass
class VideoLayersConfig:
    """Everything needed to rebuild the video layers on an SD 1.x UNet (saved with them as ``config.json``)."""

    attention: str = "sparse_causal"  # cross-frame attention of attn1: sparse_causal, first_frame, full, none
    group_norm: str = "per_frame"  # per_frame, or across_frames (the official code's)
    temporal_attention: bool = True  # norm_temp + attn_temp after every feed-forward
    conv_temporal: bool = False  # the official code's temporal Conv1d pair
    conv_temporal_rank: int = 160
    trainable: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))

    def validate(self, where: str = "") -> None:
        """ValueError naming the key (``where.key``: a config section or a file) for a value of the wrong type or out
        of range; the rank is bounded before any layer is allocated."""
        at = f"{where}." if where else ""
        if not isinstance(self.attention, str):
            raise ValueError(f"{at}attention must be a string, got {self.attention!r}")
        try:
            check_mode(self.attention)
        except ValueError as err:
            raise ValueError(f"{at}attention: {err}") from None
        if not isinstance(self.group_norm, str) or self.group_norm not in GROUP_NORM_MODES:
            raise ValueError(f"{at}group_norm {self.group_norm!r} is not one of {', '.join(GROUP_NORM_MODES)}")
        for name in ("temporal_attention", "conv_temporal"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{at}{name} must be true or false, got {getattr(self, name)!r}")
        rank = self.conv_temporal_rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_CONV_TEMPORAL_RANK:
            raise ValueError(f"{at}conv_temporal_rank must be an integer from 1 to {MAX_CONV_TEMPORAL_RANK}, got {rank!r}")
        if not isinstance(self.trainable, list) or not all(isinstance(p, str) and p.strip(".") for p in self.trainable):
            raise ValueError(f"{at}trainable must be a list of parameter-name patterns (strings), got {self.trainable!r}")
        if not self.trainable:
            raise ValueError(f"{at}trainable needs at least one parameter-name pattern, e.g. attn_temp")

    @classmethod
    def from_file(cls, data, where: str) -> VideoLayersConfig:
        """The config saved in a video-layers folder (``where`` names the file and entry): exactly the fields of this
        class, each of its own JSON type (no ``"8"`` for 8); ValueError naming the file and key otherwise."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object of {', '.join(f.name for f in fields(cls))}, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(f.name for f in fields(cls))}")
        config = cls(**data)
        config.validate(where)
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def official(cls) -> VideoLayersConfig:
        """The official Follow-Your-Pose stage-2 model: sparse-causal, GroupNorm across frames, temporal conv."""
        return cls(attention="sparse_causal", group_norm="across_frames", temporal_attention=True, conv_temporal=True)


def inflate_unet(unet: UNet2DConditionModel, config: VideoLayersConfig) -> FrameCount:
    """Add the video layers of ``config`` to ``unet`` in place; returns the :class:`FrameCount` they share.

    ValueError if the UNet was inflated already, or has blocks the video layers do not support.
    """
    config.validate()
    if getattr(unet, "video_layers_config", None) is not None:
        raise ValueError("this UNet is inflated already")
    frames = FrameCount()
    blocks = [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]
    if not blocks:
        raise ValueError("the UNet has no transformer blocks to inflate")
    for block in blocks:
        add_temporal_layers(
            block, frames, attention=config.temporal_attention, conv_rank=config.conv_temporal_rank if config.conv_temporal else None
        )
        block.attn1.set_processor(CrossFrameAttnProcessor(config.attention, frames))
    if config.group_norm == "across_frames":
        _pool_group_norms_over_frames(unet, frames)
    unet.video_layers_config = config
    unet.frame_count = frames
    return frames


def _pool_group_norms_over_frames(unet: nn.Module, frames: FrameCount) -> None:
    """Every GroupNorm outside the transformers (resnets, ``conv_norm_out``) -> :class:`FramePooledGroupNorm`.

    The transformers' input norm stays per frame, as in the official code (it flattens frames before that norm).
    """
    inside_transformers = {
        id(m) for t in unet.modules() if t.__class__.__name__ == "Transformer2DModel" for m in t.modules()
    }
    targets = [
        (name, m) for name, m in unet.named_modules() if type(m) is nn.GroupNorm and id(m) not in inside_transformers
    ]
    for name, norm in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, attr, FramePooledGroupNorm.replacing(norm, frames))


def matches(name: str, patterns) -> bool:
    """True when one of ``patterns`` is a run of whole dotted segments of ``name`` (``attn_temp`` matches
    ``...transformer_blocks.0.attn_temp.to_q.weight``; ``attn1.to_q`` does not match ``attn1.to_k``)."""
    dotted = f".{name}."
    return any(f".{p.strip('.')}." in dotted for p in patterns)


def is_video_layer(name: str) -> bool:
    """True for weights that only an inflated UNet has."""
    return matches(name, ADDED_MODULES)


class VideoUNet(PoseGuidedUNet):
    """An inflated UNet (``unet``, inflated here with ``config``) and an optional stage-1 ``pose_encoder``.

    ``forward`` takes latents ``(b·f, c, h, w)`` in ``(b f)`` order, a timestep per video (or one for all), text
    embeddings ``(b, tokens, dim)`` per video, ``num_frames = f``, and optionally poses ``(b, 3, f, 8h, 8w)``.
    """

    def __init__(self, unet: UNet2DConditionModel, config: VideoLayersConfig, pose_encoder: PoseEncoder | None = None):
        super().__init__(unet, pose_encoder)
        self.config = config
        self.frames = inflate_unet(unet, config)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
        pose: torch.Tensor | None = None,
        pose_scale: float = 1.0,
    ) -> torch.Tensor:
        """The noise prediction ``(b·f, c, h, w)``."""
        b, f = FrameCount(num_frames).videos(sample.shape[0], "VideoUNet")
        if encoder_hidden_states.shape[0] != b:
            raise ValueError(
                f"encoder_hidden_states has {encoder_hidden_states.shape[0]} rows, expected one per video ({b})"
            )
        if pose is not None and (pose.ndim != 5 or pose.shape[0] != b or pose.shape[2] != f):
            raise ValueError(f"pose must be (b, 3, f, H, W) = ({b}, 3, {f}, H, W), got {tuple(pose.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        if timestep.shape != (b,):
            raise ValueError(f"timestep must be a scalar or one per video ({b}), got shape {tuple(timestep.shape)}")
        self.frames.num_frames = f
        return super().forward(
            sample, timestep.repeat_interleave(f), encoder_hidden_states.repeat_interleave(f, dim=0), pose, pose_scale
        )

    # ------------------------------------------------------------------------------------------------- parameters

    def select_trainable(self, patterns=None) -> list[tuple[str, nn.Parameter]]:
        """Freeze everything, then unfreeze the UNet parameters matching ``patterns`` (default: the config's).

        Patterns naming a temporal layer this model does not have (``conv_temporal`` with ``conv_temporal`` off,
        ``attn_temp`` without temporal attention) are ignored. Returns the chosen (name, parameter) pairs;
        ValueError when another pattern matches nothing.
        """
        patterns = [p for p in (patterns or self.config.trainable) if not self._names_a_disabled_layer(p)]
        self.requires_grad_(False)
        chosen = [(n, p) for n, p in self.unet.named_parameters() if matches(n, patterns)]
        unused = [p for p in patterns if not any(matches(n, [p]) for n, _ in chosen)]
        if unused:
            raise ValueError(f"trainable pattern(s) {unused} match no UNet parameter (video layers: {self.config.to_dict()})")
        for _, p in chosen:
            p.requires_grad_(True)
        return chosen

    def _names_a_disabled_layer(self, pattern: str) -> bool:
        first = pattern.strip(".").split(".")[0]
        enabled = {"conv_temporal": self.config.conv_temporal, "attn_temp": self.config.temporal_attention,
                   "norm_temp": self.config.temporal_attention}  # fmt: skip
        return not enabled.get(first, True)

    def video_layers_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that make the inflated UNet differ from the base: every added layer and every trained one."""
        return {
            n: p.detach() for n, p in self.unet.state_dict().items()
            if is_video_layer(n) or matches(n, self.config.trainable)
        }  # fmt: skip

    def check_processors(self) -> None:
        """ValueError when a diffusers helper replaced the cross-frame processors (e.g. ``set_default_attn_processor``
        or xformers switching): the model would then silently run as an image model."""
        wrong = [
            f"{name}: {type(m.attn1.processor).__name__}"
            for name, m in self.unet.named_modules()
            if isinstance(m, VideoTransformerBlock)
            and not (isinstance(m.attn1.processor, CrossFrameAttnProcessor) and m.attn1.processor.mode == self.config.attention)
        ]
        if wrong:
            raise ValueError(
                f"{len(wrong)} spatial self-attention(s) lost their cross-frame processor (mode {self.config.attention!r}), "
                f"e.g. {wrong[0]}; something called set_attn_processor/set_default_attn_processor or enabled xformers "
                "after inflation. Inflate again, or call VideoUNet.restore_processors()."
            )

    def restore_processors(self) -> None:
        for m in self.unet.modules():
            if isinstance(m, VideoTransformerBlock):
                m.attn1.set_processor(CrossFrameAttnProcessor(self.config.attention, self.frames))
