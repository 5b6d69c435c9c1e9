"""Classifiers behind one interface: the embedded default, torchvision's, and yours."""

from __future__ import annotations

import os

from ..errors import ModelError
from .base import Classifier, imagenet_class_names
from .custom import custom_classifier
from .efficientnet import efficientnet_lite0
from .torchvision_models import TORCHVISION_MODELS, torchvision_classifier

DEFAULT_MODEL = "efficientnet_lite0"
MODEL_NAMES = (DEFAULT_MODEL, *TORCHVISION_MODELS)


def load_classifier(
    name: str = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    random_weights: bool = False,
) -> Classifier:
    """Build a classifier by name, in eval mode, on the CPU.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    checkpoint : path, optional
        A state dict to load instead of the default weights.
    random_weights : bool
        Skip loading weights (for tests of the plumbing).

    Raises
    ------
    ModelError
        For an unknown name or missing weights (a :class:`CheckpointError` for a
        checkpoint that does not fit).
    """
    if name == DEFAULT_MODEL:
        return efficientnet_lite0(checkpoint, random_weights)
    if name in TORCHVISION_MODELS:
        return torchvision_classifier(name, checkpoint, random_weights)
    raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


__all__ = [
    "Classifier",
    "DEFAULT_MODEL",
    "MODEL_NAMES",
    "custom_classifier",
    "efficientnet_lite0",
    "imagenet_class_names",
    "load_classifier",
    "torchvision_classifier",
]
