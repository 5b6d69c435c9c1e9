import warnings

import pytest
import torch

from ciidefence import CheckpointError, ConfigError, ModelError
from ciidefence.defences.config import CIIDefenceConfig
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
    with warnings.catch_warnings():  # the TorchScript convention users' inpainters come in
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)
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
    model = scripted / "mean.pt" if method == "learned" else None  # deepfill: the shipped weights
    filled = inpaint(images, masks, method, model_path=model, trust=method == "learned")
    assert filled.shape == images.shape
    assert torch.equal(filled[~masks[:, None].expand_as(images)], images[~masks[:, None].expand_as(images)])
    assert not torch.equal(filled[masks[:, None].expand_as(images)], images[masks[:, None].expand_as(images)])
    assert float(filled.min()) >= 0 and float(filled.max()) <= 1


@pytest.mark.parametrize("method", ["telea", "navier-stokes", "biharmonic", "harmonic"])
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
    filled = inpaint(images, masks, "learned", model_path=scripted / "mean.pt", trust=True)
    assert filled.shape == images.shape
    assert torch.equal(filled[0, :, 0, 0], images[0, :, 0, 0])


def test_learned_inpainter_errors(scripted, tmp_path):
    images, masks = torch.rand(1, 3, 16, 16), torch.ones(1, 16, 16, dtype=torch.bool)
    with pytest.raises(ModelError, match="returned"):
        inpaint(images, masks, "learned", model_path=scripted / "wrong.pt", trust=True)
    (tmp_path / "fake.pt").write_bytes(b"not torchscript")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        inpaint(images, masks, "learned", model_path=tmp_path / "fake.pt", trust=True)
    with pytest.raises(CheckpointError, match="no such"):
        inpaint(images, masks, "learned", model_path=tmp_path / "missing.pt", trust=True)
    with pytest.raises(ConfigError):
        inpaint(images, masks, "learned")


class WritesAFile(torch.nn.Module):
    """A TorchScript "inpainter" that, when called, writes into a file: what a hostile one can do."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.target, shared=True, size=64, dtype=torch.uint8).fill_(65)
        return image + 0 * written.sum()  # used, so that TorchScript keeps the write


def test_a_torchscript_inpainter_runs_only_when_trusted(tmp_path):
    written = tmp_path / "written-by-the-model"
    written.write_bytes(bytes(64))
    torch.jit.script(WritesAFile(str(written))).save(str(tmp_path / "hostile.pt"))
    images, masks = torch.rand(1, 3, 16, 16), torch.ones(1, 16, 16, dtype=torch.bool)
    with pytest.raises(CheckpointError, match="trust-model"):
        inpaint(images, masks, "learned", model_path=tmp_path / "hostile.pt")
    with pytest.raises(ConfigError, match="trust-model"):
        CIIDefenceConfig(inpainter="learned", inpainter_model=str(tmp_path / "hostile.pt"))
    assert written.read_bytes() == bytes(64)
    inpaint(images, masks, "learned", model_path=tmp_path / "hostile.pt", trust=True)
    assert written.read_bytes() == b"A" * 64  # it is a program: trusted, it ran


def test_unknown_inpainter():
    with pytest.raises(ConfigError, match="unknown inpainter"):
        inpaint(torch.rand(1, 3, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool), "photoshop")


def test_harmonic_fill_of_a_linear_ramp_is_the_ramp():
    from ciidefence.inpainting import inpaint_harmonic

    ramp = torch.linspace(0, 1, 48).expand(1, 3, 40, 48).contiguous()
    masks = torch.zeros(1, 40, 48, dtype=torch.bool)
    masks[0, 15:24, 20:29] = True
    filled = inpaint_harmonic(ramp, masks, iterations=200)
    assert (filled - ramp).abs().max() < 2e-3  # a linear function is harmonic: the exact fill


def test_harmonic_fill_is_close_to_telea_on_a_photo(photo):
    from ciidefence.inpainting import inpaint_harmonic, inpaint_telea

    masks = torch.zeros(1, *photo.shape[-2:], dtype=torch.bool)
    masks[0, 100:117, 120:137] = True
    error = (inpaint_harmonic(photo, masks) - inpaint_telea(photo, masks)).abs()[:, :, masks[0]]
    assert error.mean() < 0.05


@pytest.mark.parametrize("method", ["telea", "navier-stokes"])
def test_filling_only_around_the_holes_equals_filling_the_whole_image(method, photo):
    import cv2

    from ciidefence.arrays import fill_each
    from ciidefence.inpainting.opencv import _cv2_inpaint

    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    masks = torch.zeros(1, *photo.shape[-2:], dtype=torch.bool)
    masks[0, 100:117, 120:137] = True
    masks[0, 0:17, 5:22] = True  # touching the border
    cropped = fill_each(photo, masks, lambda image, mask: _cv2_inpaint(image, mask, 3.0, flag))
    whole = fill_each(photo, masks, lambda image, mask: _cv2_inpaint(image, mask, 3.0, flag), margin=10**6)
    assert torch.equal(cropped, whole)
