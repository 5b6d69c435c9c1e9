"""Inpainting backends: fill masked pixels from their surroundings.

Every backend takes ``images (B, 3, H, W)`` in [0, 1] and ``masks (B, H, W)``
bool, and returns images equal to the input outside the masks.
"""

from __future__ import annotations

import os

import torch

from ..errors import ConfigError
from .biharmonic import inpaint_biharmonic
from .harmonic import inpaint_harmonic
from .learned import inpaint_learned, load_inpainter
from .opencv import inpaint_navier_stokes, inpaint_telea

INPAINTERS = ("telea", "navier-stokes", "biharmonic", "harmonic", "learned")


def inpaint(
    images: torch.Tensor,
    masks: torch.Tensor,
    method: str = "telea",
    radius: float = 3.0,
    model_path: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Inpaint with the backend named ``method`` (one of :data:`INPAINTERS`).

    ``"harmonic"`` is torch-native and runs batched on the images' device;
    the others run on the CPU. ``radius`` applies to the OpenCV backends, ``model_path`` (required) to
    ``"learned"``.
    """
    if method == "telea":
        return inpaint_telea(images, masks, radius)
    if method == "navier-stokes":
        return inpaint_navier_stokes(images, masks, radius)
    if method == "biharmonic":
        return inpaint_biharmonic(images, masks)
    if method == "harmonic":
        return inpaint_harmonic(images, masks)
    if method == "learned":
        if model_path is None:
            raise ConfigError("the learned inpainter needs a TorchScript model path")
        return inpaint_learned(images, masks, model_path)
    raise ConfigError(f"unknown inpainter {method!r}; choose one of: {', '.join(INPAINTERS)}")


__all__ = [
    "INPAINTERS",
    "inpaint",
    "inpaint_biharmonic",
    "inpaint_harmonic",
    "inpaint_learned",
    "inpaint_navier_stokes",
    "inpaint_telea",
    "load_inpainter",
]
