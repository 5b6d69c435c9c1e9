"""Input-transformation rivals of CIIDefence.

JPEG compression (Das et al. 2017; Guo et al., ICLR 2018), bit-depth
reduction and median smoothing (Xu et al., NDSS 2018) and total-variance
minimisation (Guo et al., ICLR 2018) are the Adversarial Robustness Toolbox's
own preprocessors, wrapped as ``images -> images`` modules. Random
resize-and-pad (Xie et al., ICLR 2018) is written here, batched in torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..randomness import Generators, per_image, rand, randint
from ..validation import check_images


class NoDefence(nn.Module):
    """The identity: the undefended classifier's "defence"."""

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return images


class ARTTransform(nn.Module):
    """An ART numpy preprocessor as a module on ``(B, 3, H, W)`` tensors in [0, 1].

    Parameters
    ----------
    preprocessor : art.defences.preprocessor.Preprocessor
        Called as ``preprocessor(x)`` and returning ``(x, y)``.
    channels_last : bool
        True if ``preprocessor`` wants ``(B, H, W, 3)`` arrays.
    """

    def __init__(self, preprocessor, channels_last: bool = False) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Apply the preprocessor; ``generator`` is unused (these transforms are deterministic)."""
        check_images(images)
        array = images.detach().to("cpu", torch.float32).numpy()
        if self.channels_last:
            array = array.transpose(0, 2, 3, 1)
        output, _ = self.preprocessor(np.ascontiguousarray(array))
        if self.channels_last:
            output = output.transpose(0, 3, 1, 2)
        result = torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32))
        return result.to(images.device, images.dtype).clamp(0, 1)

    def extra_repr(self) -> str:
        return type(self.preprocessor).__name__


def jpeg_compression(quality: int = 75) -> ARTTransform:
    """JPEG at ``quality`` (1-95), through ART's ``JpegCompression``."""
    from art.defences.preprocessor import JpegCompression

    if not 1 <= quality <= 95:
        raise ConfigError(f"JPEG quality must be between 1 and 95, got {quality}")
    return ARTTransform(JpegCompression(clip_values=(0.0, 1.0), quality=quality, channels_first=True))


def bit_depth_reduction(bit_depth: int = 5) -> ARTTransform:
    """Round every value to ``bit_depth`` bits, through ART's ``FeatureSqueezing``."""
    from art.defences.preprocessor import FeatureSqueezing

    if not 1 <= bit_depth <= 8:
        raise ConfigError(f"bit depth must be between 1 and 8, got {bit_depth}")
    return ARTTransform(FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bit_depth))


def median_smoothing(window_size: int = 3) -> ARTTransform:
    """A ``window_size``-square median filter per channel, through ART's ``SpatialSmoothing``."""
    from art.defences.preprocessor import SpatialSmoothing

    if window_size < 1:
        raise ConfigError(f"median window must be at least 1, got {window_size}")
    return ARTTransform(SpatialSmoothing(window_size=window_size, channels_first=True, clip_values=(0.0, 1.0)))


class TotalVarianceMinimization(nn.Module):
    """Reconstruct each image from a random ``prob`` share of its pixels with a TV prior.

    The reconstruction is ART's ``TotalVarMin`` (L-BFGS-B on its objective);
    the random pixel mask is drawn here, from ``generator``, instead of from
    numpy's global generator as ART does.

    Parameters
    ----------
    prob : float
        Share of pixels kept, in (0, 1].
    lamb : float
        Weight of the total variation term, non-negative.
    max_iter : int
        L-BFGS-B iterations.

    References
    ----------
    C. Guo, M. Rana, M. Cisse and L. van der Maaten, "Countering Adversarial
    Images using Input Transformations", ICLR 2018.
    """

    def __init__(self, prob: float = 0.3, lamb: float = 0.03, max_iter: int = 10) -> None:
        super().__init__()
        from art.defences.preprocessor import TotalVarMin

        if not 0 < prob <= 1 or lamb < 0 or max_iter < 1:
            raise ConfigError("total-variance minimisation needs 0 < prob <= 1, lamb >= 0 and max_iter >= 1")
        self.prob, self.lamb, self.max_iter = prob, lamb, max_iter
        self.art = TotalVarMin(prob=prob, lamb=lamb, max_iter=max_iter, clip_values=(0.0, 1.0))

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] to reconstructed images; one mask per image from its generator."""
        check_images(images)
        array = images.detach().to("cpu", torch.float32).numpy().transpose(0, 2, 3, 1)
        outputs = []
        for image, image_generator in zip(array, per_image(generator, len(array)), strict=True):
            mask = (rand(image.shape, image_generator).numpy() < self.prob).astype(int)
            outputs.append(self.art._minimize(image, mask))
        result = torch.from_numpy(np.ascontiguousarray(np.stack(outputs).transpose(0, 3, 1, 2), dtype=np.float32))
        return result.to(images.device, images.dtype).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"prob={self.prob}, lamb={self.lamb}, max_iter={self.max_iter}"


def random_resize_pad(images: torch.Tensor, max_ratio: float = 331 / 299, generator: Generators = None) -> torch.Tensor:
    """Xie et al.'s randomisation, at the input's own size.

    Each image is resized to a random side between ``H`` and ``H * max_ratio``
    (the paper: 299 to 331), zero-padded at a random offset to
    ``H * max_ratio``, and resized back to ``H x W`` so the classifier's input
    size is unchanged.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1].
    max_ratio : float
        Canvas size over image size, above 1.
    generator : torch.Generator or sequence of them, optional
        Source of the draws: one for the batch, or one per image (then each
        image's output depends on its own generator only). None uses torch's
        default generator.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``, differentiable in ``images``.

    References
    ----------
    C. Xie, J. Wang, Z. Zhang, Z. Ren and A. Yuille, "Mitigating Adversarial
    Effects Through Randomization", ICLR 2018.
    """
    if not max_ratio > 1:
        raise ConfigError(f"max_ratio must be above 1, got {max_ratio}")
    height, width = images.shape[-2:]
    canvas_h, canvas_w = round(height * max_ratio), round(width * max_ratio)
    outputs = []
    for image, image_generator in zip(images, per_image(generator, len(images)), strict=True):
        side = int(randint(height, canvas_h, (), image_generator))
        new_w = max(1, min(canvas_w, round(width * side / height)))
        resized = F.interpolate(image[None], size=(side, new_w), mode="nearest")
        top = int(randint(0, canvas_h - side + 1, (), image_generator))
        left = int(randint(0, canvas_w - new_w + 1, (), image_generator))
        padded = F.pad(resized, (left, canvas_w - new_w - left, top, canvas_h - side - top))
        outputs.append(F.interpolate(padded, size=(height, width), mode="bilinear", align_corners=False,
                                     antialias=True))
    return torch.cat(outputs).clamp(0, 1)


class RandomResizePad(nn.Module):
    """:func:`random_resize_pad` as a module; differentiable, and random (use EOT)."""

    def __init__(self, max_ratio: float = 331 / 299) -> None:
        super().__init__()
        if not max_ratio > 1:
            raise ConfigError(f"max_ratio must be above 1, got {max_ratio}")
        self.max_ratio = max_ratio

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        check_images(images)
        return random_resize_pad(images, self.max_ratio, generator)

    def differentiable_approximation(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """The transformation itself, which is differentiable (drawing from ``generator`` as ``forward`` does)."""
        return random_resize_pad(images, self.max_ratio, generator)

    def extra_repr(self) -> str:
        return f"max_ratio={self.max_ratio:.4f}"
