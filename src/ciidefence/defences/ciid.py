"""CIIDefence: class-specific image inpainting fused with wavelet denoising.

A. Gupta and E. Rahtu, "CIIDefence: Defeating Adversarial Attacks by Fusing
Class-Specific Image Inpainting and Image Denoising", ICCV 2019.

One pipeline definition, :func:`run_pipeline`, serves both the defence
(:func:`purify`, with the real stages) and its BPDA approximation
(:func:`approximate`, with differentiable stand-ins for the stages that are
not).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..denoising import wavelet_shrinkage
from ..errors import ConfigError
from ..fusion import denoiser_input, fuse
from ..inpainting import DIFFERENTIABLE_INPAINTERS, inpaint
from ..models.base import Classifier
from ..randomness import Generators
from ..regions.cam import ClassEvidence, class_activation_maps
from ..regions.selection import select_regions
from ..validation import check_images
from .config import CIIDefenceConfig


@dataclass(frozen=True)
class Purification:
    """Every intermediate of one purification, for inspection and figures.

    Attributes
    ----------
    output : torch.Tensor
        ``(B, 3, H, W)`` purified images.
    inpainted, denoised : torch.Tensor
        ``(B, 3, H, W)`` the two branches before fusion.
    mask : torch.Tensor
        ``(B, H, W)`` bool, the inpainted region.
    boxes : torch.Tensor
        ``(B, k * p, 4)`` float ``(y0, x0, y1, x1)`` boxes in image pixels.
    box_valid : torch.Tensor
        ``(B, k * p)`` bool, False for boxes of maps with too few peaks.
    evidence : ClassEvidence or None
        Classes, probabilities and CAMs of the input; None when the regions
        were not chosen by CAMs.
    """

    output: torch.Tensor
    inpainted: torch.Tensor
    denoised: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor
    box_valid: torch.Tensor
    evidence: ClassEvidence | None


@dataclass(frozen=True)
class Stages:
    """The two image-to-image stages of the pipeline, swappable for BPDA.

    Attributes
    ----------
    inpaint : callable
        ``inpaint(images, mask) -> images`` with ``mask`` ``(B, H, W)`` bool.
    denoise : callable
        ``denoise(images) -> images``.
    """

    inpaint: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    denoise: Callable[[torch.Tensor], torch.Tensor]


def exact_stages(config: CIIDefenceConfig) -> Stages:
    """The real stages: the configured inpainter and wavelet shrinkage."""
    return Stages(
        inpaint=lambda images, mask: inpaint(images, mask, config.inpainter, config.inpaint_radius,
                                             config.inpainter_model, config.inpainter_precision,
                                             config.trust_model),
        denoise=lambda images: wavelet_shrinkage(images, config.sigma, config.wavelet, config.wavelet_levels,
                                                 config.threshold, config.wavelet_backend),
    )


def differentiable_stages(config: CIIDefenceConfig, through_inpainter: bool = False) -> Stages:
    """BPDA's stand-ins: exact gradients through a torch wavelet shrinkage; through the inpainting, identity
    or (``through_inpainter``, for the torch-native inpainters) the inpainter itself."""
    if through_inpainter and config.inpainter not in DIFFERENTIABLE_INPAINTERS:
        raise ConfigError(f"no gradients flow through the {config.inpainter!r} inpainter; "
                          f"use one of: {', '.join(DIFFERENTIABLE_INPAINTERS)}")
    return Stages(
        inpaint=exact_stages(config).inpaint if through_inpainter else lambda images, mask: images,
        denoise=lambda images: wavelet_shrinkage(images, config.sigma, config.wavelet, config.wavelet_levels,
                                                 config.threshold, "torch"),
    )


@contextlib.contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    if timings is None:
        yield
        return
    started = time.perf_counter()
    yield
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it to time it
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started


def run_pipeline(
    images: torch.Tensor,
    classifier: Classifier,
    config: CIIDefenceConfig,
    stages: Stages,
    timings: dict[str, float] | None = None,
    generator: Generators = None,
) -> Purification:
    """CIIDefence's steps with the given stages; regions are chosen without gradients.

    1. rank the classes and take the CAMs of the top ``k``;
    2. select ``p`` peaks per CAM and the union of their boxes;
    3. inpaint the boxes and denoise the image (``stages``);
    4. fuse the two.

    ``config.regions`` and ``config.denoise`` switch steps off for ablations.
    See :func:`purify` for the parameters.
    """
    check_images(images)
    evidence = None
    with torch.no_grad():
        if config.regions == "cam":
            with _timed(timings, "cam"):
                evidence = class_activation_maps(classifier, images.detach(), config.top_k)
        with _timed(timings, "regions"):
            mask, boxes, valid = select_regions(classifier, images, evidence, config.regions, config.top_k,
                                                config.peaks, config.half_width, config.peak_threshold, generator)
    with _timed(timings, "inpaint"):
        inpainted = stages.inpaint(images, mask) if mask.any() else images
    if not config.denoise:
        return Purification(inpainted, inpainted, images, mask, boxes, valid, evidence)
    with _timed(timings, "denoise"):
        denoised = stages.denoise(denoiser_input(images, inpainted, config.fusion))
    with _timed(timings, "fuse"):
        output = fuse(inpainted, denoised, mask, config.fusion)
    return Purification(output, inpainted, denoised, mask, boxes, valid, evidence)


def purify(
    images: torch.Tensor,
    classifier: Classifier,
    config: CIIDefenceConfig | None = None,
    timings: dict[str, float] | None = None,
    generator: Generators = None,
) -> Purification:
    """Purify images with CIIDefence, keeping every intermediate.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, 3, H, W)`` in [0, 1], at the images' own resolution.
    classifier : Classifier
        The classifier to protect; its CAMs choose the regions.
    config : CIIDefenceConfig, optional
        Defaults to ``CIIDefenceConfig()``.
    timings : dict, optional
        If given, the seconds spent in each stage (``"cam"``, ``"regions"``,
        ``"inpaint"``, ``"denoise"``, ``"fuse"``) are added to it.
    generator : torch.Generator or sequence of them, optional
        Only ``regions="random"`` draws: one generator for the batch or one per image.

    Returns
    -------
    Purification
        ``output`` has the input's shape.
    """
    config = config or CIIDefenceConfig()
    with torch.no_grad():
        return run_pipeline(images, classifier, config, exact_stages(config), timings, generator)


def approximate(
    images: torch.Tensor, classifier: Classifier, config: CIIDefenceConfig, generator: Generators = None,
    through_inpainter: bool = False,
) -> torch.Tensor:
    """CIIDefence's differentiable BPDA stand-in: the same pipeline with :func:`differentiable_stages`.

    The region mask is recomputed from ``images`` but not differentiated.
    """
    stages = differentiable_stages(config, through_inpainter)
    return run_pipeline(images, classifier, config, stages, generator=generator).output


class CIIDefence(nn.Module):
    """CIIDefence as a preprocessing module: ``images -> purified images``.

    Parameters
    ----------
    classifier : Classifier
        The classifier whose CAMs choose the regions to inpaint. It is used,
        not owned: it is not a submodule (not in ``state_dict()``), so move it
        to a device yourself.
    config : CIIDefenceConfig, optional

    Raises
    ------
    ConfigError
        If the boxes could cover more than half of the classifier's view.

    Notes
    -----
    The map is not differentiable (inpainting, thresholds, peak selection);
    its output carries no gradient. :meth:`differentiable_approximation` is
    the stand-in BPDA attacks differentiate.
    """

    classifier: Classifier

    def __init__(self, classifier: Classifier, config: CIIDefenceConfig | None = None) -> None:
        super().__init__()
        self.__dict__["classifier"] = classifier  # used, not owned: kept out of the module tree
        self.config = config or CIIDefenceConfig()
        self.config.check_coverage(classifier.input_size)

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] to purified images of the same shape."""
        return purify(images, self.classifier, self.config, generator=generator).output

    def differentiable_approximation(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """See :func:`approximate`: identity through the inpainting."""
        return approximate(images, self.classifier, self.config, generator)

    def inpainter_approximation(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """See :func:`approximate`: gradients through the inpainter as well (torch-native inpainters only)."""
        return approximate(images, self.classifier, self.config, generator, through_inpainter=True)

    def extra_repr(self) -> str:
        changed = {name: value for name, value in self.config.to_dict().items()
                   if value != getattr(CIIDefenceConfig, name)}
        settings = ", ".join(f"{name}={value!r}" for name, value in changed.items()) or "defaults"
        return f"classifier={self.classifier.name!r}, {settings}"
