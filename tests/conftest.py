"""Shared fixtures: real photographs bundled with the repository and the real embedded model.

The default suite needs nothing outside the repository; the tests that need
the 500-image evaluation set (``../shared/data/imagenet-sample``) are marked
:data:`needs_shared_sample` and skip, with the reason, where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ciidefence import load_classifier, load_image

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
BUNDLED_SAMPLE = REPO / "samples"
TEST_DATA = REPO / "tests" / "data"
needs_shared_sample = pytest.mark.skipif(not (SHARED_SAMPLE / "labels.csv").is_file(),
                                         reason=f"needs the 500-image evaluation set at {SHARED_SAMPLE}")


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
