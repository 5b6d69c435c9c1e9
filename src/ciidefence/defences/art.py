"""Defences as Adversarial Robustness Toolbox preprocessors.

>>> from art.estimators.classification import PyTorchClassifier
>>> from ciidefence.defences.art import ARTPreprocessor
>>> estimator = PyTorchClassifier(
...     classifier, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 224, 224), nb_classes=1000,
...     clip_values=(0.0, 1.0), preprocessing_defences=[ARTPreprocessor(CIIDefence(classifier))],
... )
"""

from __future__ import annotations

import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from ..randomness import drawing_again, generator_state
from .bpda import Approximation, bpda_approximation


class ARTPreprocessor(PreprocessorPyTorch):
    """ART's preprocessor contract around any ``images -> images`` defence.

    ``forward`` runs the real defence. ``estimate_forward`` is the
    differentiable approximation that BPDA backpropagates through. When
    ``forward`` is given an input that requires gradients, its output has the
    real defence's values and the approximation's gradients (a
    straight-through estimator), so BPDA also works when ART differentiates
    the forward pass directly. For a randomised defence the approximation
    there makes the same random draws as the defence (the same resize and
    padding, the same boxes), so each gradient belongs to the transformation
    whose output it differentiates; the next call draws afresh (EOT).

    Parameters
    ----------
    defence : nn.Module
        Maps ``(B, 3, H, W)`` in [0, 1] to images of the same shape.
    approximation : str or callable
        ``"identity"``, ``"differentiable"`` (see :mod:`ciidefence.defences.bpda`)
        or a differentiable callable.
    device_type : {"cpu", "gpu"}
    generator : torch.Generator, optional
        Source of the draws of a randomised defence and of its approximation;
        set it (e.g. per batch, from what is computed) to make an attack's EOT
        samples reproducible. None uses torch's default generator.
    """

    def __init__(
        self,
        defence: torch.nn.Module,
        approximation: str | Approximation = "identity",
        device_type: str = "cpu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=False, apply_predict=True)
        self.defence = defence
        self.generator = generator
        self.approximation = (
            bpda_approximation(defence, approximation) if isinstance(approximation, str) else approximation
        )

    def forward(self, x: torch.Tensor, y=None):
        before = generator_state(self.generator) if x.requires_grad else []
        with torch.no_grad():
            purified = self.defence(x.detach(), generator=self.generator)
        if x.requires_grad:
            # the gradient must belong to the transformation whose output is returned, so the approximation
            # makes the forward pass's random draws again (EOT then averages over transformations, each exact)
            with drawing_again(self.generator, before):
                estimate = self.approximation(x, self.generator)
            purified = purified + (estimate - estimate.detach())  # exactly zero, but carries the gradient
        return purified, y

    def estimate_forward(self, x: torch.Tensor, y=None) -> torch.Tensor:
        return self.approximation(x, self.generator)
