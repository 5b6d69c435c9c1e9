"""ciidefence: CIIDefence (Gupta and Rahtu, ICCV 2019) and honest measurement of it.

>>> import ciidefence as cii
>>> classifier = cii.load_classifier()          # embedded EfficientNet-Lite0
>>> defended = cii.DefendedClassifier(classifier, cii.CIIDefence(classifier))
>>> logits = defended(cii.load_image("samples/n01440764_tench.JPEG")[None])
"""

from .defences import (
    CIIDefence,
    CIIDefenceConfig,
    DefendedClassifier,
    Purification,
    purify,
)
from .errors import (
    CheckpointError,
    CIIDefenceError,
    ConfigError,
    ImageError,
    InputError,
    ModelError,
)
from .images import load_image, save_image
from .models import MODEL_NAMES, Classifier, custom_classifier, load_classifier

__version__ = "0.1.0"

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
    "custom_classifier",
    "load_classifier",
    "load_image",
    "purify",
    "save_image",
]
