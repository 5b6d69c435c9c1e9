"""Classical inpainting from OpenCV: Telea's fast marching and Navier-Stokes."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..arrays import fill_each


def _cv2_inpaint(image: np.ndarray, mask: np.ndarray, radius: float, flag: int) -> np.ndarray:
    image8 = np.round(image * 255.0).astype(np.uint8)
    filled = cv2.inpaint(image8, mask.astype(np.uint8), radius, flag)
    return filled.astype(np.float32) / 255.0


def inpaint_telea(images: torch.Tensor, masks: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
    """Fill masked pixels by fast marching from the mask border.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool, True where pixels are to be filled.
    radius : float
        Neighbourhood radius in pixels considered for each filled pixel.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1]; equal to ``images`` outside the masks.
        Filled values are quantised to 8 bits.

    References
    ----------
    A. Telea, "An Image Inpainting Technique Based on the Fast Marching
    Method", Journal of Graphics Tools 9(1), 2004.
    """
    return fill_each(images, masks, lambda im, m: _cv2_inpaint(im, m, radius, cv2.INPAINT_TELEA))


def inpaint_navier_stokes(
    images: torch.Tensor, masks: torch.Tensor, radius: float = 3.0
) -> torch.Tensor:
    """Fill masked pixels by propagating isophotes (fluid-dynamics analogy).

    Same shapes and ranges as :func:`inpaint_telea`.

    References
    ----------
    M. Bertalmio, A. L. Bertozzi and G. Sapiro, "Navier-Stokes, Fluid Dynamics,
    and Image and Video Inpainting", CVPR 2001.
    """
    return fill_each(images, masks, lambda im, m: _cv2_inpaint(im, m, radius, cv2.INPAINT_NS))
