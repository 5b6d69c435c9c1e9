"""Defences written outside the package: a factory named by its import path, or registered by an installed package.

A plug-in defence is named ``package.module:factory`` (any importable module;
``factory`` may be a dotted attribute path), or by a name an installed package
registers under the entry-point group
:data:`~ciidefence.defences.registry.PLUGIN_GROUP`
(``[project.entry-points."ciidefence.defences"] mine = "mypkg.defences:make"``).

``factory(classifier)`` returns an ``nn.Module`` mapping images ``(B, 3, H, W)``
in [0, 1] to images of the same shape and range, or an ART preprocessor
(wrapped as :class:`~ciidefence.defences.transforms.ARTTransform`). Optional
attributes of what it returns tell the harness what it needs to know:

``randomised`` : bool
    It draws random numbers; its ``forward`` then takes ``generator=``, one
    ``torch.Generator`` (or None) to draw from, so that every draw is seeded
    from the unit's identity, EOT averages over draws and BPDA replays them.
    The harness calls it image by image (:class:`PluginDefence`).
``differentiable_approximation(images, generator=None)`` : method
    A differentiable stand-in for BPDA, beside the identity.
``params`` : dict
    Its parameters (JSON values), stored with every result row.

What it is, stored: the name as given, its declared parameters, a digest of
its ``state_dict`` and one of the factory's source file. A run resumed with a
plug-in whose parameters, weights or source changed is refused
(:func:`~ciidefence.evaluation.runner.Evaluation.check_resumable`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError, one_line
from ..importing import import_object
from ..randomness import Generators, per_image, seeded_generator
from .registry import Defence, defence_digest, registered_plugins
from .transforms import ARTTransform

if TYPE_CHECKING:
    from ..models.base import Classifier


def load_factory(name: str) -> Callable:
    """The factory ``name`` stands for; a :class:`ConfigError` saying why when it cannot be imported."""
    factory = import_object(registered_plugins().get(name, name), f"defence {name!r}")
    if not callable(factory):
        raise ConfigError(f"defence {name!r}: {registered_plugins().get(name, name)} is not callable")
    return factory


def build_plugin(name: str, classifier: Classifier) -> Defence:
    """Call plug-in ``name``'s factory with ``classifier`` and check what it returns on a probe image.

    Raises :class:`ConfigError` (one line) when the factory fails, returns
    something else than a module or ART preprocessor, declares what it cannot
    do, or returns images of another size or outside [0, 1].
    """
    factory = load_factory(name)
    try:
        made = factory(classifier)
    except Exception as error:
        raise ConfigError(f"defence {name!r}: the factory failed: {type(error).__name__}: {one_line(error)}"
                          ) from None
    if _is_art_preprocessor(made):
        declared = {key: getattr(made, key, None) for key in getattr(made, "params", ())}
        made = ARTTransform(made, channels_last=not getattr(made, "channels_first", True))
    elif isinstance(made, nn.Module):
        declared = getattr(made, "params", {})
    else:
        raise ConfigError(f"defence {name!r}: the factory returned {type(made).__name__}, not an nn.Module mapping "
                          f"images to images (or an ART preprocessor)")
    randomised = bool(getattr(made, "randomised", False))
    differentiable = callable(getattr(made, "differentiable_approximation", None))
    module = PluginDefence(made, name, randomised)
    params = {**_json_params(name, declared), "state_digest": _state_digest(made),
              "source_digest": _source_digest(factory)}
    _probe(module, name, classifier.view_side)
    return Defence(name, params, defence_digest(name, params), module, randomised,
                   ("identity", "differentiable") if differentiable else ("identity",))


class PluginDefence(nn.Module):
    """A plug-in's module, called as every defence is, ``(images, generator=None)``; checks the shape it returns.

    A ``randomised`` plug-in gets one ``torch.Generator`` per call: given one
    per image (as the harness gives them), it is called image by image, so
    that no draw depends on how images are batched.
    """

    inner: Any  # the plug-in's module, whatever attributes it declares

    def __init__(self, inner: nn.Module, name: str, randomised: bool) -> None:
        super().__init__()
        self.inner, self.name, self.randomised = inner, name, randomised

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return self._call(self.inner, images, generator)

    def differentiable_approximation(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return self._call(self.inner.differentiable_approximation, images, generator)

    def _call(self, method: Callable, images: torch.Tensor, generator: Generators) -> torch.Tensor:
        if not self.randomised:
            return _checked(method(images), images, self.name)
        if generator is None or isinstance(generator, torch.Generator):
            return _checked(method(images, generator=generator), images, self.name)
        return torch.cat([self._call(method, image[None], each)
                          for image, each in zip(images, per_image(generator, len(images)), strict=True)])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, randomised={self.randomised}"


def _checked(out: object, images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != images.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"defence {name!r} returned {shape} for images of shape {tuple(images.shape)}: a defence "
                          f"must return images of the same size")
    return out


def _probe(module: PluginDefence, name: str, side: int) -> None:
    """Run the defence once on two seeded random images at the classifier's view; refuse what it gets wrong."""
    images = torch.rand(2, 3, side, side, generator=seeded_generator("plug-in probe", name))
    if module.randomised:
        signature = inspect.signature(module.inner.forward)
        if "generator" not in signature.parameters and not any(
                p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            raise ConfigError(f"defence {name!r} declares randomised = True, so its forward must take generator= "
                              f"(its draws are seeded from each unit's identity)")
    try:
        with torch.no_grad():
            out = module(images, generator=seeded_generator("plug-in probe", name, "draws"))
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"defence {name!r} failed on a {side} x {side} probe image: {type(error).__name__}: "
                          f"{one_line(error)}") from None
    if not torch.isfinite(out).all() or out.min() < -1e-4 or out.max() > 1 + 1e-4:
        raise ConfigError(f"defence {name!r} returned values outside [0, 1] (or not finite): images are float in "
                          f"[0, 1]")


def _is_art_preprocessor(made: object) -> bool:
    try:
        from art.defences.preprocessor import Preprocessor
    except ImportError:  # pragma: no cover - ART is a dependency
        return False
    return isinstance(made, Preprocessor)


def _json_params(name: str, declared: object) -> dict:
    if not isinstance(declared, dict):
        raise ConfigError(f"defence {name!r}: params must be a dict, got {type(declared).__name__}")
    try:
        return json.loads(json.dumps(declared, sort_keys=True))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"defence {name!r}: params must hold JSON values ({error})") from None


def _state_digest(module: nn.Module) -> str:
    """A digest of the module's parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _source_digest(factory: Callable) -> str:
    """A digest of the factory's source file (empty when it has none, as for a built-in)."""
    try:
        source = inspect.getsourcefile(inspect.unwrap(factory))
    except TypeError:
        source = None
    if source is None or not Path(source).is_file():
        return ""
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
