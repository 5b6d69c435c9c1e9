"""Biharmonic inpainting from scikit-image."""

from __future__ import annotations

import torch
from skimage.restoration import inpaint_biharmonic as _skimage_biharmonic

from ..arrays import fill_each


def inpaint_biharmonic(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fill masked pixels with the smooth (biharmonic) continuation of their border.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool, True where pixels are to be filled.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1]; equal to ``images`` outside the masks.

    References
    ----------
    S. B. Damelin and N. S. Hoang, "On Surface Completion and Image Inpainting
    by Biharmonic Functions: Numerical Aspects", IJMMS 2018.
    """
    return fill_each(
        images,
        masks,
        lambda image, mask: _skimage_biharmonic(image, mask, channel_axis=-1, split_into_regions=True),
    )
