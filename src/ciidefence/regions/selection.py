"""Choosing the boxes to inpaint: local maxima of the CAMs, suppressed, as boxes.

Peaks are found on the CAMs at the classifier's input size ``S``; box sizes
``2w + 1`` are in those input pixels, so a box covers the same share of the
image whatever its resolution. :func:`boxes_to_mask` maps boxes back to the
image's own pixels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..randomness import Generators, per_image, randint
from . import REGION_METHODS

if TYPE_CHECKING:
    from ..models.base import Classifier
    from .cam import ClassEvidence


def _max_filter3(maps: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3 x 3 neighbourhood maximum: ``max_pool2d(maps, 3, 1, 1)``, several times faster on CPUs."""
    padded = F.pad(maps, (1, 1, 1, 1), value=-math.inf)
    rows = torch.maximum(torch.maximum(padded[..., :, :-2], padded[..., :, 1:-1]), padded[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def select_peaks(
    maps: torch.Tensor, num_peaks: int, min_distance: int, min_ratio: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``num_peaks`` highest local maxima of each map, greedily suppressed.

    A local maximum is a pixel with a positive value no smaller than any of its
    8 neighbours and at least ``min_ratio`` times its map's maximum. Peaks are
    taken highest first; after each, every candidate
    within Chebyshev distance ``min_distance - 1`` of it is discarded, so any
    two returned peaks of a map differ by at least ``min_distance`` in row or
    column.

    Parameters
    ----------
    maps : torch.Tensor
        ``(B, M, H, W)`` float maps, e.g. one CAM per class.
    num_peaks : int
        Peaks wanted per map, at least 1.
    min_distance : int
        At least 1.
    min_ratio : float
        Weakest peak kept, as a fraction of its map's maximum, in [0, 1).

    Returns
    -------
    peaks : torch.Tensor
        ``(B, M, num_peaks, 2)`` long (row, column) coordinates.
    valid : torch.Tensor
        ``(B, M, num_peaks)`` bool; False where a map has fewer peaks (its
        coordinates are then 0 and meaningless).
    """
    if num_peaks < 1 or min_distance < 1:
        raise ConfigError("num_peaks and min_distance must be at least 1")
    height, width = maps.shape[-2:]
    strong = maps >= min_ratio * maps.amax(dim=(-2, -1), keepdim=True)
    is_peak = (maps == _max_filter3(maps)) & (maps > 0) & strong
    candidates = torch.where(is_peak, maps, -math.inf)
    rows = torch.arange(height, device=maps.device)
    cols = torch.arange(width, device=maps.device)
    peaks, valid = [], []
    for _ in range(num_peaks):
        value, index = candidates.flatten(2).max(dim=2)
        row, col = index // width, index % width
        peaks.append(torch.stack((row, col), dim=-1))
        valid.append(value > -math.inf)
        near_rows = (rows - row[..., None]).abs() < min_distance  # (B, M, H)
        near_cols = (cols - col[..., None]).abs() < min_distance  # (B, M, W)
        candidates = candidates.masked_fill(near_rows[..., :, None] & near_cols[..., None, :], -math.inf)
    peaks_t = torch.stack(peaks, dim=2)
    valid_t = torch.stack(valid, dim=2)
    return peaks_t * valid_t[..., None], valid_t


def peaks_to_boxes(
    peaks: torch.Tensor, half_width: int, scale: float = 1.0, top: int = 0, left: int = 0
) -> torch.Tensor:
    """Square ``(2w + 1)``-pixel boxes around peaks, mapped to image coordinates.

    Parameters
    ----------
    peaks : torch.Tensor
        ``(..., 2)`` (row, column) in the classifier's input pixels.
    half_width : int
        ``w``; the box spans ``[c - w, c + w]`` input pixels.
    scale, top, left
        The view geometry (:meth:`Classifier.view_geometry`): an image pixel
        ``y`` maps to input pixel ``y * scale - top``.

    Returns
    -------
    torch.Tensor
        ``(..., 4)`` float boxes ``(y0, x0, y1, x1)`` in image pixels, half-open,
        not yet clipped to the image.
    """
    centre = peaks.to(torch.float64)
    offset = torch.tensor([top, left], dtype=torch.float64, device=peaks.device)
    start = (centre - half_width + offset) / scale
    stop = (centre + half_width + 1 + offset) / scale
    return torch.cat((start, stop), dim=-1)


def boxes_to_mask(boxes: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The union of boxes as a boolean mask, clipped to the image.

    Parameters
    ----------
    boxes : torch.Tensor
        ``(B, N, 4)`` float ``(y0, x0, y1, x1)`` half-open boxes in image pixels.
        A pixel is inside when its centre is.
    valid : torch.Tensor
        ``(B, N)`` bool; invalid boxes are ignored.
    height, width : int
        Image size.

    Returns
    -------
    torch.Tensor
        ``(B, height, width)`` bool.
    """
    device = boxes.device
    ys = torch.arange(height, device=device, dtype=torch.float64) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float64) + 0.5
    in_rows = (ys >= boxes[..., 0:1]) & (ys < boxes[..., 2:3]) & valid[..., None]
    in_cols = (xs >= boxes[..., 1:2]) & (xs < boxes[..., 3:4])
    overlap = torch.bmm(in_rows.transpose(1, 2).float(), in_cols.float())
    return overlap > 0


def random_peaks(batch: int, count: int, size: int, generator: Generators = None) -> torch.Tensor:
    """``count`` box centres per image, uniform over an ``size x size`` view: ``(batch, count, 2)`` long."""
    return torch.stack([randint(0, size, (count, 2), image_generator)
                        for image_generator in per_image(generator, batch)])


def select_regions(
    classifier: Classifier,
    images: torch.Tensor,
    evidence: ClassEvidence | None,
    method: str,
    top_k: int,
    peaks: int,
    half_width: int,
    min_ratio: float = 0.0,
    generator: Generators = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The boxes chosen by ``method``, and their union mask at the images' size.

    Parameters
    ----------
    classifier : Classifier
        Gives the view geometry from the classifier's input to image pixels.
    images : torch.Tensor
        ``(B, 3, H, W)``; only its shape and device are used.
    evidence : ClassEvidence or None
        The top-k CAMs; needed for ``method="cam"``.
    method : {"cam", "random", "none"}
        See :data:`REGION_METHODS`.
    top_k, peaks : int
        Classes and peaks per class: ``"random"`` places ``top_k * peaks`` boxes.
    half_width : int
        Boxes are ``2 w + 1`` classifier-input pixels square.
    min_ratio : float
        For ``"cam"``: weakest peak kept, as a fraction of its map's maximum.
    generator : torch.Generator or sequence of them, optional
        For ``"random"``: one for the batch or one per image.

    Returns
    -------
    mask : torch.Tensor
        ``(B, H, W)`` bool.
    boxes : torch.Tensor
        ``(B, N, 4)`` in image pixels; ``N = k * p``, or 0 for ``"none"``.
    valid : torch.Tensor
        ``(B, N)`` bool.
    """
    batch = images.shape[0]
    height, width = images.shape[-2:]
    if method == "cam":
        if evidence is None:
            raise ConfigError("regions 'cam' need the class evidence (CAMs)")
        centres, valid = select_peaks(evidence.cams, peaks, 2 * half_width + 1, min_ratio)
        centres, valid = centres.flatten(1, 2), valid.flatten(1)
    elif method in ("random", "none"):
        count = 0 if method == "none" else top_k * peaks
        centres = random_peaks(batch, count, classifier.input_size, generator).to(images.device)
        valid = torch.ones(batch, count, dtype=torch.bool, device=images.device)
    else:
        raise ConfigError(f"unknown regions {method!r}; choose one of: {', '.join(REGION_METHODS)}")
    scale, top, left = classifier.view_geometry(height, width)
    boxes = peaks_to_boxes(centres, half_width, scale, top, left)
    return boxes_to_mask(boxes, valid, height, width), boxes, valid
