"""Shared fixtures: real sample images from ../shared/data and the real embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ciidefence import load_classifier, load_image

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
BUNDLED_SAMPLE = REPO / "samples"


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    """Four real photographs bundled with the repository."""
    paths = sorted(p for p in BUNDLED_SAMPLE.iterdir() if p.suffix == ".JPEG")[:4]
    assert len(paths) == 4
    return paths


@pytest.fixture(scope="session")
def photo(sample_paths) -> torch.Tensor:
    """One real photograph, ``(1, 3, H, W)`` at its own resolution."""
    return load_image(sample_paths[0])[None]


@pytest.fixture(scope="session")
def classifier():
    """The embedded EfficientNet-Lite0 with its real weights."""
    torch.set_num_threads(2)
    return load_classifier()
