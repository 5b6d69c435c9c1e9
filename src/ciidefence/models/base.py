"""The one interface every classifier implements.

A :class:`Classifier` takes RGB images in [0, 1], brings them to its square
input size, applies its own input scaling, and splits the network into a
convolutional ``body`` (images to feature maps) and a ``head`` (feature maps to
logits). The split is what lets class activation maps come from the same
forward pass that ranks the classes.
"""

from __future__ import annotations

import csv
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_images

CROP_FRACTION = 0.875
"""Centre-crop fraction of the standard ImageNet evaluation transform (224 of 256)."""


class Classifier(nn.Module):
    """An image classifier split into body and head, with its own input transform.

    Parameters
    ----------
    name : str
        Name used in reports, e.g. ``"efficientnet_lite0"``.
    body : nn.Module
        Maps scaled ``(B, 3, S, S)`` inputs to feature maps ``(B, C, h, w)``.
    head : nn.Module
        Maps feature maps to logits ``(B, num_classes)``.
    input_size : int
        Side ``S`` of the square input the network expects.
    mean, std : tuple of float
        Per-channel input scaling ``(x - mean) / std`` applied to images in [0, 1].
    linear_head : nn.Linear, optional
        The last layer of ``head`` when ``head`` is global average pooling followed
        by this linear layer (dropout aside): class activation maps are then
        exact (Zhou et al. 2016). Without it, Grad-CAM is used.
    class_names : list of str, optional
        Human-readable name of each class index.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        name: str,
        body: nn.Module,
        head: nn.Module,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        linear_head: nn.Linear | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.head = head
        self.input_size = input_size
        self.linear_head = linear_head
        self.class_names = class_names
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # oneDNN's convolutions run about 1.6x faster on the CPU in channels-last layout
        self.to(memory_format=torch.channels_last)
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the classifier computes (that of its input scaling, which every classifier has, weights or not)."""
        return self.mean.device

    @property
    def view_side(self) -> int:
        """The shorter side an image is resized to before the centre ``S x S`` crop: ``round(S / 0.875)``."""
        return round(self.input_size / CROP_FRACTION)

    @property
    def cam_method(self) -> str:
        """``"cam"`` for a global-pool + linear head, otherwise ``"gradcam"``."""
        return "cam" if self.linear_head is not None else "gradcam"

    def view_geometry(self, height: int, width: int) -> tuple[float, int, int]:
        """Where the network's square input lies in an image of the given size.

        Returns
        -------
        scale : float
            Input pixels per image pixel.
        top, left : int
            Offset of the centre crop in the resized image, in input pixels.
        """
        size = self.input_size
        if (height, width) == (size, size):
            return 1.0, 0, 0
        scale = self.view_side / min(height, width)
        resized_h, resized_w = round(height * scale), round(width * scale)
        return scale, (resized_h - size) // 2, (resized_w - size) // 2

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Bring ``(B, 3, H, W)`` images to the network's ``(B, 3, S, S)`` view.

        Images already ``S x S`` are used as they are. Others get the standard
        ImageNet evaluation transform: the shorter side is resized (bilinear,
        antialiased) to ``S / 0.875`` and the centre ``S x S`` is cropped.
        """
        height, width = images.shape[-2:]
        scale, top, left = self.view_geometry(height, width)
        if scale == 1.0 and (height, width) == (self.input_size, self.input_size):
            return images
        resized = F.interpolate(
            images,
            size=(round(height * scale), round(width * scale)),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return resized[..., top : top + self.input_size, left : left + self.input_size]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps ``(B, C, h, w)`` of the last convolutional layer."""
        check_images(images)
        return self.body((self.prepare(images) - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, 3, H, W)`` in [0, 1]."""
        return self.head(self.features(images))

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or ``"class <index>"`` when names are unknown."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, indexed by class."""
    text = resources.files("ciidefence.data").joinpath("imagenet_classes.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return [row["class_name"] for row in sorted(rows, key=lambda r: int(r["class_index"]))]
