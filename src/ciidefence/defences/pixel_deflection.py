"""Pixel Deflection (Prakash et al., CVPR 2018), a rival of CIIDefence.

A. Prakash, N. Moran, S. Garber, A. DiLillo and J. Storer, "Deflecting
Adversarial Attacks with Pixel Deflection", CVPR 2018.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..denoising import check_shrinkage
from ..denoising.wavelet_torch import wavelet_denoise_torch
from ..errors import ConfigError
from ..models.base import Classifier
from ..randomness import Generators, per_image, rand, randint
from ..regions.cam import class_activation_maps
from ..validation import check_images


def robust_activation_map(classifier: Classifier, images: torch.Tensor, top_k: int = 5) -> torch.Tensor:
    """The mean of the top-``k`` classes' normalised CAMs, at the images' size.

    Prakash et al.'s robust activation map: a map that an attacker who
    changes the top-1 class cannot move much, because it pools several
    classes. Pixels outside the classifier's centre-crop view get 0.

    Parameters
    ----------
    classifier : Classifier
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    top_k : int
        Classes pooled (5 in the paper).

    Returns
    -------
    torch.Tensor
        ``(B, H, W)`` in [0, 1].
    """
    cams = class_activation_maps(classifier, images, top_k).cams.mean(dim=1, keepdim=True)
    cams = cams / cams.amax(dim=(2, 3), keepdim=True).clamp(min=1e-12)
    height, width = images.shape[-2:]
    scale, top, left = classifier.view_geometry(height, width)
    size = classifier.input_size
    # Image pixel centre y + 0.5 sits at input coordinate (y + 0.5) * scale - top.
    ys = ((torch.arange(height, device=images.device) + 0.5) * scale - top) * 2 / size - 1
    xs = ((torch.arange(width, device=images.device) + 0.5) * scale - left) * 2 / size - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).to(cams.dtype)
    grid = grid.expand(images.shape[0], height, width, 2)
    return F.grid_sample(cams, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def deflect_pixels(
    images: torch.Tensor, relevance: torch.Tensor, deflections: int = 200, window: int = 10,
    generator: Generators = None,
) -> torch.Tensor:
    """Replace randomly chosen pixel values by those of random nearby pixels.

    Each deflection picks a pixel and a colour channel at random, keeps the
    pixel with probability equal to its ``relevance`` (so the object the
    classifier looks at is spared), and otherwise copies the channel value of
    a pixel drawn uniformly from the ``(2 window + 1)``-square around it,
    clamped to the image. Candidates are drawn at once, not one by one.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    relevance : torch.Tensor
        ``(B, H, W)`` in [0, 1], e.g. :func:`robust_activation_map`.
    deflections : int
        Pixels changed per image (fewer if too few candidates are accepted).
    window : int
        Largest offset, in pixels, of the source pixel.
    generator : torch.Generator or sequence of them, optional
        One generator for the batch or one per image; None uses torch's default.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``.
    """
    _, channels, height, width = images.shape
    draws = 8 * deflections
    output = images.flatten(1).clone()
    for row, image_generator in enumerate(per_image(generator, len(images))):
        ys = randint(0, height, (draws,), image_generator, images.device)
        xs = randint(0, width, (draws,), image_generator, images.device)
        cs = randint(0, channels, (draws,), image_generator, images.device)
        keep = rand((draws,), image_generator, images.device) < relevance[row].flatten()[ys * width + xs]
        accepted = ~keep & (torch.cumsum(~keep, dim=0) <= deflections)
        offsets = randint(-window, window + 1, (2, draws), image_generator, images.device)
        source_y = (ys + offsets[0]).clamp(0, height - 1)
        source_x = (xs + offsets[1]).clamp(0, width - 1)
        target = ((cs * height + ys) * width + xs)[accepted]
        source = ((cs * height + source_y) * width + source_x)[accepted]
        output[row, target] = images[row].flatten()[source]
    return output.view_as(images)


class PixelDeflection(nn.Module):
    """Pixel deflection guided by the robust activation map, then BayesShrink.

    Parameters
    ----------
    classifier : Classifier
        Its CAMs give the robust activation map.
    deflections, window : int
        200 and 10 in the paper.
    sigma : float
        Noise level of the wavelet shrinkage (0.04 in the paper).
    top_k : int
        Classes pooled into the robust activation map (5 in the paper).
    wavelet : str
        ``"db1"``, scikit-image's default, as in the authors' code.
    """

    classifier: Classifier

    def __init__(self, classifier: Classifier, deflections: int = 200, window: int = 10, sigma: float = 0.04,
                 top_k: int = 5, wavelet: str = "db1") -> None:
        super().__init__()
        if deflections < 0 or window < 1 or top_k < 1:
            raise ConfigError("pixel deflection needs deflections >= 0, window >= 1 and top_k >= 1")
        check_shrinkage(sigma, "bayes")
        self.__dict__["classifier"] = classifier  # used, not owned: kept out of the module tree
        self.deflections, self.window, self.sigma, self.top_k, self.wavelet = deflections, window, sigma, top_k, wavelet

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        check_images(images)
        with torch.no_grad():
            relevance = robust_activation_map(self.classifier, images, self.top_k)
            deflected = deflect_pixels(images, relevance, self.deflections, self.window, generator)
            return wavelet_denoise_torch(deflected, self.sigma, self.wavelet, None, "bayes")

    def differentiable_approximation(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Identity through the deflections, exact gradients through a torch wavelet shrinkage."""
        return wavelet_denoise_torch(images, self.sigma, self.wavelet, None, "bayes")

    def extra_repr(self) -> str:
        return (f"classifier={self.classifier.name!r}, deflections={self.deflections}, window={self.window}, "
                f"sigma={self.sigma}, top_k={self.top_k}, wavelet={self.wavelet!r}")
