"""Denoising the image outside (or after) the inpainted regions: wavelet shrinkage.

Two backends compute the same shrinkage: ``"torch"`` (ptwt; batched, on any
device, differentiable) and ``"skimage"`` (scikit-image, image by image on
the CPU; the reference the torch one is tested against, equal within 1e-4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

THRESHOLDS = ("bayes", "visu")
"""BayesShrink (a threshold per sub-band) or VisuShrink (the universal threshold)."""

WAVELET_BACKENDS = ("torch", "skimage")


def check_shrinkage(sigma: float, threshold: str) -> None:
    """Raise :class:`ConfigError` for a negative or non-finite ``sigma`` or an unknown ``threshold``."""
    if threshold not in THRESHOLDS:
        raise ConfigError(f"unknown threshold {threshold!r}; choose one of: {', '.join(THRESHOLDS)}")
    if not 0 <= sigma < float("inf"):
        raise ConfigError(f"sigma must be non-negative and finite, got {sigma}")


def wavelet_shrinkage(
    images: torch.Tensor,
    sigma: float = 0.04,
    wavelet: str = "db1",
    levels: int | None = None,
    threshold: str = "bayes",
    backend: str = "torch",
) -> torch.Tensor:
    """Soft-threshold wavelet shrinkage in YCbCr with the chosen backend.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    sigma, wavelet, levels, threshold
        As in :func:`wavelet_denoise`.
    backend : {"torch", "skimage"}
        :func:`wavelet_denoise_torch` or :func:`wavelet_denoise`.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].

    Raises
    ------
    ConfigError
        If ``levels`` is more than the image's size allows for ``wavelet``.
    """
    if levels is not None:
        import pywt

        most = pywt.dwtn_max_level(tuple(images.shape[-2:]), wavelet)
        if levels > most:
            raise ConfigError(f"wavelet_levels {levels} is more than a {images.shape[-2]}x{images.shape[-1]} image "
                              f"allows with {wavelet} ({most})")
    if backend == "torch":
        from .wavelet_torch import wavelet_denoise_torch

        return wavelet_denoise_torch(images, sigma, wavelet, levels, threshold)
    if backend == "skimage":
        from .wavelet import wavelet_denoise

        return wavelet_denoise(images, sigma, wavelet, levels, threshold)
    raise ConfigError(f"unknown wavelet backend {backend!r}; choose one of: {', '.join(WAVELET_BACKENDS)}")


__getattr__, __dir__ = lazy_exports(__name__, {
    "wavelet_denoise": ".wavelet",
    "wavelet_denoise_torch": ".wavelet_torch",
})

__all__ = ["THRESHOLDS", "WAVELET_BACKENDS", "check_shrinkage", "wavelet_denoise", "wavelet_denoise_torch",
           "wavelet_shrinkage"]
