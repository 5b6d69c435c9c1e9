"""Defences: maps from images to purified images of the same shape.

Names are imported on first use (see :mod:`ciidefence._lazy`).
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "CIIDefenceConfig": ".config",
    "STRENGTHS": ".config",
    "strength_config": ".config",
    "CIIDefence": ".ciid",
    "Purification": ".ciid",
    "purify": ".ciid",
    "approximate": ".ciid",
    "DefendedClassifier": ".defended",
    "PixelDeflection": ".pixel_deflection",
    "RandomResizePad": ".transforms",
    "NoDefence": ".transforms",
    "TotalVarianceMinimization": ".transforms",
    "ABLATIONS": ".registry",
    "DEFENCES": ".registry",
    "RIVALS": ".registry",
    "Defence": ".registry",
    "DefenceSpec": ".registry",
    "build_defence": ".registry",
    "defence_digest": ".registry",
    "defence_params": ".registry",
    "defence_spec": ".registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
