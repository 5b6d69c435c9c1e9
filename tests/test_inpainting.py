import pytest
import torch

from ciidefence import CheckpointError, ConfigError, ModelError
from ciidefence.inpainting import INPAINTERS, inpaint


class MeanFill(torch.nn.Module):
    """A tiny LaMa-style network: fills holes with the mean colour of the known pixels."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = 1 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True)
        return image * known + mean * mask


class WrongShape(torch.nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image[:, :1]


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inpainters")
    torch.jit.script(MeanFill()).save(str(folder / "mean.pt"))
    torch.jit.script(WrongShape()).save(str(folder / "wrong.pt"))
    return folder


def masks_for(images):
    masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
    masks[:, 40:60, 50:75] = True
    masks[:, :5, -5:] = True  # a box in the corner
    return masks


@pytest.mark.parametrize("method", INPAINTERS)
def test_pixels_outside_the_mask_are_untouched(method, photo, scripted):
    images = photo[..., :120, :130].repeat(2, 1, 1, 1)
    images[1] = images[1].flip(-1)
    masks = masks_for(images)
    filled = inpaint(images, masks, method, model_path=scripted / "mean.pt")
    assert filled.shape == images.shape
    assert torch.equal(filled[~masks[:, None].expand_as(images)], images[~masks[:, None].expand_as(images)])
    assert not torch.equal(filled[masks[:, None].expand_as(images)], images[masks[:, None].expand_as(images)])
    assert 0 <= float(filled.min()) and float(filled.max()) <= 1


@pytest.mark.parametrize("method", ["telea", "navier-stokes", "biharmonic"])
def test_a_flat_image_is_filled_with_its_colour(method):
    images = torch.full((1, 3, 40, 40), 0.4)
    images[..., 10:20, 10:20] = 1.0  # the content to erase
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[:, 8:22, 8:22] = True
    filled = inpaint(images, masks, method)
    # Telea's weighted average of 8-bit values may land 2 levels off
    assert torch.allclose(filled, torch.full_like(images, 0.4), atol=2 / 255 + 1e-6)


def test_learned_inpainter_pads_odd_sizes(scripted):
    images = torch.rand(1, 3, 37, 41)
    masks = torch.zeros(1, 37, 41, dtype=torch.bool)
    masks[:, 3:9, 30:40] = True
    filled = inpaint(images, masks, "learned", model_path=scripted / "mean.pt")
    assert filled.shape == images.shape
    assert torch.equal(filled[0, :, 0, 0], images[0, :, 0, 0])


def test_learned_inpainter_errors(scripted, tmp_path):
    images, masks = torch.rand(1, 3, 16, 16), torch.ones(1, 16, 16, dtype=torch.bool)
    with pytest.raises(ModelError, match="returned"):
        inpaint(images, masks, "learned", model_path=scripted / "wrong.pt")
    (tmp_path / "fake.pt").write_bytes(b"not torchscript")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        inpaint(images, masks, "learned", model_path=tmp_path / "fake.pt")
    with pytest.raises(CheckpointError, match="no such"):
        inpaint(images, masks, "learned", model_path=tmp_path / "missing.pt")
    with pytest.raises(ConfigError):
        inpaint(images, masks, "learned")


def test_unknown_inpainter():
    with pytest.raises(ConfigError, match="unknown inpainter"):
        inpaint(torch.rand(1, 3, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool), "photoshop")
