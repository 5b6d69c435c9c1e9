"""A torch-native inpainter for small holes: push-pull fill, then harmonic smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..arrays import hole_box

MARGIN = 4


def _push_pull(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fill where ``weights`` is 0 from ever coarser averages of the known values.

    ``values`` are premultiplied by ``weights`` (the known share of each pixel).
    Written as two loops, down the pyramid and back up, so that it scripts.
    """
    levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (known, alpha, complete) per level
    known = values / weights.clamp(min=1e-6)
    complete = (weights > 0).flatten(1).all(dim=1)  # per image, so that no image's fill depends on another's
    while not bool(complete.all()) and min(values.shape[-2], values.shape[-1]) > 1:
        levels.append((known, weights.clamp(0, 1), complete))
        values = F.avg_pool2d(values, 2, ceil_mode=True)
        weights = F.avg_pool2d(weights, 2, ceil_mode=True)
        known = values / weights.clamp(min=1e-6)
        complete = (weights > 0).flatten(1).all(dim=1)
    filled = known
    for level in range(len(levels) - 1, -1, -1):
        known, alpha, complete = levels[level]
        up = F.interpolate(filled, size=[known.shape[-2], known.shape[-1]], mode="bilinear", align_corners=False)
        filled = torch.where(complete[:, None, None, None], known, alpha * known + (1 - alpha) * up)
    return filled


def harmonic_fill(images: torch.Tensor, holes: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """:func:`inpaint_harmonic` on whole images, with ``holes`` ``(B, 1, H, W)`` bool; scriptable, and each
    image's fill is the same whatever the batch."""
    weights = (~holes).to(images.dtype)
    filled = torch.where(holes, _push_pull(images * weights, weights), images)
    for _ in range(iterations):
        padded = F.pad(filled, (1, 1, 1, 1), mode="replicate")
        average = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:]) / 4
        filled = torch.where(holes, average, images)
    return filled.clamp(0, 1)


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
    output = images.clone()
    output[..., rows, cols] = harmonic_fill(images[..., rows, cols], masks[:, None, rows, cols], iterations)
    return output
