"""Helpers shared by the benchmark scripts: the ``--data`` option, the labelled images and their views."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from ciidefence import load_image
from ciidefence.models import Classifier

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"
"""The 500-image evaluation set, where the project's machines keep it (beside the repository)."""


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """``--data FOLDER``: labelled images (a ``labels.csv`` with columns file,class_index)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of images with labels.csv (file,class_index) [default: %(default)s, "
                             "the 500-image evaluation set beside the repository]")


def checked_data(directory: Path) -> Path:
    """``directory``, or exit with one line when it holds no ``labels.csv``."""
    if not (directory / "labels.csv").is_file():
        sys.exit(f"{Path(sys.argv[0]).name}: error: {directory} holds no labels.csv; give --data FOLDER "
                 f"(labelled images, e.g. the 500-image evaluation set ../shared/data/imagenet-sample)")
    return directory


def sample_images(limit: int, directory: Path = DEFAULT_DATA) -> tuple[list[Path], torch.Tensor]:
    """The first ``limit`` files of a labelled folder (labels.csv order) and their labels."""
    with open(checked_data(directory) / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [directory / row["file"] for row in rows], torch.tensor([int(r["class_index"]) for r in rows])


def classifier_views(classifier: Classifier, paths: list[Path]) -> torch.Tensor:
    """Each image as the classifier sees it: ``(N, 3, S, S)`` resized and centre-cropped."""
    return torch.cat([classifier.prepare(load_image(path)[None]) for path in paths])
