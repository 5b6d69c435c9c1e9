"""Defences: maps from images to purified images of the same shape."""

from .ciid import CIIDefence, CIIDefenceConfig, Purification, purify, select_regions
from .defended import DefendedClassifier
from .pixel_deflection import PixelDeflection
from .registry import (
    ABLATIONS,
    DEFENCES,
    RIVALS,
    build_defence,
    defence_digest,
    defence_params,
    defence_spec,
)
from .transforms import RandomResizePad

__all__ = [
    "ABLATIONS",
    "CIIDefence",
    "CIIDefenceConfig",
    "DEFENCES",
    "DefendedClassifier",
    "PixelDeflection",
    "Purification",
    "RIVALS",
    "RandomResizePad",
    "build_defence",
    "defence_digest",
    "defence_params",
    "defence_spec",
    "purify",
    "select_regions",
]
