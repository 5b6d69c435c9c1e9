"""Every defence by name, each built as an ``images -> images`` module.

``none`` is the undefended classifier; ``ciid`` is CIIDefence with the run's
configuration; ``ciid-*`` are its ablations (that configuration with one
step changed); the rest are rival input-transformation defences with their
papers' settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError
from ..models.base import Classifier
from .bpda import APPROXIMATIONS
from .ciid import CIIDefence, CIIDefenceConfig
from .pixel_deflection import PixelDeflection
from .transforms import (
    RandomResizePad,
    bit_depth_reduction,
    jpeg_compression,
    median_smoothing,
    total_variance_minimization,
)


@dataclass(frozen=True)
class DefenceSpec:
    """A named defence.

    Attributes
    ----------
    name, title : str
    build : callable
        ``build(classifier, params) -> nn.Module``.
    params : dict
        Default parameters (for CIIDefence and its ablations, the overrides
        applied to the run's CIIDefence configuration).
    randomised : bool
        Draws random numbers on each call; BPDA attacks on it use EOT.
    differentiable : bool
        Has a ``differentiable_approximation`` for BPDA, beside the identity.
    """

    name: str
    title: str
    build: Callable[[Classifier, dict], nn.Module] | None
    params: dict = field(default_factory=dict)
    randomised: bool = False
    differentiable: bool = False
    is_ciid: bool = False

    @property
    def approximations(self) -> tuple[str, ...]:
        return APPROXIMATIONS if self.differentiable else ("identity",)


def _ciid(classifier: Classifier, params: dict) -> CIIDefence:
    return CIIDefence(classifier, CIIDefenceConfig(**params))


def _ablation(name: str, title: str, overrides: dict, randomised: bool = False) -> DefenceSpec:
    return DefenceSpec(name, title, _ciid, overrides, randomised=randomised, differentiable=True, is_ciid=True)


SPECS = (
    DefenceSpec("none", "no defence", None),
    _ablation("ciid", "CIIDefence", {}),
    _ablation("ciid-denoise-only", "CIIDefence, wavelet denoising only", {"regions": "none"}),
    _ablation("ciid-inpaint-only", "CIIDefence, inpainting only", {"denoise": False}),
    _ablation("ciid-k1", "CIIDefence, top-1 class only", {"top_k": 1}),
    _ablation("ciid-random-boxes", "CIIDefence, random boxes", {"regions": "random"}, randomised=True),
    DefenceSpec("pixel-deflection", "Pixel Deflection (Prakash et al. 2018)",
                lambda classifier, p: PixelDeflection(classifier, **p),
                {"deflections": 200, "window": 10, "sigma": 0.04, "top_k": 5, "wavelet": "db1"},
                randomised=True, differentiable=True),
    DefenceSpec("jpeg", "JPEG compression (Guo et al. 2018)", lambda _, p: jpeg_compression(**p), {"quality": 75}),
    DefenceSpec("bit-depth", "bit-depth reduction (Xu et al. 2018)", lambda _, p: bit_depth_reduction(**p),
                {"bit_depth": 5}),
    DefenceSpec("median", "median smoothing (Xu et al. 2018)", lambda _, p: median_smoothing(**p),
                {"window_size": 3}),
    DefenceSpec("tvm", "total-variance minimisation (Guo et al. 2018)",
                lambda _, p: total_variance_minimization(**p), {"prob": 0.3, "lamb": 0.03, "max_iter": 10},
                randomised=True),
    DefenceSpec("random-resize-pad", "random resize and pad (Xie et al. 2018)",
                lambda _, p: RandomResizePad(**p), {"max_ratio": 331 / 299}, randomised=True, differentiable=True),
)
DEFENCES: dict[str, DefenceSpec] = {spec.name: spec for spec in SPECS}
RIVALS = tuple(spec.name for spec in SPECS if not spec.is_ciid and spec.name != "none")
ABLATIONS = tuple(spec.name for spec in SPECS if spec.is_ciid and spec.name != "ciid")


def defence_spec(name: str) -> DefenceSpec:
    try:
        return DEFENCES[name]
    except KeyError:
        raise ConfigError(f"unknown defence {name!r}; choose from: {', '.join(DEFENCES)}") from None


def defence_params(name: str, ciid: CIIDefenceConfig | None = None) -> dict:
    """The full parameters of defence ``name``; CIIDefence's variants start from ``ciid``."""
    spec = defence_spec(name)
    if spec.is_ciid:
        return dataclasses.replace(ciid or CIIDefenceConfig(), **spec.params).to_dict()
    return dict(spec.params)


def defence_digest(name: str, params: dict) -> str:
    """A short hash of a defence's name and parameters, identifying it in result tables."""
    text = json.dumps({"defence": name, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_defence(name: str, classifier: Classifier, ciid: CIIDefenceConfig | None = None,
                  params: dict | None = None) -> nn.Module | None:
    """The defence module named ``name`` (None for ``"none"``).

    Parameters
    ----------
    name : str
        One of :data:`DEFENCES`.
    classifier : Classifier
        The protected classifier (CIIDefence and Pixel Deflection use its CAMs).
    ciid : CIIDefenceConfig, optional
        The configuration that CIIDefence and its ablations start from.
    params : dict, optional
        Full parameters, instead of :func:`defence_params`.
    """
    spec = defence_spec(name)
    if spec.build is None:
        return None
    try:
        return spec.build(classifier, params if params is not None else defence_params(name, ciid))
    except TypeError as error:
        raise ConfigError(f"bad parameters for defence {name!r}: {error}") from None
