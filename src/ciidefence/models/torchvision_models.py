"""The paper's classifiers from torchvision: ResNet-50/101, VGG-16, Inception-v3.

Weights are never downloaded: they come from a checkpoint the user names, or
from torchvision's local cache (``$TORCH_HOME/hub/checkpoints``) when the file
torchvision would have downloaded is already there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .base import Classifier, imagenet_class_names
from .checkpoints import load_weights

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

_INCEPTION_BODY = [
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
]


def _split_resnet(net: Any) -> tuple[nn.Module, nn.Module, nn.Linear | None]:
    body = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return body, nn.Sequential(net.avgpool, nn.Flatten(), net.fc), net.fc


def _split_vgg(net: Any) -> tuple[nn.Module, nn.Module, nn.Linear | None]:
    return net.features, nn.Sequential(net.avgpool, nn.Flatten(), net.classifier), None


def _split_inception(net: Any) -> tuple[nn.Module, nn.Module, nn.Linear | None]:
    body = nn.Sequential(*(getattr(net, name) for name in _INCEPTION_BODY))
    return body, nn.Sequential(net.avgpool, nn.Flatten(), net.dropout, net.fc), net.fc


def _build(arch: str) -> nn.Module:
    import torchvision.models as tvm

    if arch == "inception_v3":
        # transform_input stays off: our own scaling (x - 0.5) / 0.5 is what it emulates.
        return tvm.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    return getattr(tvm, arch)(weights=None)


# name -> (weights enum name in torchvision, input size, mean, std, split)
_SPECS: dict[str, tuple[str, int, tuple, tuple, Callable]] = {
    "resnet50": ("ResNet50_Weights", 224, _IMAGENET_MEAN, _IMAGENET_STD, _split_resnet),
    "resnet101": ("ResNet101_Weights", 224, _IMAGENET_MEAN, _IMAGENET_STD, _split_resnet),
    "vgg16": ("VGG16_Weights", 224, _IMAGENET_MEAN, _IMAGENET_STD, _split_vgg),
    "inception_v3": ("Inception_V3_Weights", 299, (0.5,) * 3, (0.5,) * 3, _split_inception),
}

TORCHVISION_MODELS = tuple(_SPECS)  # the same names as ciidefence.models.TORCHVISION_NAMES (tested)


def cached_weights_path(name: str) -> Path:
    """Where torchvision's cache would hold the ImageNet weights of ``name``."""
    import torchvision.models as tvm

    weights = getattr(tvm, _SPECS[name][0]).IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def torchvision_classifier(
    name: str, checkpoint: str | os.PathLike | None = None, random_weights: bool = False
) -> Classifier:
    """Build one of :data:`TORCHVISION_MODELS` as a :class:`Classifier`.

    Parameters
    ----------
    name : str
        ``"resnet50"``, ``"resnet101"``, ``"vgg16"`` or ``"inception_v3"``.
    checkpoint : path, optional
        State dict to load. Without it, torchvision's cached ImageNet weights.
    random_weights : bool
        Keep the random initialisation (for tests); no file is read.

    Raises
    ------
    ModelError
        If no weights are given and none are cached.
    """
    _, input_size, mean, std, split = _SPECS[name]
    network = _build(name)
    if not random_weights:
        if checkpoint is None:
            checkpoint = cached_weights_path(name)
            if not checkpoint.is_file():
                raise ModelError(
                    f"no weights for {name}: pass a checkpoint (a state dict file) or put "
                    f"torchvision's {checkpoint.name} in {checkpoint.parent}; nothing is downloaded"
                )
        load_weights(network, checkpoint, name)
    body, head, linear = split(network)
    return Classifier(
        name, body, head, input_size, mean, std, linear_head=linear,
        class_names=imagenet_class_names(),
    ).eval()
