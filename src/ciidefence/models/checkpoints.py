"""Loading weights safely: plain state dicts only, never arbitrary pickled objects."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file.

    ``torch.save`` files are read with ``weights_only=True``, which refuses to
    unpickle anything but tensors and plain containers. A dict wrapping the
    state dict under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` is
    unwrapped, and a ``"module."`` prefix left by ``DataParallel`` is removed.

    Raises
    ------
    CheckpointError
        If the file is missing, unsafe, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds objects other than tensors; refusing to unpickle it "
            "(save model.state_dict() instead)"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]  # type: ignore[assignment]  # a wrapper around the state dict
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_weights(network: nn.Module, path: str | os.PathLike, model_name: str) -> None:
    """Load the state dict in ``path`` into ``network``, strictly.

    Raises
    ------
    CheckpointError
        If the checkpoint's keys or tensor shapes do not match the network.
    """
    state = read_state_dict(path)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        key for key in set(state) & set(expected) if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        details = [
            f"{len(keys)} {what} (e.g. {keys[0]})"
            for what, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("tensors of the wrong shape", mismatched),
            )
            if keys
        ]
        raise CheckpointError(f"{path}: not a {model_name} checkpoint: " + ", ".join(details))
    broken = [key for key, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"{path}: {len(broken)} tensors hold NaN or Inf values (e.g. {broken[0]}); "
                              f"the checkpoint is corrupt")
    network.load_state_dict(state)
