"""Helpers shared by the benchmark scripts: the shared sample images and labels."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ciidefence import load_image
from ciidefence.models import Classifier

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def sample_images(limit: int, directory: Path = SAMPLE_DIR) -> tuple[list[Path], torch.Tensor]:
    """The first ``limit`` files of the shared sample (labels.csv order) and their labels."""
    with open(directory / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [directory / row["file"] for row in rows], torch.tensor([int(r["class_index"]) for r in rows])


def classifier_views(classifier: Classifier, paths: list[Path]) -> torch.Tensor:
    """Each image as the classifier sees it: ``(N, 3, S, S)`` resized and centre-cropped."""
    return torch.cat([classifier.prepare(load_image(path)[None]) for path in paths])
