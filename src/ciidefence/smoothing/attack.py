"""The certificate checked, not believed: SmoothAdv's attack on the smoothed classifier (Salman et al., NeurIPS 2019).

PGD in L2 on the Monte-Carlo soft smoothed classifier
``G(x) = mean_i softmax(f(x + δ_i))``: each step ascends the cross-entropy
``-log G(x)_y`` with ``samples`` fresh noise draws, and the perturbation is
projected onto the L2 ball of the budget and kept inside [0, 1]. A front that
is not differentiable is crossed straight through its differentiable
approximation, as BPDA does. :func:`flips_within` then asks the smoothed
classifier (PREDICT, fresh noise) what it says of the adversarial image: a
sound certificate of radius r is never flipped by a perturbation smaller
than r, save with probability alpha.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .certify import ABSTAIN, BaseClassifier, predict


def smoothadv(base: BaseClassifier, view: torch.Tensor, label: int, budget: float, sigma: float,
              generator: torch.Generator, steps: int = 20, samples: int = 16) -> torch.Tensor:
    """An adversarial version of ``view`` within L2 distance ``budget``, against the smoothed ``base``.

    Parameters
    ----------
    base : callable
        Noisy images ``(B, 3, S, S)`` in [0, 1] to logits, differentiable.
    view : torch.Tensor
        ``(3, S, S)`` in [0, 1].
    label : int
        The class to move away from (the certified one).
    budget : float
        L2 radius of the perturbation, in [0, 1] pixel units.
    generator : torch.Generator
        The noise draws of the attack's steps (on the CPU).
    steps, samples : int
        PGD steps, and noise draws averaged per step.

    Returns
    -------
    torch.Tensor
        ``(3, S, S)`` in [0, 1], at L2 distance at most ``budget`` from ``view``.
    """
    delta = torch.zeros_like(view)
    step_size = 2.5 * budget / steps
    target = torch.tensor([label], device=view.device)
    for _ in range(steps):
        delta.requires_grad_(True)
        noise = torch.randn((samples, *view.shape), generator=generator).to(view.device, view.dtype)
        noisy = (view + delta + sigma * noise).clamp(0, 1)
        soft = F.softmax(base(noisy), dim=1).mean(0, keepdim=True)
        loss = F.nll_loss(torch.log(soft.clamp_min(1e-12)), target)
        (gradient,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step_size * gradient / gradient.norm().clamp_min(1e-12)
            delta = delta * min(1.0, budget * (1 - 1e-5) / max(float(delta.norm()), 1e-12))  # float32's rounding
            delta = (view + delta).clamp(0, 1) - view  # clamping only shortens it
    return (view + delta).detach()


@dataclass(frozen=True)
class Check:
    """The attack's outcome on one certified image: ``prediction`` is PREDICT's on the adversarial image."""

    budget: float
    l2: float
    prediction: int
    flipped: bool


def flips_within(base: BaseClassifier, differentiable: BaseClassifier, view: torch.Tensor, certified: int,
                 radius: float, sigma: float, n: int, alpha: float, batch_size: int, generator: torch.Generator,
                 steps: int = 20, samples: int = 16) -> Check:
    """Attack a certified image inside its radius, and ask the smoothed classifier about the result.

    ``base`` is the base classifier as certified; ``differentiable`` the same
    with gradients (the front crossed by its approximation). The budget is a
    hair under ``radius``; the check counts as flipped when PREDICT returns a
    class other than ``certified`` (an abstain is no contradiction).
    """
    budget = radius * (1 - 1e-4)
    adversarial = smoothadv(differentiable, view, certified, budget, sigma, generator, steps, samples)
    prediction = predict(base, adversarial, sigma, n, alpha, batch_size, generator)
    return Check(budget, float((adversarial - view).norm()), prediction,
                 prediction not in (certified, ABSTAIN))


def straight_through(front: Callable[[torch.Tensor], torch.Tensor],
                     approximation: Callable[[torch.Tensor], torch.Tensor],
                     classifier: Callable[[torch.Tensor], torch.Tensor]) -> BaseClassifier:
    """``classifier(front(x))`` with gradients: the front's value, the approximation's gradient (BPDA)."""

    def base(noisy: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            value = front(noisy)
        stand_in = approximation(noisy)
        return classifier(stand_in + (value - stand_in).detach())

    return base
