"""ciidefence: CIIDefence (Gupta and Rahtu, ICCV 2019) and honest measurement of it.

>>> import ciidefence as cii
>>> classifier = cii.load_classifier()          # embedded EfficientNet-Lite0
>>> defended = cii.DefendedClassifier(classifier, cii.CIIDefence(classifier))
>>> logits = defended(cii.load_image("samples/n01440764_tench.JPEG")[None])

Names are imported on first use, so that the command line starts fast.
"""

from importlib.metadata import PackageNotFoundError, version

from ._lazy import lazy_exports
from .errors import (
    CheckpointError,
    CIIDefenceError,
    ConfigError,
    ImageError,
    InputError,
    ModelError,
)

try:
    __version__ = version("ciidefence")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__getattr__, __dir__ = lazy_exports(__name__, {
    "CIIDefence": ".defences.ciid",
    "CIIDefenceConfig": ".defences.config",
    "STRENGTHS": ".defences.config",
    "strength_config": ".defences.config",
    "DefendedClassifier": ".defences.defended",
    "Purification": ".defences.ciid",
    "purify": ".defences.ciid",
    "build_defence": ".defences.registry",
    "evaluate": ".evaluation.api",
    "read_results": ".evaluation.api",
    "ResultRow": ".evaluation.store",
    "load_image": ".images",
    "save_image": ".images",
    "MODEL_NAMES": ".models",
    "Classifier": ".models.base",
    "custom_classifier": ".models.custom",
    "load_classifier": ".models",
})

__all__ = [
    "CIIDefence",
    "CIIDefenceConfig",
    "CIIDefenceError",
    "CheckpointError",
    "Classifier",
    "ConfigError",
    "DefendedClassifier",
    "ImageError",
    "InputError",
    "MODEL_NAMES",
    "ModelError",
    "Purification",
    "ResultRow",
    "STRENGTHS",
    "build_defence",
    "custom_classifier",
    "evaluate",
    "load_classifier",
    "load_image",
    "purify",
    "read_results",
    "save_image",
    "strength_config",
]
