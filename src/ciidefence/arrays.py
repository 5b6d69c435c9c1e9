"""Moving image batches between torch and the numpy layout of OpenCV and scikit-image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def to_numpy_images(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` tensor to a writable float32 ``(B, H, W, 3)`` array."""
    return images.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy().copy()


def from_numpy_images(arrays: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 3)`` array to a ``(B, 3, H, W)`` tensor clipped to [0, 1], on ``like``'s device."""
    tensor = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32)).permute(0, 3, 1, 2)
    return tensor.to(like.device, like.dtype).clamp(0, 1)


def fill_each(
    images: torch.Tensor,
    masks: torch.Tensor,
    fill: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> torch.Tensor:
    """Apply ``fill(image HxWx3, mask HxW)`` to each image whose mask is not empty.

    The result equals ``images`` exactly outside the masks.
    """
    arrays = to_numpy_images(images)
    for image, mask in zip(arrays, masks.cpu().numpy()):
        if mask.any():
            image[...] = fill(image, mask)
    return torch.where(masks[:, None], from_numpy_images(arrays, images), images)
