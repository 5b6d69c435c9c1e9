"""Denoising the image outside (or after) the inpainted regions."""

from .wavelet import THRESHOLDS, wavelet_denoise

__all__ = ["THRESHOLDS", "wavelet_denoise"]
