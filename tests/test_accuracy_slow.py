"""Heavier checks on many shared images: run with ``pytest -m slow``."""

import csv

import pytest
import torch

from ciidefence import load_image, purify
from conftest import SHARED_SAMPLE, needs_shared_sample

pytestmark = [pytest.mark.slow, needs_shared_sample]


def first_shared_images(count):
    with open(SHARED_SAMPLE / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    return [(SHARED_SAMPLE / row["file"], int(row["class_index"])) for row in rows]


def test_defence_keeps_most_clean_accuracy_on_100_shared_images(classifier):
    bare = defended = 0
    with torch.no_grad():
        for path, label in first_shared_images(100):
            result = purify(load_image(path)[None], classifier)
            bare += int(result.evidence.logits.argmax()) == label
            defended += int(classifier(result.output).argmax()) == label
    # measured 89 and 85 (docs/JOURNAL.md); fail on a regression of the pipeline
    assert bare >= 85
    assert defended >= bare - 8
