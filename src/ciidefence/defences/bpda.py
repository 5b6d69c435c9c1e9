"""Differentiable approximations of a defence for BPDA (Athalye et al., ICML 2018).

BPDA runs the real, non-differentiable defence forward and an approximation
backward. Two approximations:

``identity``
    ``g(x) = x``: the defence is treated as the identity on the backward pass.
``differentiable``
    The defence's own ``differentiable_approximation(images, generator=None)``
    method, for defences that have one: differentiate what is differentiable
    (e.g. the wavelet shrinkage), identity through the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ..randomness import Generators

APPROXIMATIONS = ("identity", "differentiable")

Approximation = Callable[["torch.Tensor", "Generators"], "torch.Tensor"]
"""``approximation(images, generator) -> images``, differentiable in ``images``."""


def _identity(images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    return images


def has_differentiable_approximation(defence: object) -> bool:
    return callable(getattr(defence, "differentiable_approximation", None))


def bpda_approximation(defence: torch.nn.Module, kind: str) -> Approximation:
    """The differentiable stand-in for ``defence`` named ``kind``.

    Parameters
    ----------
    defence : nn.Module
        The defence; ``"differentiable"`` needs one with a
        ``differentiable_approximation`` method.
    kind : {"identity", "differentiable"}

    Returns
    -------
    callable
        ``approximation(images, generator)``: ``(B, 3, H, W)`` images to images
        of the same shape, differentiably.
    """
    if kind == "identity":
        return _identity
    if kind != "differentiable":
        raise ConfigError(f"unknown BPDA approximation {kind!r}; choose one of: {', '.join(APPROXIMATIONS)}")
    if not has_differentiable_approximation(defence):
        raise ConfigError(f"{type(defence).__name__} has no differentiable approximation; use 'identity'")
    return cast(Approximation, defence.differentiable_approximation)
