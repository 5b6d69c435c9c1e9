"""Differentiable approximations of a defence for BPDA (Athalye et al., ICML 2018).

BPDA runs the real, non-differentiable defence forward and an approximation
backward. Two approximations:

``identity``
    ``g(x) = x``: the defence is treated as the identity on the backward pass.
``differentiable``
    The defence's own ``differentiable_approximation(images)`` method, for
    defences that have one: differentiate what is differentiable (e.g. the
    wavelet shrinkage), identity through the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError

APPROXIMATIONS = ("identity", "differentiable")


def has_differentiable_approximation(defence: torch.nn.Module | None) -> bool:
    return callable(getattr(defence, "differentiable_approximation", None))


def bpda_approximation(defence: torch.nn.Module, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
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
        Maps ``(B, 3, H, W)`` images to images of the same shape, differentiably.
    """
    if kind == "identity":
        return lambda images: images
    if kind != "differentiable":
        raise ConfigError(f"unknown BPDA approximation {kind!r}; choose one of: {', '.join(APPROXIMATIONS)}")
    if not has_differentiable_approximation(defence):
        raise ConfigError(f"{type(defence).__name__} has no differentiable approximation; use 'identity'")
    return defence.differentiable_approximation
