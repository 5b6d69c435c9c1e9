"""Every defence by name: its kind in :data:`DEFENCES`, and :func:`build_defence` to make one.

``none`` is the undefended classifier (an identity module); ``ciid`` is
CIIDefence with the run's configuration; ``ciid-*`` are its ablations (that
configuration with one step changed); the rest are rival input-transformation
defences with their papers' settings.

A built :class:`Defence` carries what it is (name, full parameters, their
digest, whether it draws random numbers, its BPDA approximations) next to
the module that computes it, so nothing downstream re-infers those from
names or parameter values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..inpainting import DIFFERENTIABLE_INPAINTERS
from .bpda import APPROXIMATIONS
from .config import CIIDefenceConfig

if TYPE_CHECKING:  # the registry is read by the command line's help, which must not wait for torch
    import torch
    from torch import nn

    from ..models.base import Classifier
    from ..randomness import Generators


@dataclass(frozen=True)
class DefenceSpec:
    """A kind of defence in the registry.

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
    is_ciid : bool
        CIIDefence or one of its ablations.
    identity : bool
        Returns its input unchanged (no defence): its predictions are the undefended ones.
    """

    name: str
    title: str
    build: Callable[[Classifier, dict], nn.Module]
    params: dict = field(default_factory=dict)
    randomised: bool = False
    differentiable: bool = False
    is_ciid: bool = False
    identity: bool = False
    complete: Callable[[dict], dict] | None = None
    """Adds to given parameters what identifies them but is not chosen (a weights file's digest)."""
    front: bool = False
    """Made to sit in front of the smoothed classifier (a Gaussian denoiser), not a rival of the paper's tables."""

    def approximations(self, params: dict) -> tuple[str, ...]:
        """The BPDA approximations of this defence with ``params``.

        ``inpainter`` needs CIIDefence with boxes and a torch-native inpainter.
        """
        if not self.differentiable:
            return ("identity",)
        through_inpainter = (self.is_ciid and params.get("regions") != "none"
                             and params.get("inpainter") in DIFFERENTIABLE_INPAINTERS)
        return tuple(a for a in APPROXIMATIONS if a != "inpainter" or through_inpainter)


def _none(classifier: Classifier, params: dict) -> nn.Module:
    from .transforms import NoDefence

    return NoDefence()


def _ciid(classifier: Classifier, params: dict) -> nn.Module:
    from .ciid import CIIDefence

    return CIIDefence(classifier, CIIDefenceConfig(**params))


def _pixel_deflection(classifier: Classifier, params: dict) -> nn.Module:
    from .pixel_deflection import PixelDeflection

    return PixelDeflection(classifier, **params)


def _gaussian_denoiser(classifier: Classifier, params: dict) -> nn.Module:
    from ..denoising.learned import DenoiserFront, load_denoiser, weights_digest

    path = params["weights"]
    if params.get("weights_digest") not in (None, digest := weights_digest(path or _shipped_denoiser())):
        raise ConfigError(f"denoiser weights {path or 'shipped'} have digest {digest}, not the "
                          f"{params['weights_digest']} these parameters name")
    return DenoiserFront(load_denoiser(path), params["sigma"])


def _shipped_denoiser() -> str:
    from ..denoising.learned import shipped_denoiser_path

    return str(shipped_denoiser_path())


def _with_weights_digest(params: dict) -> dict:
    from ..denoising.learned import weights_digest
    from ..errors import CheckpointError

    path = params.get("weights") or _shipped_denoiser()
    try:
        return {**params, "weights_digest": weights_digest(path)}
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read denoiser weights ({error.strerror or error})") from None


def _transform(name: str) -> Callable[[Classifier, dict], nn.Module]:
    def build(classifier: Classifier, params: dict) -> nn.Module:
        from . import transforms

        return getattr(transforms, name)(**params)

    return build


def _ablation(name: str, title: str, overrides: dict, randomised: bool = False) -> DefenceSpec:
    return DefenceSpec(name, title, _ciid, overrides, randomised=randomised, differentiable=True, is_ciid=True)


SPECS = (
    DefenceSpec("none", "no defence", _none, identity=True),
    _ablation("ciid", "CIIDefence", {}),
    _ablation("ciid-denoise-only", "CIIDefence, wavelet denoising only", {"regions": "none"}),
    _ablation("ciid-inpaint-only", "CIIDefence, inpainting only", {"denoise": False}),
    _ablation("ciid-k1", "CIIDefence, top-1 class only", {"top_k": 1}),
    _ablation("ciid-random-boxes", "CIIDefence, random boxes", {"regions": "random"}, randomised=True),
    DefenceSpec("pixel-deflection", "Pixel Deflection (Prakash et al. 2018)",
                _pixel_deflection,
                {"deflections": 200, "window": 10, "sigma": 0.04, "top_k": 5, "wavelet": "db1"},
                randomised=True, differentiable=True),
    DefenceSpec("jpeg", "JPEG compression (Guo et al. 2018)", _transform("jpeg_compression"), {"quality": 75}),
    DefenceSpec("bit-depth", "bit-depth reduction (Xu et al. 2018)", _transform("bit_depth_reduction"),
                {"bit_depth": 5}),
    DefenceSpec("median", "median smoothing (Xu et al. 2018)", _transform("median_smoothing"),
                {"window_size": 3}),
    DefenceSpec("tvm", "total-variance minimisation (Guo et al. 2018)",
                _transform("TotalVarianceMinimization"), {"prob": 0.3, "lamb": 0.03, "max_iter": 10},
                randomised=True),
    DefenceSpec("random-resize-pad", "random resize and pad (Xie et al. 2018)",
                _transform("RandomResizePad"), {"max_ratio": 331 / 299}, randomised=True, differentiable=True),
    DefenceSpec("gaussian-denoiser", "learned Gaussian denoiser (denoised smoothing's front, Salman et al. 2020)",
                _gaussian_denoiser, {"sigma": 0.25, "weights": None}, differentiable=True,
                complete=_with_weights_digest, front=True),
)
DEFENCES: dict[str, DefenceSpec] = {spec.name: spec for spec in SPECS}
RIVALS = tuple(spec.name for spec in SPECS if not spec.is_ciid and not spec.identity and not spec.front)
ABLATIONS = tuple(spec.name for spec in SPECS if spec.is_ciid and spec.name != "ciid")


PLUGIN_GROUP = "ciidefence.defences"
"""The entry-point group under which installed packages register defences (:mod:`ciidefence.defences.plugins`)."""


def registered_plugins() -> dict[str, str]:
    """Defences installed packages register: name to import path (``module:factory``)."""
    from importlib.metadata import entry_points

    return {point.name: point.value for point in entry_points(group=PLUGIN_GROUP)}


def is_plugin(name: str) -> bool:
    """Whether ``name`` names a plug-in defence: an import path ``module:factory``, or a registered name."""
    return name not in DEFENCES and (":" in name or name in registered_plugins())


def check_defence_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a defence of the registry or an importable plug-in."""
    if is_plugin(name):
        from .plugins import load_factory

        load_factory(name)
    else:
        defence_spec(name)


def defence_spec(name: str) -> DefenceSpec:
    try:
        return DEFENCES[name]
    except KeyError:
        raise ConfigError(f"unknown defence {name!r}; choose from: {', '.join(DEFENCES)}, or a plug-in's import "
                          f"path package.module:factory") from None


def defence_params(name: str, ciid: CIIDefenceConfig | None = None) -> dict:
    """The full parameters of defence ``name``; CIIDefence's variants start from ``ciid``. A plug-in's are known
    once it is built (:attr:`Defence.params`): here, none."""
    if is_plugin(name):
        return {}
    spec = defence_spec(name)
    if spec.is_ciid:
        return dataclasses.replace(ciid or CIIDefenceConfig(), **spec.params).to_dict()
    return spec.complete(dict(spec.params)) if spec.complete else dict(spec.params)


def defence_digest(name: str, params: dict) -> str:
    """The one hash of a defence configuration: its name and full parameters."""
    text = json.dumps({"defence": name, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, eq=False)
class Defence:
    """A configured defence: what it is, and the module that computes it.

    Attributes
    ----------
    name : str
        Its kind, a key of :data:`DEFENCES`, or a plug-in's name as given
        (:mod:`~ciidefence.defences.plugins`).
    params : dict
        Its full parameters.
    digest : str
        :func:`defence_digest` of the name and parameters; identifies it in results.
    module : nn.Module
        ``module(images, generator=None)``: ``(B, 3, H, W)`` in [0, 1] to
        images of the same shape.
    randomised : bool
        Draws random numbers; results depend on the generator it is given.
    approximations : tuple of str
        The BPDA approximations it has.
    identity : bool
        Returns its input unchanged.
    """

    name: str
    params: dict
    digest: str
    module: nn.Module
    randomised: bool
    approximations: tuple[str, ...]
    identity: bool = False

    @property
    def params_json(self) -> str:
        return json.dumps(self.params, sort_keys=True, separators=(",", ":"))

    @property
    def title(self) -> str:
        return DEFENCES[self.name].title if self.name in DEFENCES else self.name

    def __call__(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """The defended images, without gradients."""
        import torch

        with torch.no_grad():
            return self.module(images, generator=generator)


def build_defence(name: str, classifier: Classifier, ciid: CIIDefenceConfig | None = None,
                  params: dict | None = None) -> Defence:
    """The defence named ``name``, configured and built.

    Parameters
    ----------
    name : str
        One of :data:`DEFENCES`, or a plug-in (:func:`is_plugin`; built by
        :func:`~ciidefence.defences.plugins.build_plugin`, ``ciid`` and
        ``params`` unused: it declares its own).
    classifier : Classifier
        The protected classifier (CIIDefence and Pixel Deflection use its CAMs).
    ciid : CIIDefenceConfig, optional
        The configuration that CIIDefence and its ablations start from.
    params : dict, optional
        Full parameters, instead of :func:`defence_params`.
    """
    if is_plugin(name):
        from .plugins import build_plugin

        return build_plugin(name, classifier)
    spec = defence_spec(name)
    params = params if params is not None else defence_params(name, ciid)
    if spec.complete is not None and params.get("weights_digest") is None:
        params = spec.complete(params)
    try:
        module = spec.build(classifier, params)
    except TypeError as error:
        raise ConfigError(f"bad parameters for defence {name!r}: {error}") from None
    return Defence(name, params, defence_digest(name, params), module, spec.randomised, spec.approximations(params),
                   spec.identity)
