"""Where to inpaint: class activation maps and the boxes around their peaks."""

from .cam import ClassEvidence, class_activation_maps
from .selection import boxes_to_mask, peaks_to_boxes, select_peaks

__all__ = ["ClassEvidence", "boxes_to_mask", "class_activation_maps", "peaks_to_boxes", "select_peaks"]
