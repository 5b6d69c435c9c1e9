"""A learned Gaussian denoiser, the front of denoised smoothing (Salman et al., NeurIPS 2020).

:class:`GaussianDenoiser` is a small residual U-Net conditioned on the noise
level (an input channel holding σ, as in FFDNet), so one network serves
every σ it was trained on. It works at half resolution after a pixel
unshuffle, which keeps its cost a fraction of the classifier's at the
certification's many noisy copies. Its weights load from safetensors only
(:func:`load_denoiser`); the shipped ones (``ciidefence/data/denoiser.safetensors``)
were trained here (``ciid train-denoiser``) on ``../shared/data/inpainting-train``,
never on the evaluation images.

References
----------
.. [1] H. Salman, M. Sun, G. Yang, A. Kapoor and J. Z. Kolter, "Denoised Smoothing: A Provable Defense for
       Pretrained Classifiers", NeurIPS 2020.
.. [2] K. Zhang, W. Zuo and L. Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image
       Denoising", IEEE TIP 2018.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..validation import check_images


@dataclass(frozen=True)
class DenoiserConfig:
    """The denoiser's architecture: ``width`` channels at half resolution, doubled at each of ``levels``
    downsamplings."""

    width: int = 32
    levels: int = 2

    def __post_init__(self) -> None:
        if self.width < 4 or not 1 <= self.levels <= 4:
            raise ConfigError(f"a denoiser needs width >= 4 and 1 to 4 levels, got {self.width} and {self.levels}")


def _block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True),
                         nn.Conv2d(channels_out, channels_out, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True))


class GaussianDenoiser(nn.Module):
    """Images with Gaussian noise of level σ to clean estimates.

    ``forward(images, sigma)``: ``images`` ``(B, 3, H, W)`` in [0, 1] (any
    size; padded inside to a multiple of ``2 ** (levels + 1)``), ``sigma`` a
    float or a ``(B,)`` tensor in [0, 1] pixel units; returns ``(B, 3, H, W)``
    in [0, 1]. Differentiable.
    """

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config or DenoiserConfig()
        width, levels = self.config.width, self.config.levels
        self.stem = _block(4 * 3 + 1, width)
        self.down = nn.ModuleList(_block(width * 2**i, width * 2 ** (i + 1), stride=2) for i in range(levels))
        self.reduce = nn.ModuleList(nn.Conv2d(width * 2 ** (i + 1), width * 2**i, 1) for i in range(levels))
        self.up = nn.ModuleList(_block(width * 2 ** (i + 1), width * 2**i) for i in range(levels))
        self.out = nn.Conv2d(width, 4 * 3, 3, 1, 1)
        for parameter in self.out.parameters():  # starts as the identity
            nn.init.zeros_(parameter)
        self.to(memory_format=torch.channels_last)  # oneDNN's convolutions run a third faster so on a CPU

    def forward(self, images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        return self.estimate(images, sigma).clamp(0, 1)

    def estimate(self, images: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """The clean estimate before it is clamped to [0, 1]: what training's MSE reads.

        Clamped, a pixel pushed out of range gives no gradient, and the
        network sat for hundreds of steps at the noisy image's PSNR
        (docs/JOURNAL.md, issue 41); unclamped, the error still pulls it back.
        """
        height, width = images.shape[-2:]
        multiple = 2 ** (self.config.levels + 1)
        padded = F.pad(images, (0, -width % multiple, 0, -height % multiple), mode="replicate")
        level = torch.as_tensor(sigma, dtype=images.dtype, device=images.device).reshape(-1, 1, 1, 1)
        half = F.pixel_unshuffle(padded, 2).contiguous(memory_format=torch.channels_last)
        features = self.stem(torch.cat([half, level.expand(len(half), 1, *half.shape[-2:])], 1))
        skips = []
        for down in self.down:
            skips.append(features)
            features = down(features)
        for reduce, up, skip in zip(reversed(self.reduce), reversed(self.up), reversed(skips), strict=True):
            features = F.interpolate(reduce(features), size=skip.shape[-2:], mode="nearest")
            features = up(torch.cat([features, skip], 1))
        residual = F.pixel_shuffle(self.out(features), 2)
        return (padded + residual)[..., :height, :width]


class DenoiserFront(nn.Module):
    """The denoiser at a fixed noise level, as a front: ``(B, 3, H, W)`` in [0, 1] to the same shape.

    ``generator`` is accepted, as every defence's, and unused: the denoiser draws nothing.
    """

    def __init__(self, denoiser: GaussianDenoiser, sigma: float) -> None:
        super().__init__()
        if not 0 < sigma < 1:
            raise ConfigError(f"the denoiser's sigma must lie in (0, 1), got {sigma}")
        self.denoiser, self.sigma = denoiser, sigma

    def forward(self, images: torch.Tensor, generator: object = None) -> torch.Tensor:
        check_images(images)
        return self.denoiser(images, self.sigma)

    def differentiable_approximation(self, images: torch.Tensor, generator: object = None) -> torch.Tensor:
        """The denoiser itself, with gradients (for BPDA's ``differentiable`` approximation: it is exact)."""
        return self.denoiser(images, self.sigma)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


def shipped_denoiser_path() -> Path:
    return Path(str(resources.files("ciidefence.data").joinpath("denoiser.safetensors")))


def weights_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a weights file: what identifies a denoiser in results."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def save_denoiser(model: GaussianDenoiser, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the weights and the architecture as safetensors (no code, no pickle), atomically."""
    from ..files import save_safetensors

    save_safetensors(model.state_dict(), path, {"config": json.dumps(asdict(model.config)), **(metadata or {})})


def load_denoiser(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> GaussianDenoiser:
    """A :class:`GaussianDenoiser` from a safetensors file (default: the shipped weights), in eval mode.

    Raises
    ------
    CheckpointError
        If the file is missing, not safetensors, of another architecture, or holds non-finite weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path) if path is not None else shipped_denoiser_path()
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        config = DenoiserConfig(**json.loads(metadata["config"]))
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such denoiser weights file") from None
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{path}: not denoiser weights in safetensors format ({error})") from None
    model = GaussianDenoiser(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights of another architecture ({str(error).splitlines()[0]})") from None
    if not all(torch.isfinite(tensor).all() for tensor in state.values()):
        raise CheckpointError(f"{path}: holds NaN or infinite weights")
    return model.to(device).eval()
