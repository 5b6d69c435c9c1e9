"""Certified robustness by randomized smoothing, with a denoiser (or any defence) in front of the classifier.

``certify`` and ``predict`` are Cohen et al.'s CERTIFY and PREDICT for one
image; :class:`SmoothedClassifier` is the deployable module.
"""

from __future__ import annotations

from .certify import ABSTAIN, Certificate, certified_radius, certify, clopper_pearson_lower, predict
from .classifier import SmoothedClassifier, SmoothedOutput

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "SmoothedOutput", "certified_radius", "certify",
           "clopper_pearson_lower", "predict"]
