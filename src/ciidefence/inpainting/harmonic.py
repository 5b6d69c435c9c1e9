"""A torch-native inpainter for small holes: push-pull fill, then harmonic smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..arrays import hole_box

MARGIN = 4


def _push_pull(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fill where ``weights`` is 0 from ever coarser averages of the known values.

    ``values`` are premultiplied by ``weights`` (the known share of each pixel).
    """
    known = values / weights.clamp(min=1e-6)
    complete = (weights > 0).flatten(1).all(dim=1)  # per image, so that no image's fill depends on another's
    if bool(complete.all()) or min(values.shape[-2:]) <= 1:
        return known
    coarse = _push_pull(F.avg_pool2d(values, 2, ceil_mode=True), F.avg_pool2d(weights, 2, ceil_mode=True))
    up = F.interpolate(coarse, size=values.shape[-2:], mode="bilinear", align_corners=False)
    alpha = weights.clamp(0, 1)
    return torch.where(complete[:, None, None, None], known, alpha * known + (1 - alpha) * up)


def inpaint_harmonic(images: torch.Tensor, masks: torch.Tensor, iterations: int = 20,
                     crop_to_holes: bool = True) -> torch.Tensor:
    """Fill masked pixels smoothly from their border, batched on any device.

    A push-pull pass (averages of the known pixels over an image pyramid)
    gives a first fill; Jacobi iterations of Laplace's equation then smooth it
    towards the harmonic interpolant of the border values. Only the bounding
    box of all masks (plus a margin) is processed, so the cost follows the
    holes, not the image size; that box is the union over the batch, so an
    image's fill can then depend on the other images' holes.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    masks : torch.Tensor
        ``(B, H, W)`` bool, True where pixels are to be filled.
    iterations : int
        Jacobi iterations after the push-pull fill.
    crop_to_holes : bool
        Process only the holes' bounding box (faster on large images); False
        processes the whole images, and each image's fill is then the same
        whatever the batch.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)`` in [0, 1]; equal to ``images`` outside the masks.

    References
    ----------
    S. J. Gortler, R. Grzeszczuk, R. Szeliski and M. F. Cohen, "The
    Lumigraph", SIGGRAPH 1996 (push-pull).
    """
    if not bool(masks.any()):
        return images
    if crop_to_holes:
        rows, cols = hole_box(masks.any(dim=0).cpu().numpy(), MARGIN)
    else:
        rows, cols = slice(None), slice(None)
    crop = images[..., rows, cols]
    hole = masks[:, None, rows, cols]
    weights = (~hole).to(images.dtype)
    filled = torch.where(hole, _push_pull(crop * weights, weights), crop)
    for _ in range(iterations):
        padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
        average = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
        filled = torch.where(hole, average, crop)
    output = images.clone()
    output[..., rows, cols] = filled.clamp(0, 1)
    return output
