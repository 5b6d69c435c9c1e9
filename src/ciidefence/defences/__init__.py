"""Defences: maps from images to purified images of the same shape."""

from .ciid import CIIDefence, CIIDefenceConfig, Purification, purify, select_regions
from .defended import DefendedClassifier

__all__ = ["CIIDefence", "CIIDefenceConfig", "DefendedClassifier", "Purification", "purify", "select_regions"]
