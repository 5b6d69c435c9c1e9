"""Differentiable approximations of CIIDefence for BPDA (Athalye et al., ICML 2018).

BPDA runs the real, non-differentiable defence forward and an approximation
backward. Two approximations:

``identity``
    ``g(x) = x``: the defence is treated as the identity on the backward pass.
``differentiable``
    Differentiate what is differentiable: exact gradients through a torch
    implementation of the wavelet shrinkage, identity through the inpainting.
    The region mask is recomputed from ``x`` (not differentiated).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..denoising import wavelet_denoise_torch
from ..errors import ConfigError
from ..fusion import fuse
from ..regions.cam import class_activation_maps
from .ciid import CIIDefence, select_regions

APPROXIMATIONS = ("identity", "differentiable")


def bpda_approximation(defence: torch.nn.Module, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The differentiable stand-in for ``defence`` named ``kind``.

    Parameters
    ----------
    defence : nn.Module
        The defence; ``"differentiable"`` needs a :class:`CIIDefence`.
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
    if not isinstance(defence, CIIDefence):
        raise ConfigError("the 'differentiable' approximation is defined for CIIDefence only")
    config, classifier = defence.config, defence.classifier

    def approximate(images: torch.Tensor) -> torch.Tensor:
        denoised = wavelet_denoise_torch(images, config.sigma, config.wavelet, config.wavelet_levels, config.threshold)
        if config.fusion == "denoise-after":
            return denoised
        with torch.no_grad():
            evidence = class_activation_maps(classifier, images.detach(), config.top_k)
            mask, _, _ = select_regions(classifier, evidence, *images.shape[-2:], config)
        return fuse(images, denoised, mask)

    return approximate
