"""Finding and reading the officially released Follow Your Pose stage-2 weights, in every form a user has them.

The official README lays the release out as::

    checkpoints/
      stable-diffusion-v1-4/              the SD 1.4 base (diffusers layout)
      followyourpose_checkpoint-1000/     stage 2: a folder written by accelerate's ``Accelerator.save_state`` during
                                          the official training, read back by the official txt2video.py with
                                          ``accelerator.load_state``
      pose_encoder.pth                    stage 1: the pose encoder (T2I-Adapter's original key names)

accelerate names the model file of a ``save_state`` folder ``pytorch_model.bin`` (``safe_serialization=False``, and
every accelerate of the release's time) or ``model.safetensors`` (the default since), ``pytorch_model_N.bin`` /
``model_N.safetensors`` for the N-th prepared model, and writes ``optimizer.bin``, ``scheduler.bin``,
``random_states_0.pkl`` (and ``scaler.pt``) beside it. A saved model may also be sharded with an index
(``model.safetensors.index.json``, ``pytorch_model.bin.index.json``, as ``Accelerator.save_model`` writes it), or be in
diffusers' names (``diffusion_pytorch_model.{safetensors,bin}``, also under ``unet/``).

:func:`find_release` accepts any of these: the ``followyourpose_checkpoint-N`` folder, the bare file (or an index),
or the folder above (``checkpoints/``: its ``*checkpoint-N`` folder with the highest N that holds weights).
:func:`read_state_dict` reads only the model weights: safetensors, or ``torch.load(weights_only=True)``. No other file
of the folder is opened, so a pickle such as ``random_states_0.pkl`` is never unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: Model-file names of one prepared model in a ``save_state`` folder, in the order they are looked for
#: (the first prepared model: the UNet in the official training).
ACCELERATE_FILES = ("model.safetensors", "pytorch_model.bin", "model_0.safetensors", "pytorch_model_0.bin")
#: Index files of a sharded save (``{"weight_map": {key: shard file}}``).
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json",
               "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json")  # fmt: skip
#: diffusers' names of a model file, in the folder itself or under ``unet/``.
DIFFUSERS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: Suffixes of a bare weights file.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
#: A checkpoint folder of the official training (``checkpoint-500``), of the release (``followyourpose_checkpoint-1000``)
#: or renamed around that (``my-checkpoint-1000-final``): the name holds ``checkpoint-N`` (or ``checkpoint_N``).
CHECKPOINT_FOLDER = re.compile(r"checkpoint[-_](\d+)")
DDP_PREFIX = "module."


@dataclass(frozen=True)
class ReleaseWeights:
    """The weight files of one stage-2 model (one file, or the shards of an index) and how they were found."""

    files: tuple[Path, ...]
    layout: str  # "accelerate save_state folder", "sharded (index.json)", "diffusers file", "file"
    index: Path | None = None

    @property
    def where(self) -> str:
        return str(self.index or self.files[0])


def looked_for() -> str:
    """What :func:`find_release` looks for, in words (for error messages)."""
    return (
        f"an accelerate save_state folder ({', '.join(ACCELERATE_FILES)}), a sharded save ({', '.join(INDEX_FILES[:2])}), "
        f"{' or '.join(DIFFUSERS_FILES)} (also under unet/), a weights file ({', '.join(WEIGHT_SUFFIXES)}), "
        "or a folder holding followyourpose_checkpoint-N/ (any folder whose name holds checkpoint-N)"
    )


def find_release(path: str | os.PathLike) -> ReleaseWeights | None:
    """The stage-2 weights at ``path`` in any official form (module doc); None when it holds none of them."""
    path = Path(path)
    if path.is_file():
        if path.name.endswith(".index.json"):
            return _from_index(path)
        if path.suffix in WEIGHT_SUFFIXES:
            return ReleaseWeights((path,), "file")
        return None
    if not path.is_dir():
        return None
    found = _in_folder(path)
    if found is not None:
        return found
    checkpoints = sorted(
        ((int(m.group(1)), child) for child in path.iterdir() if child.is_dir() and (m := CHECKPOINT_FOLDER.search(child.name))),
        reverse=True,
    )
    for _step, folder in checkpoints:
        found = _in_folder(folder)
        if found is not None:
            if len(checkpoints) > 1:
                log.info("%s holds %d checkpoint folders; reading the latest with weights, %s", path, len(checkpoints), folder.name)
            return found
    return None


def _in_folder(folder: Path) -> ReleaseWeights | None:
    for name in ACCELERATE_FILES:
        if (folder / name).is_file():
            return ReleaseWeights((folder / name,), "accelerate save_state folder")
    for where in (folder, folder / "unet"):
        for name in INDEX_FILES:
            if (where / name).is_file():
                return _from_index(where / name)
        for name in DIFFUSERS_FILES:
            if (where / name).is_file():
                return ReleaseWeights((where / name,), "diffusers file")
    return None


def _from_index(index: Path) -> ReleaseWeights:
    """The shards an index names, each a plain file name beside the index; ValueError naming the index otherwise."""
    try:
        index_json = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{index}: not a readable shard index ({type(err).__name__}: {err})") from None
    weight_map = index_json.get("weight_map") if isinstance(index_json, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index}: its weight_map is not a non-empty {{key: shard file}} object")
    names = sorted(set(weight_map.values()))
    bad = [n for n in names if Path(n).name != n or n in (".", "..") or not n.endswith(WEIGHT_SUFFIXES)]
    if bad:
        raise ValueError(f"{index}: shard names must be weight files beside the index, got {bad[:4]}")
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise ValueError(f"{index}: shard file(s) {missing[:4]} missing beside it")
    return ReleaseWeights(tuple(index.parent / n for n in names), "sharded (index.json)", index)


def read_state_dict(release: ReleaseWeights) -> dict[str, torch.Tensor]:
    """Every tensor of the release's files, read weights-only, with a ``module.`` prefix (a DDP-wrapped save) removed.

    ValueError naming the file for one that cannot be read, holds no state dict, or (sharded) does not hold the keys
    its index gives it.
    """
    state: dict[str, torch.Tensor] = {}
    for file in release.files:
        part = read_weights_file(file)
        clash = sorted(set(part) & set(state))
        if clash:
            raise ValueError(f"{file}: key(s) {clash[:4]} also in another shard of {release.where}")
        state.update(part)
    if release.index is not None:
        weight_map = json.loads(release.index.read_text())["weight_map"]
        absent = sorted(k for k in weight_map if k not in state)
        if absent:
            raise ValueError(f"{release.index}: key(s) {absent[:4]} are in the index but not in their shard")
    return strip_ddp_prefix(state)


def read_weights_file(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """One weights file (safetensors, or a PyTorch pickle read with ``weights_only=True``) as a dict of tensors;
    ValueError naming the file when it cannot be read or holds anything else."""
    file = Path(file)
    if file.suffix == ".safetensors":
        state = read_safetensors(file)
    else:
        state = load_weights_only(file)
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{file} holds a {type(state).__name__}, not a state dict of named tensors")
    return dict(state)


def read_safetensors(file: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; ValueError naming the file when it is missing, cut, empty or not
    safetensors (the library's own error is not a ValueError)."""
    file = Path(file)
    if _is_lfs_pointer(file):
        raise ValueError(f"{file}: a Git LFS pointer, not the weights: fetch the file itself (git lfs pull, or download it)")
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device=device)
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError: a bad input, named in one line
        raise ValueError(f"{file}: not a readable safetensors file ({type(err).__name__}: {_first_line(err)})") from None


def check_safetensors_header(file: str | os.PathLike) -> None:
    """ValueError naming ``file`` unless it is a safetensors file whose header and size agree (a cut, empty or garbage
    file fails here, without reading its tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # noqa: BLE001 - SafetensorError is not a ValueError: a bad input, named in one line
        raise ValueError(f"{file}: not a readable safetensors file ({type(err).__name__}: {_first_line(err)})") from None


def load_weights_only(file: str | os.PathLike, safe_globals: Sequence = ()) -> object:
    """``torch.load(file, weights_only=True)`` on the CPU: tensors and plain Python values, plus exactly the classes in
    ``safe_globals``; anything else in the pickle (a class or function it would call: code) is refused, not run.
    ValueError naming the file for a refused, damaged or missing file."""
    file = Path(file)
    if _is_lfs_pointer(file):
        raise ValueError(f"{file}: a Git LFS pointer, not the weights: fetch the file itself (git lfs pull, or download it)")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(safe_globals)):
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of a file it then refuses
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights-only loading refused the file's pickle
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(err))
        if found and found.group(1).startswith("global"):  # a class or function the pickle would call: code, not tensors
            raise ValueError(
                f"{file}: not a readable PyTorch state dict: it holds objects other than tensors, which weights-only "
                f"loading refuses (Unsupported {found.group(1)}); a checkpoint should hold tensors only"
            ) from None
        raise ValueError(
            f"{file}: not a readable PyTorch state dict: weights-only loading refused it ("
            f"{found.group(0) if found else 'not a pickle'}): not a PyTorch file, a damaged one, or one holding more than tensors"
        ) from None
    except Exception as err:  # noqa: BLE001 - an unreadable file is a bad input, named in one line
        raise ValueError(f"{file}: not a readable PyTorch state dict ({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _is_lfs_pointer(file: Path) -> bool:
    """A Git LFS pointer (a clone without git-lfs) in place of the file."""
    try:
        with open(file, "rb") as handle:
            return handle.read(64).startswith(b"version https://git-lfs.github.com/spec/")
    except OSError:
        return False


def strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``module.`` removed from every key when every key has it (saved from a DDP wrapper)."""
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        return {key[len(DDP_PREFIX) :]: value for key, value in state.items()}
    return dict(state)
