"""ART estimators around our classifiers: bare, or defended for BPDA, with optional EOT."""

from __future__ import annotations

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier

from ..models.base import Classifier


class EOTPyTorchClassifier(PyTorchClassifier):
    """A PyTorchClassifier whose gradients are averaged over ``eot_samples`` calls.

    Expectation over Transformation (Athalye et al., ICML 2018): for a defence
    that draws random numbers, the attacker follows the mean gradient. For a
    deterministic defence every sample is the same and EOT only costs time.
    """

    def __init__(self, *args, eot_samples: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eot_samples = eot_samples

    def _average(self, method, *args, **kwargs) -> np.ndarray:
        if self.eot_samples == 1:
            return method(*args, **kwargs)
        total = method(*args, **kwargs)
        for _ in range(self.eot_samples - 1):
            total = total + method(*args, **kwargs)
        return total / self.eot_samples

    def loss_gradient(self, x, y, **kwargs):
        return self._average(super().loss_gradient, x, y, **kwargs)

    def class_gradient(self, x, label=None, **kwargs):
        return self._average(super().class_gradient, x, label, **kwargs)


def art_estimator(
    classifier: Classifier,
    preprocessors: list | None = None,
    eot_samples: int = 1,
) -> PyTorchClassifier:
    """An ART classifier over ``classifier`` taking ``(B, 3, S, S)`` images in [0, 1].

    Parameters
    ----------
    classifier : Classifier
        Applies its own input scaling; ART adds none.
    preprocessors : list of ART PyTorch preprocessors, optional
        E.g. ``[ARTPreprocessor(CIIDefence(classifier), "identity")]`` for BPDA.
    eot_samples : int
        Gradient samples averaged per step (EOT).
    """
    device = next(classifier.parameters()).device
    with torch.no_grad():
        probe = torch.zeros(1, 3, classifier.input_size, classifier.input_size, device=device)
        num_classes = classifier(probe).shape[1]
    return EOTPyTorchClassifier(
        classifier,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(3, classifier.input_size, classifier.input_size),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=preprocessors,
        device_type="gpu" if device.type == "cuda" else "cpu",
        eot_samples=eot_samples,
    )

