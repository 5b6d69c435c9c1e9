"""Randomized smoothing: CERTIFY and PREDICT (Cohen, Rosenfeld and Kolter, ICML 2019), and a smoothed classifier.

The base classifier ``f`` is a front (nothing, a denoiser, or any defence)
followed by the unchanged classifier. The smoothed classifier ``g`` returns
the class ``f`` returns most often on ``x + δ``, ``δ ~ N(0, σ² I)``, with the
noise in [0, 1] pixel units at the classifier's ``S x S`` view and the noisy
image clamped to [0, 1] (the clamp is part of ``f``). When the top class has
probability at least ``p_lower > 1/2``, ``g`` is constant inside the L2 ball
of radius ``σ Φ⁻¹(p_lower)`` around ``x``: no perturbation smaller than that
changes its answer, whatever the attacker knows.

Every noise draw comes from the ``generator`` given, so a run that seeds it
from what is certified (the seed, the model, σ and the image) draws the same
noise for every front (a paired comparison), and again when resumed.

References
----------
.. [1] J. Cohen, E. Rosenfeld and J. Z. Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
       ICML 2019.
.. [2] H. Salman, M. Sun, G. Yang, A. Kapoor and J. Z. Kolter, "Denoised Smoothing: A Provable Defense for
       Pretrained Classifiers", NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ConfigError

ABSTAIN = -1
"""The class returned where the smoothed classifier abstains."""

BaseClassifier = Callable[[torch.Tensor], torch.Tensor]
"""``f``: noisy images ``(B, 3, S, S)`` in [0, 1] to logits ``(B, classes)``."""


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """The one-sided ``(1 - alpha)`` Clopper-Pearson lower confidence bound of a binomial proportion.

    The ``alpha`` quantile of ``Beta(successes, trials - successes + 1)``; 0 when there is no success.
    """
    from scipy.stats import beta

    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    return 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """``σ Φ⁻¹(p_lower)``: the L2 radius certified by a top-class probability of at least ``p_lower`` (> 1/2)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_lower))


def check_smoothing(sigma: float, n0: int, n: int, alpha: float) -> None:
    """Raise :class:`ConfigError` for a noise level, sample counts or significance level out of range."""
    if not 0 < sigma < float("inf"):
        raise ConfigError(f"sigma must be positive and finite, got {sigma}")
    if n0 < 1 or n < 1:
        raise ConfigError(f"the sample counts must be positive, got n0={n0} and n={n}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha must lie in (0, 0.5), got {alpha}")


def class_counts(base: BaseClassifier, view: torch.Tensor, sigma: float, samples: int, batch_size: int,
                 generator: torch.Generator) -> torch.Tensor:
    """How often ``base`` returns each class on ``samples`` noisy copies of one image.

    Parameters
    ----------
    base : callable
        Noisy images ``(B, 3, S, S)`` in [0, 1] to logits.
    view : torch.Tensor
        One image ``(3, S, S)`` in [0, 1], at the classifier's view.
    sigma : float
        The noise's standard deviation, in [0, 1] pixel units.
    samples, batch_size : int
        Noisy copies in all, and at once.
    generator : torch.Generator
        A CPU generator: the noise is drawn on the CPU (the same draws on every device) and moved to the image's.

    Returns
    -------
    torch.Tensor
        ``(classes,)`` int64 counts summing to ``samples``.
    """
    counts = torch.zeros(0, dtype=torch.int64)
    left = samples
    with torch.no_grad():
        while left > 0:
            size = min(batch_size, left)
            noise = torch.randn((size, *view.shape), generator=generator).to(view.device, view.dtype)
            noisy = (view.unsqueeze(0) + sigma * noise).clamp_(0, 1)
            logits = base(noisy)
            found = torch.bincount(logits.argmax(1).cpu(), minlength=logits.shape[1])
            counts = found if not len(counts) else counts + found
            left -= size
    return counts


@dataclass(frozen=True)
class Certificate:
    """What CERTIFY says of one image.

    Attributes
    ----------
    prediction : int
        The certified class, or :data:`ABSTAIN`.
    radius : float
        The certified L2 radius (0.0 when abstaining).
    top_class : int
        The class most frequent among the ``n0`` selection draws.
    count : int
        How many of the ``n`` estimation draws gave ``top_class``.
    p_lower : float
        The one-sided Clopper-Pearson lower bound of its probability.
    """

    prediction: int
    radius: float
    top_class: int
    count: int
    p_lower: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


def certify(base: BaseClassifier, view: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int, generator: torch.Generator) -> Certificate:
    """Cohen et al.'s CERTIFY on one image: select the top class on ``n0`` draws, bound its probability on ``n``
    fresh draws at level ``alpha``, abstain unless the bound exceeds 1/2.

    The returned class differs from the smoothed classifier's, or its radius is
    too large, with probability at most ``alpha``.
    """
    check_smoothing(sigma, n0, n, alpha)
    selection = class_counts(base, view, sigma, n0, batch_size, generator)
    top_class = int(selection.argmax())
    count = int(class_counts(base, view, sigma, n, batch_size, generator)[top_class])
    p_lower = clopper_pearson_lower(count, n, alpha)
    if p_lower <= 0.5:
        return Certificate(ABSTAIN, 0.0, top_class, count, p_lower)
    return Certificate(top_class, certified_radius(p_lower, sigma), top_class, count, p_lower)


def predict(base: BaseClassifier, view: torch.Tensor, sigma: float, n: int, alpha: float, batch_size: int,
            generator: torch.Generator) -> int:
    """Cohen et al.'s PREDICT on one image: the top class of ``n`` draws if a two-sided binomial test rejects a
    tie with the runner-up at level ``alpha``, else :data:`ABSTAIN`.

    It returns a class other than the smoothed classifier's with probability at most ``alpha``.
    """
    from scipy.stats import binomtest

    check_smoothing(sigma, 1, n, alpha)
    counts = class_counts(base, view, sigma, n, batch_size, generator)
    top, second = counts.topk(2).values.tolist()
    first = int(counts.argmax())
    return first if binomtest(top, top + second, 0.5).pvalue <= alpha else ABSTAIN
