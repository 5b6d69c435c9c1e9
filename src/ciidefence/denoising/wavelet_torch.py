"""Wavelet shrinkage in torch: batched, differentiable, on any device.

The same computation as :func:`ciidefence.denoising.wavelet_denoise` (which
wraps scikit-image), written with ``ptwt`` so that gradients flow through it
(BPDA's "differentiate what is differentiable") and so that it runs on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pywt
import torch
from skimage.color.colorconv import ycbcr_from_rgb

from . import check_shrinkage


def _soft(coefficients: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return coefficients.sign() * (coefficients.abs() - threshold).clamp(min=0)


def _shrink_channel(
    channel: torch.Tensor, sigma: torch.Tensor, wavelet: str, levels: int, threshold: str
) -> torch.Tensor:
    """Shrink one ``(B, H, W)`` channel in [0, 1] with per-image noise levels ``sigma`` ``(B,)``."""
    import ptwt

    height, width = channel.shape[-2:]
    coefficients = ptwt.wavedec2(channel, wavelet, mode="symmetric", level=levels)
    variance = (sigma * sigma)[:, None, None]
    eps = torch.finfo(channel.dtype).eps
    if threshold == "visu":
        universal = (sigma * math.sqrt(2 * math.log(height * width)))[:, None, None]
    shrunk: list[Any] = [coefficients[0]]
    for details in coefficients[1:]:
        level: list[torch.Tensor] = []
        for detail in details:
            if threshold == "bayes":
                detail_variance = (detail * detail).mean(dim=(-2, -1), keepdim=True)
                cut = variance / (detail_variance - variance).clamp(min=eps).sqrt()
            else:
                cut = universal
            level.append(_soft(detail, cut))
        # ptwt >= 1.0 returns named tuples of details, older releases plain tuples
        shrunk.append(type(details)(*level) if hasattr(details, "_make") else tuple(level))
    return ptwt.waverec2(tuple(shrunk), wavelet)[..., :height, :width]


def wavelet_denoise_torch(
    images: torch.Tensor,
    sigma: float = 0.04,
    wavelet: str = "db1",
    levels: int | None = None,
    threshold: str = "bayes",
) -> torch.Tensor:
    """Soft-threshold wavelet shrinkage in YCbCr, differentiable and batched.

    Follows :func:`skimage.restoration.denoise_wavelet` with ``mode="soft"``,
    ``convert2ycbcr=True``, ``rescale_sigma=True``: each YCbCr channel is
    rescaled to [0, 1] (and ``sigma`` with it), shrunk with BayesShrink or
    VisuShrink thresholds, and mapped back.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1], any floating dtype and device.
    sigma, wavelet, levels, threshold
        As in :func:`ciidefence.denoising.wavelet_denoise`.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1]; gradients flow to ``images``.
    """
    check_shrinkage(sigma, threshold)
    height, width = images.shape[-2:]
    if levels is None:
        levels = max(pywt.dwtn_max_level((height, width), wavelet) - 3, 1)
    to_ycbcr = torch.as_tensor(ycbcr_from_rgb, dtype=images.dtype, device=images.device)
    to_rgb = torch.as_tensor(np.linalg.inv(ycbcr_from_rgb), dtype=images.dtype, device=images.device)
    ycbcr = torch.einsum("ij,bjhw->bihw", to_ycbcr, images)
    row_norms = to_ycbcr.norm(dim=1)
    channels = []
    for index in range(3):
        channel = ycbcr[:, index]
        low = channel.amin(dim=(-2, -1), keepdim=True)
        span = channel.amax(dim=(-2, -1), keepdim=True) - low
        flat = span <= 0
        safe_span = torch.where(flat, torch.ones_like(span), span)
        normalised = (channel - low) / safe_span
        channel_sigma = sigma * row_norms[index] / safe_span[:, 0, 0]
        shrunk = _shrink_channel(normalised, channel_sigma, wavelet, levels, threshold) * safe_span + low
        channels.append(torch.where(flat, channel, shrunk))
    rgb = torch.einsum("ij,bjhw->bihw", to_rgb, torch.stack(channels, dim=1))
    return rgb.clamp(0, 1)
