"""A learned inpainter loaded from a TorchScript file (LaMa-style export).

A TorchScript file is a program, not data: loading it and calling it runs
whatever it was scripted to do (read and write files, among others) with the
user's rights. It is loaded only when the caller says it trusts the file
(``trust=True``; ``--trust-model`` on the command line). The project's own
models (DeepFill, the Gaussian denoiser) load from safetensors weights alone.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ModelError

PAD_MULTIPLE = 8
"""Inputs are reflect-padded to a multiple of this (as LaMa exports require)."""


def load_inpainter(path: str | os.PathLike, trust: bool = False) -> torch.jit.ScriptModule:
    """Load a TorchScript inpainter, kept in memory for later calls.

    Raises
    ------
    CheckpointError
        If ``trust`` is False (the file would run as code), or the file is
        missing or is not a TorchScript archive.
    """
    if not trust:
        raise CheckpointError(f"{path} is TorchScript, a program that runs with your rights when loaded: pass "
                              f"--trust-model (trust=True in Python) if you trust its author")
    return _load_trusted(str(path))


@functools.lru_cache(maxsize=4)
def _load_trusted(path_text: str) -> torch.jit.ScriptModule:
    path = Path(path_text)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such inpainter file")
    try:
        with warnings.catch_warnings():  # TorchScript is the format users' inpainters come in (LaMa's export)
            warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:
        raise CheckpointError(
            f"{path}: not a TorchScript inpainter ({type(error).__name__})"
        ) from None


def inpaint_learned(
    images: torch.Tensor, masks: torch.Tensor, model_path: str | os.PathLike, trust: bool = False
) -> torch.Tensor:
    """Fill masked pixels with a learned inpainting network.

    The network follows the convention of LaMa's TorchScript exports:
    ``model(image, mask) -> image`` with ``image`` ``(B, 3, H, W)`` in [0, 1]
    and ``mask`` ``(B, 1, H, W)`` float, 1 where pixels are missing. Masked
    pixels are zeroed before the call; sizes are reflect-padded to a multiple
    of :data:`PAD_MULTIPLE` and cropped back.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool, True where pixels are to be filled.
    model_path : path
        TorchScript file.
    trust : bool
        Must be True: the file is a program (see :func:`load_inpainter`).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1]; equal to ``images`` outside the masks.

    Raises
    ------
    ModelError
        If ``trust`` is False, or the network fails or returns the wrong shape or non-finite values.

    References
    ----------
    R. Suvorov et al., "Resolution-robust Large Mask Inpainting with Fourier
    Convolutions" (LaMa), WACV 2022.
    """
    model = load_inpainter(model_path, trust)
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    hole = masks[:, None].to(images.dtype)
    image_in = F.pad(images * (1 - hole), (0, pad_w, 0, pad_h), mode="reflect")
    mask_in = F.pad(hole, (0, pad_w, 0, pad_h), mode="reflect")
    try:
        with torch.no_grad():
            filled = model.to(images.device)(image_in, mask_in)
    except Exception as error:
        raise ModelError(f"{model_path}: inpainter failed: {error}") from None
    if not isinstance(filled, torch.Tensor) or tuple(filled.shape) != tuple(image_in.shape):
        shape = tuple(filled.shape) if isinstance(filled, torch.Tensor) else type(filled).__name__
        raise ModelError(f"{model_path}: inpainter returned {shape}, expected {tuple(image_in.shape)}")
    if not torch.isfinite(filled).all():
        raise ModelError(f"{model_path}: inpainter returned NaN or Inf values")
    filled = filled[..., :height, :width].to(images.dtype).clamp(0, 1)
    return torch.where(masks[:, None], filled, images)
