"""Denoising the image outside (or after) the inpainted regions."""

from .wavelet import THRESHOLDS, wavelet_denoise
from .wavelet_torch import wavelet_denoise_torch

__all__ = ["THRESHOLDS", "wavelet_denoise", "wavelet_denoise_torch"]
