"""ART estimators around our classifiers: bare, or defended for BPDA, with optional EOT."""

from __future__ import annotations

import numpy as np
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn

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


def with_eot(estimator: PyTorchClassifier, eot_samples: int) -> EOTPyTorchClassifier:
    """``estimator`` (network, loss, preprocessing and clipping) as an :class:`EOTPyTorchClassifier`.

    For an ART attack that builds an estimator of its own around ours (APGD,
    with its own loss): that one is a plain ``PyTorchClassifier``, which
    would silently drop EOT.
    """
    eot = _estimator(estimator.model, estimator.input_shape, estimator.nb_classes,
                     estimator.preprocessing_defences, estimator.device, eot_samples, loss=estimator._loss)
    for flag in ("_reduce_labels", "_int_labels", "_probability_labels"):  # how the attack's loss reads labels
        setattr(eot, flag, getattr(estimator, flag))
    return eot


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
    device = classifier.device
    with torch.no_grad():
        probe = torch.zeros(1, 3, classifier.input_size, classifier.input_size, device=device)
        num_classes = classifier(probe).shape[1]
    return _estimator(classifier, (3, classifier.input_size, classifier.input_size), num_classes, preprocessors,
                      device, eot_samples)


class _ClassSubset(nn.Module):
    """``model``'s outputs for ``classes`` only, in that order."""

    def __init__(self, model: nn.Module, classes: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.classes.to(x.device)]


def restricted_estimator(estimator: EOTPyTorchClassifier, classes: np.ndarray) -> EOTPyTorchClassifier:
    """``estimator`` with only the outputs ``classes``: its network, preprocessing, clipping and EOT.

    Output ``i`` of the result is ``estimator``'s output ``classes[i]``.
    """
    return _estimator(_ClassSubset(estimator.model, classes), estimator.input_shape, len(classes),
                      estimator.preprocessing_defences, estimator.device, estimator.eot_samples)


def _estimator(model: nn.Module, input_shape: tuple, num_classes: int, preprocessors: list | None,
               device: torch.device, eot_samples: int, loss: nn.Module | None = None) -> EOTPyTorchClassifier:
    return EOTPyTorchClassifier(
        model,
        loss=torch.nn.CrossEntropyLoss() if loss is None else loss,
        input_shape=input_shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        preprocessing_defences=preprocessors,
        device_type="gpu" if device.type == "cuda" else "cpu",
        eot_samples=eot_samples,
    )
