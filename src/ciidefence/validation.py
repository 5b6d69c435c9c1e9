"""Checks of tensor arguments shared by every stage of the pipeline."""

from __future__ import annotations

import torch

from .errors import InputError

RANGE_TOLERANCE = 1e-5
"""Values this far outside [0, 1] are accepted: float rounding in attacks produces them."""


def check_images(images: object, name: str = "images", min_size: int = 2) -> torch.Tensor:
    """Check that ``images`` is a batch of RGB images in [0, 1].

    Parameters
    ----------
    images : torch.Tensor
        Expected shape ``(B, 3, H, W)``, float32, finite, values in [0, 1]
        (up to :data:`RANGE_TOLERANCE`).
    name : str
        Name used in error messages.
    min_size : int
        Smallest accepted height and width.

    Returns
    -------
    torch.Tensor
        ``images`` itself, unchanged.

    Raises
    ------
    InputError
        If any of the conditions above does not hold.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if min(images.shape[-2:]) < min_size:
        raise InputError(
            f"{name} must be at least {min_size}x{min_size} pixels, got "
            f"{images.shape[-1]}x{images.shape[-2]}"
        )
    if images.dtype != torch.float32:
        raise InputError(f"{name} must be float32 in [0, 1], got {images.dtype}; convert it with images.float()")
    values = images.detach()
    if not torch.isfinite(values).all():
        raise InputError(f"{name} contains NaN or Inf values")
    lo, hi = float(values.min()), float(values.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise InputError(f"{name} must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]")
    return images


def check_masks(masks: object, images: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """Check that ``masks`` is a boolean ``(B, H, W)`` mask matching ``images``.

    Raises
    ------
    InputError
        If the type, dtype or shape is wrong.
    """
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise InputError(f"{name} must be a boolean torch.Tensor")
    expected = (images.shape[0], *images.shape[-2:])
    if tuple(masks.shape) != expected:
        raise InputError(f"{name} must have shape {expected}, got {tuple(masks.shape)}")
    return masks
