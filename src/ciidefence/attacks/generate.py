"""Running an attack of the registry on a batch: one function, seeded from what is attacked."""

from __future__ import annotations

import numpy as np
import torch

from ..randomness import global_seed
from .registry import attack_spec


def generate(estimator, name: str, images: torch.Tensor, labels: torch.Tensor, eps: float | np.ndarray | None,
             params: dict, batch_size: int, seed: int) -> torch.Tensor:
    """Adversarial examples of ``images`` under attack ``name`` of :data:`~ciidefence.attacks.ATTACKS`.

    Parameters
    ----------
    estimator : art.estimators.classification.PyTorchClassifier
        What is attacked (the bare classifier, or a defended one under BPDA), e.g. from
        :func:`~ciidefence.attacks.estimators.art_estimator`.
    images : torch.Tensor
        ``(B, 3, S, S)`` in [0, 1], at the classifier's view.
    labels : torch.Tensor
        ``(B,)`` class indices the attack moves away from.
    eps : float, array or None
        The budget (per image as a ``(B, 1, 1, 1)`` array); None for minimum-norm attacks.
    seed : int
        Seeds the random starts ART draws from numpy's and torch's global generators, for this call only.

    Returns
    -------
    torch.Tensor
        ``(B, 3, S, S)`` in [0, 1], on ``images``' device.
    """
    attack = attack_spec(name).build(estimator, eps, dict(params), batch_size)
    with global_seed(seed):
        adversarial = attack.generate(images.detach().cpu().numpy(), y=labels.cpu().numpy())
    return torch.from_numpy(adversarial).to(images.device).clamp(0, 1)
