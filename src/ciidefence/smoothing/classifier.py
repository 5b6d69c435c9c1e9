"""A smoothed classifier you can deploy: the class with a certified L2 radius, or an abstain.

:class:`SmoothedClassifier` wraps the unchanged classifier and a front
(nothing, the learned Gaussian denoiser, the wavelet shrinkage or any defence
of the registry) and answers each image with CERTIFY
(:func:`~ciidefence.smoothing.certify.certify`). An abstain
(:data:`~ciidefence.smoothing.certify.ABSTAIN`) means the noisy copies did
not agree enough to certify any class: the input is ambiguous under noise
(or near a decision boundary), and a caller should treat it as "no answer".
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple

import torch
from torch import nn

from ..models.base import Classifier
from ..randomness import Generators, per_image, seeded_generator
from ..validation import check_images
from .certify import ABSTAIN, Certificate, certify, check_smoothing

__all__ = ["ABSTAIN", "SmoothedClassifier", "SmoothedOutput"]


class SmoothedOutput(NamedTuple):
    """``classes``: ``(B,)`` int64, the certified class or :data:`ABSTAIN`; ``radii``: ``(B,)`` float, the
    certified L2 radius in [0, 1] pixel units at the classifier's view (0 where abstaining); ``certificates``:
    each image's :class:`~ciidefence.smoothing.certify.Certificate`."""

    classes: torch.Tensor
    radii: torch.Tensor
    certificates: list[Certificate]


class SmoothedClassifier(nn.Module):
    """Randomized smoothing of ``front`` then ``classifier``, certified image by image.

    Parameters
    ----------
    classifier : Classifier
        The unchanged classifier.
    sigma : float
        The noise's standard deviation, in [0, 1] pixel units at the classifier's view.
    front : nn.Module, optional
        ``front(images, generator=...)`` applied to each noisy copy before the classifier (a denoiser or a defence).
    n0, n, alpha : int, int, float
        CERTIFY's selection draws, estimation draws and significance level. The
        largest radius it can certify is about ``σ Φ⁻¹(alpha ** (1 / n))``
        (2.46 σ at the defaults); the cost is ``n0 + n`` passes of the front and
        the classifier per image.
    batch_size : int
        Noisy copies evaluated at once.

    ``forward(images, generator=None)`` takes ``(B, 3, H, W)`` in [0, 1] at any
    size (brought to the classifier's view), and returns a
    :class:`SmoothedOutput`. Without ``generator`` (one per image, or one for
    the batch), each image's noise comes from a generator seeded by its pixels
    and σ: the same image always gets the same answer.
    """

    def __init__(self, classifier: Classifier, sigma: float, front: nn.Module | None = None, n0: int = 100,
                 n: int = 1000, alpha: float = 0.001, batch_size: int = 100) -> None:
        super().__init__()
        check_smoothing(sigma, n0, n, alpha)
        self.classifier, self.front = classifier, front
        self.sigma, self.n0, self.n, self.alpha, self.batch_size = sigma, n0, n, alpha, batch_size

    def base(self, noisy: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """The base classifier's logits on noisy views ``(B, 3, S, S)``."""
        return self.classifier(self.front(noisy, generator=generator) if self.front is not None else noisy)

    def forward(self, images: torch.Tensor, generator: Generators = None) -> SmoothedOutput:
        check_images(images)
        with torch.no_grad():
            views = self.classifier.prepare(images)
        generators = per_image(generator, len(views))
        certificates = []
        for view, each in zip(views, generators, strict=True):
            noise = each if each is not None else self._generator(view)
            front_generator = seeded_generator(noise.initial_seed(), "front")
            base = functools.partial(self.base, generator=front_generator)
            certificates.append(certify(base, view, self.sigma, self.n0, self.n, self.alpha, self.batch_size, noise))
        classes = torch.tensor([c.prediction for c in certificates], dtype=torch.int64)
        radii = torch.tensor([c.radius for c in certificates], dtype=torch.float64)
        return SmoothedOutput(classes, radii, certificates)

    def _generator(self, view: torch.Tensor) -> torch.Generator:
        pixels = hashlib.sha256(view.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()
        return seeded_generator("smoothing", self.sigma, pixels)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, n0={self.n0}, n={self.n}, alpha={self.alpha}"
