"""Moving image batches between torch and the numpy layout of OpenCV and scikit-image."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
import torch


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="ciidefence")


def map_images(function: Callable[..., np.ndarray], *arrays: Sequence) -> list[np.ndarray]:
    """``[function(a, b, ...) for a, b, ... in zip(*arrays)]`` across all cores.

    For per-image numpy work (OpenCV, scikit-image, PyWavelets) that releases
    the GIL; one image runs in the calling thread.
    """
    items = list(zip(*arrays, strict=True))
    if len(items) <= 1 or (os.cpu_count() or 1) == 1:
        return [function(*item) for item in items]
    return list(_pool().map(lambda item: function(*item), items))


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` tensor to a writable float32 ``(B, H, W, 3)`` array."""
    return images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy().copy()


def from_numpy_images(arrays: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` array to a ``(B, 3, H, W)`` tensor clipped to [0, 1], on ``like``'s device."""
    tensor = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32)).permute(0, 3, 1, 2)
    return tensor.to(like.device, like.dtype).clamp(0, 1)


FILL_MARGIN = 16


def hole_box(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of a non-empty ``(H, W)`` bool mask, grown by ``margin``."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(cols[0] - margin, 0), cols[-1] + margin + 1))


def fill_each(
    images: torch.Tensor,
    masks: torch.Tensor,
    fill: Callable[[np.ndarray, np.ndarray], np.ndarray],
    margin: int = FILL_MARGIN,
) -> torch.Tensor:
    """Apply ``fill(image HxWx3, mask HxW)`` to each image whose mask is not empty, across all cores.

    Only the bounding box of each mask, grown by ``margin`` pixels, is
    converted and filled, so time and memory follow the holes rather than the
    image size; ``fill`` sees at least ``margin`` pixels of context around
    every hole where the image has them. The result equals ``images`` exactly
    outside the masks.
    """
    output = images.clone()
    jobs = []
    for index, mask in enumerate(masks.cpu().numpy()):
        if mask.any():
            rows, cols = hole_box(mask, margin)
            jobs.append((index, rows, cols, to_numpy_images(images[index : index + 1, :, rows, cols])[0],
                         mask[rows, cols]))
    filled = map_images(fill, [job[3] for job in jobs], [job[4] for job in jobs])
    for (index, rows, cols, _, mask), array in zip(jobs, filled, strict=True):
        values = from_numpy_images(array[None], images)[0]
        hole = torch.from_numpy(mask).to(images.device)
        output[index, :, rows, cols] = torch.where(hole, values, images[index, :, rows, cols])
    return output
