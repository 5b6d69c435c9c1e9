"""Differentiable approximations of a defence for BPDA (Athalye et al., ICML 2018).

BPDA runs the real, non-differentiable defence forward and an approximation
backward. Three approximations:

``identity``
    ``g(x) = x``: the defence is treated as the identity on the backward pass.
``differentiable``
    The defence's own ``differentiable_approximation(images, generator=None)``
    method, for defences that have one: differentiate what is differentiable
    (e.g. the wavelet shrinkage), identity through the rest.
``inpainter``
    For CIIDefence with a torch-native inpainter (the trained ``deepfill``
    network, or ``harmonic``): its ``inpainter_approximation`` differentiates
    through the wavelet shrinkage and the inpainter itself, identity only
    through the box selection and the thresholds' non-smooth points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ..randomness import Generators

APPROXIMATIONS = ("identity", "differentiable", "inpainter")
_METHODS = {"differentiable": "differentiable_approximation", "inpainter": "inpainter_approximation"}

Approximation = Callable[["torch.Tensor", "Generators"], "torch.Tensor"]
"""``approximation(images, generator) -> images``, differentiable in ``images``."""


def _identity(images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    return images


def has_approximation(defence: object, kind: str) -> bool:
    """Whether ``defence`` offers the BPDA approximation ``kind``."""
    return kind == "identity" or callable(getattr(defence, _METHODS.get(kind, ""), None))


def bpda_approximation(defence: torch.nn.Module, kind: str) -> Approximation:
    """The differentiable stand-in for ``defence`` named ``kind``.

    Parameters
    ----------
    defence : nn.Module
        The defence; ``"differentiable"`` needs one with a
        ``differentiable_approximation`` method.
    kind : {"identity", "differentiable", "inpainter"}

    Returns
    -------
    callable
        ``approximation(images, generator)``: ``(B, 3, H, W)`` images to images
        of the same shape, differentiably.
    """
    if kind == "identity":
        return _identity
    if kind not in _METHODS:
        raise ConfigError(f"unknown BPDA approximation {kind!r}; choose one of: {', '.join(APPROXIMATIONS)}")
    if not has_approximation(defence, kind):
        raise ConfigError(f"{type(defence).__name__} has no {kind!r} approximation; use 'identity'")
    return cast(Approximation, getattr(defence, _METHODS[kind]))
