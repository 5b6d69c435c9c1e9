"""What an evaluation attacks and defends: each image decoded once, kept in a bounded cache."""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..errors import CIIDefenceError
from ..images import load_image
from ..models.base import Classifier
from .data import LabelledImage

CACHE_BYTES = 2048 * 3 * 224 * 224 * 4
"""Decoded inputs kept in memory (1.2 GB): every view of a 2,048-image run at 224 px, or a few hundred images at
full resolution."""


class Inputs:
    """A run's inputs, ``(3, H, W)`` in [0, 1]: the classifier's ``S x S`` view of each image, or (at the
    resolutions that attack the full image) the image itself; or the error message where it cannot be read.

    Recent inputs are kept, up to :data:`CACHE_BYTES`, so memory stays bounded on large runs.
    """

    def __init__(self, classifier: Classifier, resolution: str, max_pixels: int) -> None:
        self.classifier, self.resolution, self.max_pixels = classifier, resolution, max_pixels
        self._kept: OrderedDict[str, torch.Tensor | str] = OrderedDict()
        self._bytes = 0

    def get(self, item: LabelledImage) -> torch.Tensor | str:
        if item.key in self._kept:
            self._kept.move_to_end(item.key)
        else:
            self.add({item.key: self.read(item)})
        return self._kept[item.key]

    def read(self, item: LabelledImage) -> torch.Tensor | str:
        """:meth:`get`, read from the file every time (nothing is kept)."""
        try:
            image = load_image(item.path, self.max_pixels, self.classifier.view_side)
            return self.classifier.prepare(image[None])[0] if self.resolution == "view" else image
        except CIIDefenceError as error:
            return str(error)

    def shipped(self, batch: list[LabelledImage]) -> dict[str, torch.Tensor | str]:
        """A batch's decoded inputs (or each error message), for workers that cannot read the data."""
        return {item.key: self.read(item) for item in batch}

    def add(self, inputs: dict[str, torch.Tensor | str]) -> None:
        """Use these decoded inputs instead of reading the files (see :meth:`shipped`); the oldest are dropped
        beyond :data:`CACHE_BYTES`."""
        for key, value in inputs.items():
            if key in self._kept:
                self._bytes -= _size(self._kept.pop(key))
            self._kept[key] = value
            self._bytes += _size(value)
        while len(self._kept) > 1 and self._bytes > CACHE_BYTES:
            self._bytes -= _size(self._kept.popitem(last=False)[1])


def _size(value: torch.Tensor | str) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0
