"""Fusing the inpainted and the denoised image."""

from __future__ import annotations

import torch

FUSIONS = ("mask", "denoise-after")
"""``"mask"``: inpainted inside the mask, denoised elsewhere (the paper's).
``"denoise-after"``: the inpainted image, denoised as a whole."""


def fuse(inpainted: torch.Tensor, denoised: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Take ``inpainted`` inside ``masks`` and ``denoised`` elsewhere.

    Parameters
    ----------
    inpainted, denoised : torch.Tensor
        ``(B, 3, H, W)``.
    masks : torch.Tensor
        ``(B, H, W)`` bool.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``, each pixel exactly one of the two inputs'.

    References
    ----------
    A. Gupta and E. Rahtu, "CIIDefence: Defeating Adversarial Attacks by Fusing
    Class-Specific Image Inpainting and Image Denoising", ICCV 2019.
    """
    return torch.where(masks[:, None], inpainted, denoised)
