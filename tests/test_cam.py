import pytest
import torch

from ciidefence import ConfigError, load_classifier
from ciidefence.regions import class_activation_maps


def test_cam_ranks_classes_like_the_classifier_and_matches_zhou(classifier, photo):
    evidence = class_activation_maps(classifier, photo, top_k=3)
    with torch.no_grad():
        logits = classifier(photo)
        features = classifier.features(photo)
    assert torch.equal(evidence.classes[0], logits[0].topk(3).indices)
    assert torch.allclose(evidence.logits, logits, atol=1e-5)
    # Zhou et al.: the map of class c is sum_k w_ck f_k, here upsampled and scaled to max 1
    weights = classifier.linear_head.weight[evidence.classes[0, 0]]
    raw = torch.einsum("c,chw->hw", weights, features[0]).clamp(min=0)
    coarse = torch.nn.functional.interpolate(raw[None, None], size=(224, 224), mode="bilinear")[0, 0]
    assert torch.allclose(evidence.cams[0, 0], coarse / coarse.max(), atol=1e-5)
    assert evidence.cams.shape == (1, 3, 224, 224)
    assert float(evidence.cams.min()) >= 0 and float(evidence.cams.amax(dim=(2, 3)).max()) == 1.0
    assert torch.all(evidence.probabilities[0, :-1] >= evidence.probabilities[0, 1:])


def test_grad_cam_for_a_head_without_global_pooling():
    torch.manual_seed(0)
    vgg = load_classifier("vgg16", random_weights=True)
    assert vgg.cam_method == "gradcam"
    images = torch.rand(2, 3, 224, 224)
    evidence = class_activation_maps(vgg, images, top_k=2)
    assert evidence.cams.shape == (2, 2, 224, 224)
    with torch.no_grad():
        assert torch.equal(evidence.classes, vgg(images).topk(2).indices)


def test_top_k_must_be_positive(classifier, photo):
    with pytest.raises(ConfigError):
        class_activation_maps(classifier, photo, top_k=0)
