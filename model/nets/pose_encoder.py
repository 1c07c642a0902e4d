"""The stage-1 pose encoder: a T2I-Adapter "full adapter" followed by one zero-initialised 1x1 conv per level.

Follow Your Pose (stage 1) trains this encoder on image–skeleton pairs while the Stable Diffusion UNet stays frozen.
The encoder turns a skeleton image into one feature map per UNet down block; each map is added as a residual after
the block's last resnet/attention pair, before its downsampler (diffusers' ``down_intrablock_additional_residuals``,
see ``model/nets/pose_unet.py``).

The body is diffusers' ``FullAdapter`` (PixelUnshuffle → 3x3 ``conv_in`` → per level: optional AvgPool downsample,
optional 1x1 ``in_conv`` on a channel change, ``num_res_blocks`` residual blocks of 3x3 conv, ReLU, 1x1 conv), i.e. the
official code's ``Adapter(cin=3*64, channels=[320, 640, 1280, 1280], nums_rb=2, ksize=1, sk=True, use_conv=False)``.

On top of it sits one 1x1 conv per level (``out_convs``). A freshly built encoder has them at zero (weights and
biases), ControlNet-style: every output is exactly zero, so the UNet starts out bit-for-bit unchanged, while the zero
convs' weights still get non-zero gradients on the first step (their gradient is the feature map times the incoming
gradient) and the body starts learning from the second step. The official code does not zero-initialise its adapter.
The loaders for pretrained weights (``from_t2i_adapter``, ``from_official_state_dict``) set the output convs to the
identity instead, so a pretrained adapter behaves exactly as it was trained.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from diffusers import T2IAdapter
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.adapter import FullAdapter
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from model.nets.official_weights import check_safetensors_header, read_weights_file, strip_ddp_prefix
from pose_data.files.json_file import read_json

# Key names of the official checkpoint (T2I-Adapter's original ``Adapter``, which Follow Your Pose copies):
# ``conv_in.{weight,bias}`` and ``body.{k}.{in_conv,block1,block2}.{weight,bias}`` with one flat index
# ``k = level * num_res_blocks + block`` over all residual blocks.
_OFFICIAL_BODY_KEY = re.compile(r"^body\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)$")
_OFFICIAL_CONV_IN_KEY = re.compile(r"^conv_in\.(weight|bias)$")
#: The skeletons the official encoder was trained on (MMPose's visualiser, as in the official pose_example videos).
OFFICIAL_SKELETON_STYLE = "mmpose"
#: The official release's file name for the stage-1 encoder (``checkpoints/pose_encoder.pth``).
OFFICIAL_FILE_NAME = "pose_encoder.pth"
#: Bounds on the sizes a config (a file) may ask for, checked before anything is allocated. The official encoder:
#: 3 input channels, downscale 8, levels (320, 640, 1280, 1280), 2 residual blocks, about 77M parameters.
MAX_IN_CHANNELS = 16
MAX_DOWNSCALE_FACTOR = 64
MAX_LEVELS = 8
MAX_CHANNELS = 4096
MAX_RES_BLOCKS = 8
MAX_PARAMETERS = 1_000_000_000  # 4 GB in fp32


def parameter_count(in_channels: int, channels: Sequence[int], num_res_blocks: int, downscale_factor: int) -> int:
    """The parameters of a :class:`PoseEncoder` of these sizes, counted without building it: ``conv_in`` (3x3 on the
    unshuffled pose), per level an ``in_conv`` (1x1, on a channel change) and residual blocks (3x3 and 1x1 convs),
    and the 1x1 output convs."""
    total = channels[0] * in_channels * downscale_factor**2 * 9 + channels[0]
    for level, c in enumerate(channels):
        before = channels[level - 1] if level else channels[0]
        total += before * c + c if before != c else 0
        total += num_res_blocks * (c * c * 9 + c + c * c + c) + c * c + c
    return total


def check_sizes(in_channels, channels, num_res_blocks, downscale_factor, where: str = "PoseEncoder") -> None:
    """ValueError naming ``where`` and the key unless every size is an integer (not a bool or a string) within its
    bound and the whole encoder stays under :data:`MAX_PARAMETERS`."""

    def integer(value, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    for key, value, high in (("in_channels", in_channels, MAX_IN_CHANNELS), ("num_res_blocks", num_res_blocks, MAX_RES_BLOCKS),
                             ("downscale_factor", downscale_factor, MAX_DOWNSCALE_FACTOR)):  # fmt: skip
        if not integer(value, 1, high):
            raise ValueError(f"{where}: {key} must be an integer from 1 to {high}, got {value!r}")
    if not isinstance(channels, (list, tuple)) or not 1 <= len(channels) <= MAX_LEVELS or not all(integer(c, 1, MAX_CHANNELS) for c in channels):
        raise ValueError(
            f"{where}: channels must be a list of 1 to {MAX_LEVELS} integers from 1 to {MAX_CHANNELS} (one per UNet down "
            f"block), got {channels!r}"
        )
    count = parameter_count(in_channels, channels, num_res_blocks, downscale_factor)
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where}: in_channels={in_channels}, channels={list(channels)}, num_res_blocks={num_res_blocks}, "
            f"downscale_factor={downscale_factor} make {count:,} parameters, more than the limit of {MAX_PARAMETERS:,}"
        )


class PoseEncoder(ModelMixin, ConfigMixin):
    """Skeleton images in [0, 1] → one residual feature map per UNet down block.

    Args:
        in_channels: channels of the pose image (3 for RGB skeleton renderings).
        channels: output channels per level; must equal the UNet's ``block_out_channels`` (one level per down block).
        num_res_blocks: residual blocks per level (2 in the official encoder).
        downscale_factor: the PixelUnshuffle factor; 8 = the VAE's factor, so level 0 matches the latent size.
        skeleton_style: the skeleton rendering the encoder was trained on (``openpose``, ``openpose_full`` or ``mmpose``, from the
            LAION-Pose manifest; ``mmpose`` for the official weights); None when unknown (T2I-Adapter weights). Stage 1 refuses to
            continue training across styles, and the sampler renders poses in this style.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = (320, 640, 1280, 1280),
        num_res_blocks: int = 2,
        downscale_factor: int = 8,
        skeleton_style: str | None = None,
    ):
        super().__init__()
        check_sizes(in_channels, channels, num_res_blocks, downscale_factor)
        if skeleton_style is not None and not isinstance(skeleton_style, str):
            raise ValueError(f"PoseEncoder: skeleton_style must be a string or null, got {skeleton_style!r}")
        channels = tuple(channels)
        self.adapter = FullAdapter(in_channels, list(channels), num_res_blocks, downscale_factor)
        self.out_convs = nn.ModuleList(nn.Conv2d(c, c, kernel_size=1) for c in channels)
        self.zero_output_convs()

    # ----------------------------------------------------------------------------------------------- construction

    @classmethod
    def for_unet(cls, unet, **config) -> PoseEncoder:
        """A fresh (zero-output) encoder whose levels match ``unet.config.block_out_channels``.

        ``config`` may override ``in_channels``, ``num_res_blocks``, ``downscale_factor`` and ``skeleton_style``.
        """
        if "channels" in config:
            raise ValueError("for_unet takes the channels from the UNet's block_out_channels; do not pass `channels`")
        return cls(channels=tuple(unet.config.block_out_channels), **config)

    @classmethod
    def from_t2i_adapter(cls, path_or_adapter: str | os.PathLike | T2IAdapter) -> PoseEncoder:
        """Loads a diffusers ``T2IAdapter`` (a ``save_pretrained`` directory, or the model itself) of type
        ``full_adapter``; the output convs are set to the identity so the result equals the T2IAdapter's output."""
        adapter = path_or_adapter
        if not isinstance(adapter, T2IAdapter):
            adapter = T2IAdapter.from_pretrained(path_or_adapter)
        cfg = adapter.config
        if cfg.adapter_type != "full_adapter":
            raise ValueError(f"Unsupported adapter_type {cfg.adapter_type!r}: PoseEncoder reuses only 'full_adapter' weights")
        encoder = cls(
            in_channels=cfg.in_channels,
            channels=tuple(cfg.channels),
            num_res_blocks=cfg.num_res_blocks,
            downscale_factor=cfg.downscale_factor,
        )
        # T2IAdapter and PoseEncoder both hold the FullAdapter under the attribute `adapter`: the keys coincide.
        encoder._load_body(adapter.state_dict())
        encoder.identity_output_convs()
        return encoder

    @classmethod
    def from_official_state_dict(cls, path_or_dict: str | os.PathLike | Mapping[str, torch.Tensor], **config) -> PoseEncoder:
        """Loads Follow Your Pose's ``pose_encoder.pth`` (T2I-Adapter's original key names) into a new encoder.

        ``config`` defaults to the official architecture (2 residual blocks, downscale 8; the channels per level and
        the input channels read from the tensors' shapes, :func:`official_sizes`: (320, 640, 1280, 1280) and 3 for the
        official file) and ``skeleton_style="mmpose"``: the official encoder was trained on skeletons
        drawn by MMPose's visualiser (the official ``pose_example`` videos: coloured limbs on black, no joint dots), so
        poses drawn here for it are drawn that way. A ``module.`` prefix on every key (a checkpoint saved from a
        DistributedDataParallel wrapper) is stripped. Every key must map onto the encoder and every encoder
        weight must be given: otherwise ValueError listing the keys. Output convs are set to the identity.
        """
        state_dict = strip_ddp_prefix(path_or_dict if isinstance(path_or_dict, Mapping) else read_weights_file(path_or_dict))
        encoder = cls(**{"skeleton_style": OFFICIAL_SKELETON_STYLE, **official_sizes(state_dict, config), **config})
        mapped = official_to_diffusers_keys(state_dict, encoder.config.num_res_blocks, len(encoder.config.channels))
        encoder._load_body(mapped)
        encoder.identity_output_convs()
        return encoder

    def _load_body(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Loads exactly the ``adapter.*`` weights; ValueError naming missing, unexpected or mis-shaped keys."""
        expected = {key: value.shape for key, value in self.state_dict().items() if key.startswith("adapter.")}
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        mis_shaped = sorted(
            f"{key}: got {tuple(state_dict[key].shape)}, expected {tuple(shape)}"
            for key, shape in expected.items()
            if key in state_dict and state_dict[key].shape != shape
        )
        if missing or unexpected or mis_shaped:
            raise ValueError(
                f"pose encoder weights do not fit {dict(self.config)}: missing {missing}, unexpected {unexpected}, "
                f"wrong shapes {mis_shaped}"
            )
        self.load_state_dict(dict(state_dict), strict=False)

    @torch.no_grad()
    def zero_output_convs(self) -> None:
        """Output convs to zero: every output becomes exactly 0 (the freshly built, trainable state)."""
        for conv in self.out_convs:
            conv.weight.zero_()
            conv.bias.zero_()

    @torch.no_grad()
    def identity_output_convs(self) -> None:
        """Output convs to the identity (weight = eye, bias 0): outputs are the adapter body's features as is."""
        for conv in self.out_convs:
            eye = torch.eye(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
            conv.weight.copy_(eye[:, :, None, None])  # (c_out, c_in, 1, 1)
            conv.bias.zero_()

    # ----------------------------------------------------------------------------------------------------- forward

    @property
    def total_downscale_factor(self) -> int:
        """Pose height and width must be multiples of this (PixelUnshuffle, then one 2x pooling per extra level)."""
        return self.config.downscale_factor * 2 ** (len(self.config.channels) - 1)

    def forward(self, pose: torch.Tensor, pose_scale: float = 1.0) -> list[torch.Tensor]:
        """One feature map per level, each multiplied by ``pose_scale``.

        Args:
            pose: skeleton images in [0, 1], either an image batch (b, c, h, w) or a pose sequence (b, c, f, h, w).
                Frames are encoded independently.
            pose_scale: strength of the pose guidance (0 turns it off exactly).

        Returns:
            ``[(n, channels[i], h / (downscale_factor * 2**i), w / (downscale_factor * 2**i)) for each level i]``
            with n = b for images and n = b * f for sequences, frames in ``(b f)`` order (batch-major: all frames of
            the first video, then all of the second), the same flattening stage 2 uses for video latents.
        """
        if pose.ndim == 5:
            b, c, f, h, w = pose.shape
            # (b, c, f, h, w) -> (b, f, c, h, w) -> (b*f, c, h, w): frames in (b f) order
            pose = pose.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        elif pose.ndim != 4:
            raise ValueError(
                f"pose must be an image batch (b, c, h, w) or a sequence (b, c, f, h, w), got shape {tuple(pose.shape)}"
            )
        _, c, h, w = pose.shape
        if c != self.config.in_channels:
            raise ValueError(f"pose has {c} channels, the encoder expects in_channels={self.config.in_channels}")
        factor = self.total_downscale_factor
        if h % factor or w % factor:
            raise ValueError(
                f"pose height and width must be multiples of {factor} (downscale_factor {self.config.downscale_factor} "
                f"* 2**{len(self.config.channels) - 1} levels), got {h}x{w}"
            )
        features = self.adapter(pose.to(dtype=self.dtype))
        return [conv(feature) * pose_scale for conv, feature in zip(self.out_convs, features)]


def load_pose_encoder(path: str | os.PathLike) -> PoseEncoder:
    """A trained pose encoder from ``path``: a ``fyp-train stage1`` output folder (its ``pose_encoder/``), a
    PoseEncoder folder, a diffusers T2IAdapter folder, the official ``pose_encoder.pth``, or the official release's
    ``checkpoints/`` folder holding it.

    FileNotFoundError naming ``path`` when it is none of these.
    """
    kind, path = locate_pose_encoder(path)
    if kind == "official":
        return PoseEncoder.from_official_state_dict(path)
    try:
        if kind == "T2IAdapter":
            return PoseEncoder.from_t2i_adapter(path)
        return PoseEncoder.from_pretrained(path)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:  # the weights do not fit the config
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"pose encoder {str(path)!r}: its weights do not load into its config ({type(err).__name__}: {first[:400]})") from None


def locate_pose_encoder(path: str | os.PathLike) -> tuple[str, Path]:
    """What :func:`load_pose_encoder` would read at ``path``, checked without loading weights: ``("official", file)``
    for a state dict in T2I-Adapter's layout, else ``(class name, folder)`` once the folder's config.json is a JSON
    object of a PoseEncoder or full T2IAdapter whose sizes are within bounds (:func:`check_sizes`) and its safetensors
    file (when it has one) is whole. FileNotFoundError or ValueError naming the file and key otherwise."""
    path = Path(path)
    official = official_encoder_file(path)
    if official is not None:
        return "official", official
    if _model_class(path / "config.json") is None and (path / "pose_encoder" / "config.json").is_file():
        path = path / "pose_encoder"  # a stage-1 output folder (its own config.json is the run's)
    config = path / "config.json"
    if not config.is_file():
        what = "no such file or folder" if not path.exists() else f"neither a .pth state dict nor a folder with config.json or {OFFICIAL_FILE_NAME}"
        raise FileNotFoundError(f"pose encoder {str(path)!r}: {what}")
    values = _read_model_config(config)
    class_name = values.get("_class_name")
    if class_name not in ("T2IAdapter", PoseEncoder.__name__):
        raise ValueError(f"{config}: not the config of a PoseEncoder or T2IAdapter (_class_name {class_name!r})")
    if class_name == "T2IAdapter" and values.get("adapter_type", "full_adapter") != "full_adapter":
        raise ValueError(f"{config}: Unsupported adapter_type {values.get('adapter_type')!r}: PoseEncoder reuses only 'full_adapter' weights")
    defaults = {"in_channels": 3, "channels": [320, 640, 1280, 1280], "num_res_blocks": 2, "downscale_factor": 8}
    check_sizes(*(values.get(key, default) for key, default in defaults.items()), where=str(config))
    _check_weights_file(path)
    return class_name, path


def _read_model_config(config: Path) -> dict:
    """A diffusers model config as a dict; ValueError naming the file when it is not a JSON object."""
    values = read_json(config)
    if not isinstance(values, dict):
        raise ValueError(f"{config}: not the config of a PoseEncoder or T2IAdapter (a JSON {type(values).__name__}, not an object)")
    return values


def _check_weights_file(folder: Path) -> None:
    """A saved model's safetensors file, if it has one, must be whole: ValueError naming it when cut or garbage."""
    file = folder / "diffusion_pytorch_model.safetensors"
    if not file.is_file():
        return  # .bin or another variant: from_pretrained's own error names what is missing
    check_safetensors_header(file)


def official_encoder_file(path: str | os.PathLike) -> Path | None:
    """The state-dict file in T2I-Adapter's original layout that ``path`` names: the file itself, or the official
    release's ``checkpoints/`` folder holding ``pose_encoder.pth``; None for a model folder (or nothing there)."""
    path = Path(path)
    if path.is_dir() and not (path / "config.json").is_file() and (path / OFFICIAL_FILE_NAME).is_file():
        return path / OFFICIAL_FILE_NAME
    return path if path.is_file() else None


def _model_class(config: Path) -> str | None:
    """The ``_class_name`` of a diffusers model config; None when the file is missing or not such a config."""
    try:
        value = json.loads(config.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def official_sizes(state_dict: Mapping[str, torch.Tensor], config: Mapping) -> dict:
    """``channels`` (one per level) and ``in_channels`` of an official-layout state dict, read from its tensor shapes
    (``conv_in.weight``: (channels[0], in_channels * downscale², 3, 3); ``body.{level * n}.block1.weight``:
    (channels[level], ...)), for those of the two not in ``config``; ``num_res_blocks`` and ``downscale_factor`` come
    from ``config`` or the defaults (2, 8). Whatever cannot be read is left to the defaults (the key check then names it)."""
    n = int(config.get("num_res_blocks", 2))
    factor = int(config.get("downscale_factor", 8))
    sizes: dict = {}
    first = state_dict.get("conv_in.weight")
    if "in_channels" not in config and isinstance(first, torch.Tensor) and first.ndim == 4 and first.shape[1] % (factor * factor) == 0:
        sizes["in_channels"] = first.shape[1] // (factor * factor)
    blocks = {int(m.group(1)) for key in state_dict if (m := _OFFICIAL_BODY_KEY.match(key))}
    if "channels" not in config and blocks and n >= 1 and (max(blocks) + 1) % n == 0:
        weights = [state_dict.get(f"body.{level * n}.block1.weight") for level in range((max(blocks) + 1) // n)]
        if all(isinstance(w, torch.Tensor) and w.ndim == 4 for w in weights):
            sizes["channels"] = tuple(int(w.shape[0]) for w in weights)
    return sizes


def official_to_diffusers_keys(
    state_dict: Mapping[str, torch.Tensor], num_res_blocks: int, num_levels: int
) -> dict[str, torch.Tensor]:
    """Renames T2I-Adapter original ``Adapter`` keys to PoseEncoder's (diffusers ``FullAdapter`` under ``adapter.``).

    ``conv_in.*`` → ``adapter.conv_in.*``; ``body.{k}.block{1,2}.*`` → ``adapter.body.{k // n}.resnets.{k % n}.block{1,2}.*``;
    ``body.{k}.in_conv.*`` (only on the first block of a level) → ``adapter.body.{k // n}.in_conv.*`` (n =
    num_res_blocks). Keys that fit none of these (e.g. ``skep`` convs of an ``sk=False`` adapter, ``in_conv`` inside a
    level, block indices past the last level) raise ValueError, all of them named; nothing is dropped silently.
    """
    state_dict = strip_ddp_prefix(state_dict)
    mapped: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        new_key = None
        if match := _OFFICIAL_CONV_IN_KEY.match(key):
            new_key = f"adapter.conv_in.{match.group(1)}"
        elif match := _OFFICIAL_BODY_KEY.match(key):
            index, layer, param = int(match.group(1)), match.group(2), match.group(3)
            level, block = divmod(index, num_res_blocks)
            if level < num_levels and layer != "in_conv":
                new_key = f"adapter.body.{level}.resnets.{block}.{layer}.{param}"
            elif level < num_levels and block == 0:
                new_key = f"adapter.body.{level}.in_conv.{param}"
        if new_key is None:
            unmapped.append(key)
        else:
            mapped[new_key] = value
    if unmapped:
        raise ValueError(
            f"official pose encoder keys with no place in a full adapter of {num_levels} levels x {num_res_blocks} "
            f"residual blocks: {sorted(unmapped)}"
        )
    return mapped
