import pytest
import torch
import torchvision
from torch import nn

from ciidefence import CheckpointError, ModelError, custom_classifier, load_classifier
from ciidefence.models import TORCHVISION_NAMES


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_models_with_random_weights(name):
    classifier = load_classifier(name, random_weights=True)
    images = torch.rand(1, 3, 180, 240)
    with torch.no_grad():
        assert classifier(images).shape == (1, 1000)
    assert classifier.prepare(images).shape[-1] == (299 if name == "inception_v3" else 224)
    assert classifier.cam_method == ("gradcam" if name == "vgg16" else "cam")


def test_embedded_model_is_accurate_on_bundled_samples(classifier, sample_paths):
    from ciidefence import load_image

    names = [p.name.split("_", 1)[1].rsplit(".", 1)[0] for p in sample_paths]
    with torch.no_grad():
        predicted = [classifier.class_name(int(classifier(load_image(p)[None]).argmax())) for p in sample_paths]
    assert sum(a == b for a, b in zip(predicted, names, strict=True)) >= 3


def test_unknown_model():
    with pytest.raises(ModelError, match="unknown model"):
        load_classifier("alexnet")


def test_torchvision_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="nothing is downloaded"):
        load_classifier("resnet50")


def small_network():
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    body = nn.Sequential(*list(net.children())[:-2])
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return net, body, head


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_custom_network_with_checkpoint(tmp_path, suffix):
    torch.manual_seed(1)
    trained, _, _ = small_network()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": trained.state_dict()}, path)
    else:
        from safetensors.torch import save_file

        save_file(trained.state_dict(), str(path))
    net, body, head = small_network()
    classifier = custom_classifier(net, body, head, checkpoint=path, linear_head=net.fc)
    images = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        expected = trained.eval()((images - classifier.mean) / classifier.std)
        assert torch.allclose(classifier(images), expected, atol=1e-5)


def test_pickled_objects_are_refused(tmp_path):
    net, body, head = small_network()
    torch.save(net, tmp_path / "whole_model.pt")  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        custom_classifier(net, body, head, checkpoint=tmp_path / "whole_model.pt")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None, num_classes=10).state_dict(), tmp_path / "r34.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "junk.pt")
    (tmp_path / "text.pt").write_text("hello")
    net, body, head = small_network()
    for name, message in (("r34.pt", "not a custom checkpoint"), ("junk.pt", "missing keys"),
                          ("text.pt", "not a readable checkpoint"), ("absent.pt", "no such")):
        with pytest.raises(CheckpointError, match=message):
            custom_classifier(net, body, head, checkpoint=tmp_path / name)


def test_embedded_model_refuses_a_wrong_checkpoint(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(CheckpointError, match="not a efficientnet_lite0 checkpoint"):
        load_classifier("efficientnet_lite0", checkpoint=tmp_path / "r18.pt")


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_the_larger_embedded_classifiers_load_offline_and_see_a_tench(name, size, photo):
    from ciidefence import load_classifier

    classifier = load_classifier(name)
    assert classifier.input_size == size and classifier.cam_method == "cam"
    with torch.no_grad():
        assert classifier.class_name(int(classifier(photo).argmax())) == "tench"


def test_model_names_match_the_torchvision_builders():
    from ciidefence.models import TORCHVISION_NAMES
    from ciidefence.models.torchvision_models import TORCHVISION_MODELS

    assert TORCHVISION_NAMES == TORCHVISION_MODELS
