import numpy as np
import pytest
import torch

from ciidefence import InputError
from ciidefence.validation import check_images, check_masks


@pytest.mark.parametrize("bad,message", [
    (np.zeros((1, 3, 8, 8)), "torch.Tensor"),
    (torch.zeros(3, 8, 8), "shape"),
    (torch.zeros(1, 1, 8, 8), "shape"),
    (torch.zeros(0, 3, 8, 8), "empty"),
    (torch.zeros(1, 3, 1, 1), "at least"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "must be float32"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.full((1, 3, 8, 8), float("inf")), "NaN or Inf"),
    (torch.full((1, 3, 8, 8), 255.0), r"\[0, 1\]"),
    (torch.full((1, 3, 8, 8), -0.5), r"\[0, 1\]"),
])
def test_bad_tensors_are_refused(bad, message):
    with pytest.raises(InputError, match=message):
        check_images(bad)


def test_good_tensor_passes_unchanged():
    images = torch.rand(2, 3, 8, 8)
    assert check_images(images) is images


def test_masks_must_match_images():
    images = torch.rand(2, 3, 8, 8)
    check_masks(torch.zeros(2, 8, 8, dtype=torch.bool), images)
    with pytest.raises(InputError):
        check_masks(torch.zeros(2, 8, 9, dtype=torch.bool), images)
    with pytest.raises(InputError):
        check_masks(torch.zeros(2, 8, 8), images)


def test_classifier_refuses_bad_tensors(classifier):
    with pytest.raises(InputError):
        classifier(torch.full((1, 3, 224, 224), float("nan")))
    with pytest.raises(InputError):
        classifier(torch.rand(1, 4, 224, 224))
