import pytest
import torch

from ciidefence import ConfigError
from ciidefence.denoising import wavelet_denoise, wavelet_shrinkage


def psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


@pytest.mark.parametrize("threshold", ["bayes", "visu"])
def test_denoising_raises_psnr_on_a_noisy_photo(photo, threshold):
    clean = photo[..., :160, :160]
    torch.manual_seed(0)
    noisy = (clean + 0.08 * torch.randn_like(clean)).clamp(0, 1)
    denoised = wavelet_denoise(noisy, sigma=0.08, threshold=threshold)
    assert psnr(denoised, clean) > psnr(noisy, clean) + 3


def test_near_identity_as_sigma_goes_to_zero(photo):
    image = photo[..., :128, :128]
    errors = [float((wavelet_denoise(image, sigma=s) - image).abs().max()) for s in (0.04, 0.01, 1e-4)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_wavelet_and_levels_are_used(photo):
    image = photo[..., :128, :128]
    base = wavelet_denoise(image, sigma=0.05)
    assert not torch.equal(base, wavelet_denoise(image, sigma=0.05, wavelet="db2"))
    assert not torch.equal(base, wavelet_denoise(image, sigma=0.05, levels=1))
    assert base.shape == image.shape


def test_bad_parameters():
    with pytest.raises(ConfigError):
        wavelet_denoise(torch.rand(1, 3, 16, 16), threshold="sure")
    with pytest.raises(ConfigError):
        wavelet_denoise(torch.rand(1, 3, 16, 16), sigma=-1)


@pytest.mark.parametrize("options", [
    {}, {"wavelet": "db2"}, {"threshold": "visu", "sigma": 0.02}, {"wavelet": "sym4", "levels": 2},
])
def test_torch_shrinkage_matches_scikit_image(photo, options):
    from ciidefence.denoising import wavelet_denoise_torch

    image = photo[..., :150, :170]
    reference = wavelet_denoise(image, **options)
    assert float((wavelet_denoise_torch(image, **options) - reference).abs().max()) < 1e-4


def test_torch_shrinkage_is_differentiable_and_batched(photo):
    from ciidefence.denoising import wavelet_denoise_torch

    batch = torch.cat([photo[..., :96, :96], photo[..., -96:, -96:]]).requires_grad_(True)
    output = wavelet_denoise_torch(batch, sigma=0.04)
    output[0].sum().backward()
    assert batch.grad[0].abs().sum() > 0
    assert batch.grad[1].abs().sum() == 0  # images of a batch do not mix
    single = wavelet_denoise_torch(batch[1:].detach(), sigma=0.04)
    assert torch.allclose(output[1:], single, atol=1e-6)


def test_more_wavelet_levels_than_the_image_allows_is_the_option_s_fault_not_the_image_s():
    with pytest.raises(ConfigError, match="wavelet_levels 1000 is more than a 64x64 image allows"):
        wavelet_shrinkage(torch.rand(1, 3, 64, 64), 0.05, "db2", 1000)
