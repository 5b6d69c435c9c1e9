"""Inpainting backends: fill masked pixels from their surroundings.

Every backend takes ``images (B, 3, H, W)`` in [0, 1] and ``masks (B, H, W)``
bool, and returns images equal to the input outside the masks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

INPAINTERS = ("telea", "navier-stokes", "biharmonic", "harmonic", "deepfill", "learned")
INPAINTER_PRECISIONS = ("float32", "bfloat16")
"""Arithmetic of the deepfill network: plain float32, or bfloat16 under autocast."""
DIFFERENTIABLE_INPAINTERS = ("harmonic", "deepfill")
"""Torch-native inpainters that gradients flow through (BPDA's ``inpainter`` approximation)."""


def check_precision(method: str, precision: str) -> None:
    """Refuse a ``precision`` not in :data:`INPAINTER_PRECISIONS`, or other than float32 for any inpainter but
    ``"deepfill"``, with a :class:`~ciidefence.errors.ConfigError`."""
    if precision not in INPAINTER_PRECISIONS:
        raise ConfigError(f"unknown inpainter precision {precision!r}; "
                          f"choose one of: {', '.join(INPAINTER_PRECISIONS)}")
    if precision != "float32" and method != "deepfill":
        raise ConfigError(f"inpainter precision {precision!r} applies to the deepfill inpainter only, not {method!r}")


def inpaint(
    images: torch.Tensor,
    masks: torch.Tensor,
    method: str = "telea",
    radius: float = 3.0,
    model_path: str | os.PathLike | None = None,
    precision: str = "float32",
    trust: bool = False,
) -> torch.Tensor:
    """Inpaint with the backend named ``method`` (one of :data:`INPAINTERS`).

    ``"harmonic"`` and ``"deepfill"`` (the project's trained network) are
    torch-native, differentiable and run batched on the images' device; the
    others run on the CPU. ``radius`` applies to the OpenCV backends;
    ``model_path`` to ``"learned"`` (a TorchScript file, required) and to
    ``"deepfill"`` (weights from ``ciid train-inpainter``; default: the
    shipped ones); ``precision`` (one of :data:`INPAINTER_PRECISIONS`) to
    ``"deepfill"`` alone. ``trust`` must be True for ``"learned"``: its
    TorchScript file is a program, run with your rights.
    """
    check_precision(method, precision)
    if method == "telea":
        from .opencv import inpaint_telea

        return inpaint_telea(images, masks, radius)
    if method == "navier-stokes":
        from .opencv import inpaint_navier_stokes

        return inpaint_navier_stokes(images, masks, radius)
    if method == "biharmonic":
        from .biharmonic import inpaint_biharmonic

        return inpaint_biharmonic(images, masks)
    if method == "harmonic":
        from .harmonic import inpaint_harmonic

        return inpaint_harmonic(images, masks)
    if method == "deepfill":
        from .deepfill import inpaint_deepfill

        return inpaint_deepfill(images, masks, model_path, precision)
    if method == "learned":
        from .learned import inpaint_learned

        if model_path is None:
            raise ConfigError("the learned inpainter needs a TorchScript model path")
        return inpaint_learned(images, masks, model_path, trust)
    raise ConfigError(f"unknown inpainter {method!r}; choose one of: {', '.join(INPAINTERS)}")


__getattr__, __dir__ = lazy_exports(__name__, {
    "inpaint_biharmonic": ".biharmonic",
    "inpaint_deepfill": ".deepfill",
    "DeepFill": ".deepfill",
    "DeepFillConfig": ".deepfill",
    "load_deepfill": ".deepfill",
    "inpaint_harmonic": ".harmonic",
    "inpaint_learned": ".learned",
    "load_inpainter": ".learned",
    "inpaint_navier_stokes": ".opencv",
    "inpaint_telea": ".opencv",
})

__all__ = [
    "INPAINTERS",
    "INPAINTER_PRECISIONS",
    "check_precision",
    "inpaint",
    "inpaint_biharmonic",
    "inpaint_harmonic",
    "inpaint_learned",
    "inpaint_navier_stokes",
    "inpaint_telea",
    "load_inpainter",
]
