"""Wrapping a user's own network as a :class:`Classifier`."""

from __future__ import annotations

import os

from torch import nn

from .base import Classifier
from .checkpoints import load_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def custom_classifier(
    network: nn.Module,
    body: nn.Module,
    head: nn.Module,
    checkpoint: str | os.PathLike | None = None,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    linear_head: nn.Linear | None = None,
    name: str = "custom",
    class_names: list[str] | None = None,
) -> Classifier:
    """Wrap any network, optionally loading a checkpoint into it first.

    Parameters
    ----------
    network : nn.Module
        The whole network; ``checkpoint`` is loaded into it, strictly.
    body, head : nn.Module
        Parts of ``network``: ``head(body(x))`` must equal ``network(x)``,
        with ``body`` ending at the last convolutional feature maps.
    checkpoint : path, optional
        A ``.safetensors`` file or a ``torch.save``'d state dict, read with
        ``weights_only=True``.
    input_size, mean, std
        Square input side and per-channel scaling the network was trained with.
    linear_head : nn.Linear, optional
        Give it when ``head`` is global average pooling plus this layer, for
        exact CAMs; otherwise Grad-CAM is used.

    Examples
    --------
    >>> import torchvision
    >>> net = torchvision.models.resnet18(weights=None)
    >>> body = nn.Sequential(*list(net.children())[:-2])
    >>> head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    >>> clf = custom_classifier(net, body, head, linear_head=net.fc)
    >>> clf.cam_method
    'cam'
    """
    if checkpoint is not None:
        load_weights(network, checkpoint, name)
    return Classifier(
        name, body, head, input_size, mean, std, linear_head=linear_head, class_names=class_names
    ).eval()
