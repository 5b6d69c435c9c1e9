"""Fusing the inpainted and the denoised image."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FUSIONS = ("mask", "denoise-after")
"""``"mask"``: inpainted inside the mask, denoised elsewhere (the paper's).
``"denoise-after"``: the inpainted image, denoised as a whole."""


def denoiser_input(images: torch.Tensor, inpainted: torch.Tensor, method: str = "mask") -> torch.Tensor:
    """What the denoiser works on under fusion ``method``: the input (``"mask"``) or the inpainted image."""
    return images if method == "mask" else inpainted


def fuse(inpainted: torch.Tensor, denoised: torch.Tensor, masks: torch.Tensor, method: str = "mask") -> torch.Tensor:
    """Combine the two branches.

    Parameters
    ----------
    inpainted, denoised : torch.Tensor
        ``(B, 3, H, W)``; ``denoised`` is the denoiser applied to
        :func:`denoiser_input`.
    masks : torch.Tensor
        ``(B, H, W)`` bool, the inpainted region.
    method : {"mask", "denoise-after"}
        ``"mask"`` takes ``inpainted`` inside ``masks`` and ``denoised``
        elsewhere (the paper's), each pixel exactly one of the two inputs';
        ``"denoise-after"`` returns ``denoised``, the inpainted image denoised
        as a whole.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``.

    References
    ----------
    A. Gupta and E. Rahtu, "CIIDefence: Defeating Adversarial Attacks by Fusing
    Class-Specific Image Inpainting and Image Denoising", ICCV 2019.
    """
    import torch

    if method == "denoise-after":
        return denoised
    return torch.where(masks[:, None], inpainted, denoised)
