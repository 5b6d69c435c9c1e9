"""Rival defences and CIIDefence's ablations, on real images with the real model."""

import numpy as np
import pytest
import torch
from art.defences.preprocessor import JpegCompression

from ciidefence.defences import (
    ABLATIONS,
    DEFENCES,
    RIVALS,
    build_defence,
    defence_digest,
    defence_params,
)
from ciidefence.defences.bpda import bpda_approximation
from ciidefence.defences.pixel_deflection import deflect_pixels, robust_activation_map
from ciidefence.defences.transforms import jpeg_compression, random_resize_pad
from ciidefence.errors import ConfigError


@pytest.fixture(scope="module")
def views(classifier, sample_paths):
    from ciidefence import load_image

    return torch.cat([classifier.prepare(load_image(p)[None]) for p in sample_paths[:2]])


@pytest.mark.parametrize("name", [n for n in DEFENCES if n != "none"])
def test_every_defence_keeps_shape_and_range_and_changes_the_image(name, classifier, views):
    torch.manual_seed(0)
    defence = build_defence(name, classifier)
    with torch.no_grad():
        output = defence(views)
    assert output.shape == views.shape
    assert output.min() >= 0 and output.max() <= 1
    assert (output - views).abs().mean() > 1e-4


def test_ablations_change_one_thing_of_the_given_configuration():
    from ciidefence import CIIDefenceConfig

    base = CIIDefenceConfig(sigma=0.02, top_k=2)
    assert defence_params("ciid-k1", base) == {**base.to_dict(), "top_k": 1}
    assert defence_params("ciid-denoise-only", base)["regions"] == "none"
    assert defence_params("ciid-inpaint-only", base)["denoise"] is False
    assert set(ABLATIONS).isdisjoint(RIVALS)
    assert defence_digest("ciid", base.to_dict()) != defence_digest("ciid-k1", base.to_dict())


def test_inpaint_only_leaves_pixels_outside_the_boxes_alone(classifier, views):
    from ciidefence import CIIDefenceConfig, purify

    result = purify(views, classifier, CIIDefenceConfig(denoise=False))
    outside = ~result.mask[:, None].expand_as(views)
    assert torch.equal(result.output[outside], views[outside])
    assert result.mask.any()


def test_random_boxes_have_the_cam_boxes_number_and_size(classifier, views):
    from ciidefence import CIIDefenceConfig, purify

    cam = purify(views, classifier, CIIDefenceConfig())
    torch.manual_seed(1)
    random = purify(views, classifier, CIIDefenceConfig(regions="random"))
    assert random.boxes.shape == cam.boxes.shape
    sizes = lambda b: (b[..., 2:] - b[..., :2]).flatten()  # noqa: E731
    assert torch.allclose(sizes(random.boxes), sizes(cam.boxes))
    assert random.evidence is None


def test_deflection_spares_relevant_pixels_and_counts_its_changes():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 40, 40)
    assert torch.equal(deflect_pixels(images, torch.ones(2, 40, 40), deflections=50), images)
    changed = (deflect_pixels(images, torch.zeros(2, 40, 40), deflections=50, window=3) != images)
    assert all(0 < int(c.sum()) <= 50 for c in changed)
    relevance = torch.zeros(2, 40, 40)
    relevance[:, :20] = 1.0
    half = deflect_pixels(images, relevance, deflections=100) != images
    assert not half[:, :, :20].any() and half[:, :, 20:].any()


def test_robust_activation_map_is_at_the_image_size(classifier, photo):
    relevance = robust_activation_map(classifier, photo, top_k=5)
    assert relevance.shape == (1, *photo.shape[-2:])
    assert relevance.min() >= 0 and relevance.max() <= 1 + 1e-6 and relevance.max() > 0.5


def test_jpeg_wrapper_matches_art_itself(views):
    ours = jpeg_compression(quality=50)(views)
    art, _ = JpegCompression(clip_values=(0.0, 1.0), quality=50, channels_first=True)(views.numpy())
    np.testing.assert_allclose(ours.numpy(), art, atol=1e-6)


def test_random_resize_pad_is_random_and_differentiable():
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    torch.manual_seed(0)
    first = random_resize_pad(images)
    second = random_resize_pad(images)
    assert first.shape == images.shape and not torch.equal(first, second)
    first.sum().backward()
    assert images.grad.abs().sum() > 0


def test_bpda_approximations_by_defence(classifier):
    with pytest.raises(ConfigError, match="no 'differentiable' approximation"):
        bpda_approximation(build_defence("jpeg", classifier).module, "differentiable")
    deflection = build_defence("pixel-deflection", classifier)
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    bpda_approximation(deflection.module, "differentiable")(images, None).sum().backward()
    assert images.grad.abs().sum() > 0


def test_bad_rival_parameters_are_config_errors(classifier):
    with pytest.raises(ConfigError, match="quality"):
        build_defence("jpeg", classifier, params={"quality": 0})
    with pytest.raises(ConfigError, match="bad parameters"):
        build_defence("median", classifier, params={"size": 3})
    with pytest.raises(ConfigError, match="unknown defence"):
        build_defence("feature-distillation", classifier)
