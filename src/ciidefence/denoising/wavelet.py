"""Wavelet shrinkage denoising in YCbCr, as in Pixel Deflection."""

from __future__ import annotations

import torch
from skimage.restoration import denoise_wavelet

from ..arrays import from_numpy_images, to_numpy_images
from . import check_shrinkage

_SKIMAGE_METHODS = {"bayes": "BayesShrink", "visu": "VisuShrink"}


def wavelet_denoise(
    images: torch.Tensor,
    sigma: float = 0.04,
    wavelet: str = "db1",
    levels: int | None = None,
    threshold: str = "bayes",
) -> torch.Tensor:
    """Soft-threshold wavelet shrinkage of each image, in YCbCr.

    A thin wrapper of :func:`skimage.restoration.denoise_wavelet` with
    ``mode="soft"`` and ``convert2ycbcr=True``, applied image by image.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    sigma : float
        Assumed noise standard deviation, for images in [0, 1]; 0.04 in Pixel
        Deflection. As it goes to 0 the result goes to ``images``.
    wavelet : str
        Any discrete wavelet PyWavelets knows, e.g. ``"db1"``, ``"db2"``, ``"sym4"``.
    levels : int, optional
        Decomposition levels; by default three fewer than the most possible.
    threshold : {"bayes", "visu"}
        BayesShrink (a threshold per sub-band, Chang et al. 2000) or
        VisuShrink (the universal threshold ``sigma * sqrt(2 log n)``,
        Donoho and Johnstone 1994).

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].

    References
    ----------
    A. Prakash et al., "Deflecting Adversarial Attacks with Pixel Deflection",
    CVPR 2018.
    """
    check_shrinkage(sigma, threshold)
    arrays = to_numpy_images(images)
    for image in arrays:
        image[...] = denoise_wavelet(
            image,
            sigma=sigma,
            wavelet=wavelet,
            mode="soft",
            wavelet_levels=levels,
            convert2ycbcr=True,
            method=_SKIMAGE_METHODS[threshold],
            rescale_sigma=True,
            channel_axis=-1,
        )
    return from_numpy_images(arrays, images)
