"""A classifier with a defence in front of it."""

from __future__ import annotations

import torch
from torch import nn

from ..models.base import Classifier
from ..randomness import Generators


class DefendedClassifier(nn.Module):
    """``classifier(defence(images))`` as one module.

    Parameters
    ----------
    classifier : Classifier
        Makes the decision on the purified images.
    defence : nn.Module
        Maps ``(B, 3, H, W)`` images in [0, 1] to images of the same shape,
        e.g. :class:`~ciidefence.defences.CIIDefence`.
    """

    def __init__(self, classifier: Classifier, defence: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.defence = defence

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of the defended images; ``generator`` goes to a randomised defence."""
        purified = self.defence(images) if generator is None else self.defence(images, generator=generator)
        return self.classifier(purified)
