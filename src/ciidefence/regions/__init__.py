"""Where to inpaint: class activation maps and the boxes around their peaks."""

from .._lazy import lazy_exports

REGION_METHODS = ("cam", "random", "none")
"""Boxes around CAM peaks (the paper's), random boxes of the same number and size, or none (ablations)."""

_EXPORTS = {
    "ClassEvidence": ".cam",
    "class_activation_maps": ".cam",
    "boxes_to_mask": ".selection",
    "peaks_to_boxes": ".selection",
    "random_peaks": ".selection",
    "select_peaks": ".selection",
    "select_regions": ".selection",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["REGION_METHODS", *sorted(_EXPORTS)]
