"""Classifiers behind one interface: the embedded default, torchvision's, and yours."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from ..errors import ModelError

if TYPE_CHECKING:
    from .base import Classifier

DEFAULT_MODEL = "efficientnet_lite0"
EMBEDDED_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""Classifiers whose weights ship in registry packages (:data:`ciidefence.models.efficientnet.LITE_VARIANTS`)."""
TORCHVISION_NAMES = ("resnet50", "resnet101", "vgg16", "inception_v3")
"""The paper's classifiers, built by :func:`ciidefence.models.torchvision_models.torchvision_classifier`."""
MODEL_NAMES = (*EMBEDDED_NAMES, *TORCHVISION_NAMES)


def load_classifier(
    name: str = DEFAULT_MODEL,
    checkpoint: str | os.PathLike | None = None,
    random_weights: bool = False,
) -> Classifier:
    """Build a classifier by name, in eval mode, on the CPU.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`, or ``package.module:factory``: a function
        of no arguments returning a :class:`Classifier` (see
        :func:`custom_classifier`), named by that path in results.
    checkpoint : path, optional
        A state dict to load instead of the default weights.
    random_weights : bool
        Skip loading weights (for tests of the plumbing).

    Raises
    ------
    ModelError
        For an unknown name or missing weights (a :class:`CheckpointError` for a
        checkpoint that does not fit).

    Notes
    -----
    The weights are frozen (``requires_grad=False``): attacks need gradients
    for the input only, and ART's backward pass would otherwise also compute
    every weight's gradient (1.3x the time of a PGD step). Networks wrapped
    with :func:`custom_classifier` are left as they are.
    """
    if name in EMBEDDED_NAMES:
        from .efficientnet import efficientnet_lite

        return efficientnet_lite(name, checkpoint, random_weights).requires_grad_(False)
    if name in TORCHVISION_NAMES:
        from .torchvision_models import torchvision_classifier

        return torchvision_classifier(name, checkpoint, random_weights).requires_grad_(False)
    if ":" in name:
        return _imported_classifier(name, checkpoint, random_weights)
    raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}, or your own as "
                     f"package.module:factory")


def _imported_classifier(path: str, checkpoint: str | os.PathLike | None, random_weights: bool) -> Classifier:
    """A user's classifier: ``factory()`` returning a :class:`Classifier` (e.g. from :func:`custom_classifier`),
    named by ``path`` in every result and seed."""
    from ..errors import ConfigError, one_line
    from ..importing import import_object
    from .base import Classifier

    if checkpoint is not None or random_weights:
        raise ModelError(f"model {path!r}: its factory loads its own weights (no --checkpoint)")
    factory = import_object(path, f"model {path!r}")
    try:
        made = factory()  # type: ignore[operator]
    except Exception as error:
        raise ConfigError(f"model {path!r}: the factory failed: {type(error).__name__}: {one_line(error)}") from None
    if not isinstance(made, Classifier):
        raise ModelError(f"model {path!r}: the factory returned {type(made).__name__}, not a Classifier (wrap your "
                         f"network with ciidefence.custom_classifier)")
    made.name = path
    return made.eval()


_EXPORTS = {
    "Classifier": ".base",
    "imagenet_class_names": ".base",
    "custom_classifier": ".custom",
    "efficientnet_lite": ".efficientnet",
    "torchvision_classifier": ".torchvision_models",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["DEFAULT_MODEL", "MODEL_NAMES", "TORCHVISION_NAMES", "load_classifier", *sorted(_EXPORTS)]
