"""Confidence intervals of the accuracies every report gives."""

from __future__ import annotations

import math
from dataclasses import dataclass


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / total``."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # At 0 or all correct the bound is exactly p; rounding would put it a hair inside (3e-18 at 0 of 88).
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return (low, high)


def paired_difference_interval(both: int, only_a: int, only_b: int, neither: int,
                               z: float = 1.96) -> tuple[float, float]:
    """95% interval of ``p_a - p_b`` for two outcomes scored on the same items (Newcombe's method 10).

    ``both``, ``only_a``, ``only_b`` and ``neither`` count the items right
    under both, under A alone, under B alone and under neither. The Wilson
    intervals of the two proportions are combined with their correlation, so
    the interval is narrower than the independent samples' when A and B tend
    to be right on the same items, as two defences on the same images are.

    References
    ----------
    .. [1] R. G. Newcombe, "Improved confidence intervals for the difference between binomial proportions based
           on paired data", Statistics in Medicine 17, 2635-2650 (1998).
    """
    n = both + only_a + only_b + neither
    if n == 0:
        return (math.nan, math.nan)
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = wilson_interval(both + only_a, n, z)
    low_b, high_b = wilson_interval(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    product = both * neither - only_a * only_b
    # Newcombe's correction: a positive association is shrunk by n / 2 (conservative), a negative one is kept.
    association = max(product - n / 2, 0.0) if product > 0 else float(product)
    phi = association / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2))
    above = math.sqrt(max(0.0, (high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2))
    return (max(-1.0, p_a - p_b - below), min(1.0, p_a - p_b + above))


@dataclass(frozen=True)
class PairedDifference:
    """A - B on the images both A and B scored (two runs, two defences, two fronts), with its paired 95% interval
    (Newcombe's method 10)."""

    images: int
    difference: float
    low: float
    high: float

    @property
    def differs(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(a: dict[str, bool], b: dict[str, bool]) -> PairedDifference:
    """A - B from each image's outcome (right or not) under A and under B, over the images both scored."""
    common = a.keys() & b.keys()
    both = sum(a[i] and b[i] for i in common)
    only_a = sum(a[i] and not b[i] for i in common)
    only_b = sum(b[i] and not a[i] for i in common)
    low, high = paired_difference_interval(both, only_a, only_b, len(common) - both - only_a - only_b)
    return PairedDifference(len(common), (only_a - only_b) / len(common) if common else math.nan, low, high)
