"""CIIDefence: class-specific image inpainting fused with wavelet denoising.

A. Gupta and E. Rahtu, "CIIDefence: Defeating Adversarial Attacks by Fusing
Class-Specific Image Inpainting and Image Denoising", ICCV 2019.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pywt
import torch
from torch import nn

from ..denoising import wavelet_denoise, wavelet_denoise_torch
from ..denoising.wavelet import check_shrinkage
from ..errors import ConfigError
from ..fusion import FUSIONS, fuse
from ..inpainting import INPAINTERS, inpaint
from ..models.base import Classifier
from ..regions.cam import ClassEvidence, class_activation_maps
from ..regions.selection import boxes_to_mask, peaks_to_boxes, select_peaks
from ..validation import check_images

REGION_CHOICES = ("cam", "random", "none")


@dataclass(frozen=True)
class CIIDefenceConfig:
    """Every parameter of CIIDefence, immutable.

    Attributes
    ----------
    top_k : int
        Top-ranking classes whose CAMs select regions (paper: "multiple").
    peaks : int
        Local maxima taken per CAM (``p``).
    half_width : int
        Boxes are ``2 w + 1`` pixels square in the classifier's input pixels (``w``).
    inpainter : str
        One of ``"telea"``, ``"navier-stokes"``, ``"biharmonic"``, ``"harmonic"`` (torch-native), ``"learned"``.
    inpaint_radius : float
        Neighbourhood radius of the OpenCV inpainters, in image pixels.
    inpainter_model : str, optional
        TorchScript file of the learned inpainter.
    sigma : float
        Noise level assumed by the wavelet shrinkage, for images in [0, 1].
    wavelet : str
        PyWavelets wavelet name.
    wavelet_levels : int, optional
        Decomposition levels; None for scikit-image's default.
    threshold : str
        ``"bayes"`` (BayesShrink) or ``"visu"`` (VisuShrink).
    fusion : str
        ``"mask"``: inpainted inside the boxes, denoised elsewhere (the paper's);
        ``"denoise-after"``: denoise the inpainted image as a whole.
    regions : str
        How the boxes are chosen: ``"cam"`` (around CAM peaks, the paper's),
        ``"random"`` (the same number of boxes of the same size, placed
        uniformly at random; an ablation) or ``"none"`` (no boxes: wavelet
        denoising only; an ablation).
    denoise : bool
        False skips the wavelet denoising (inpainting only; an ablation).
    """

    top_k: int = 3
    peaks: int = 2
    half_width: int = 4
    inpainter: str = "telea"
    inpaint_radius: float = 3.0
    inpainter_model: str | None = None
    sigma: float = 0.015
    wavelet: str = "db2"
    wavelet_levels: int | None = None
    threshold: str = "bayes"
    fusion: str = "mask"
    regions: str = "cam"
    denoise: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("top_k", 1), ("peaks", 1), ("half_width", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.inpainter not in INPAINTERS:
            raise ConfigError(f"unknown inpainter {self.inpainter!r}; choose one of: {', '.join(INPAINTERS)}")
        if self.inpainter == "learned" and not self.inpainter_model:
            raise ConfigError("inpainter 'learned' needs inpainter_model, a TorchScript file")
        check_shrinkage(self.sigma, self.threshold)
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of: {', '.join(FUSIONS)}")
        if not self.inpaint_radius > 0:
            raise ConfigError(f"inpaint_radius must be positive, got {self.inpaint_radius}")
        if self.regions not in REGION_CHOICES:
            raise ConfigError(f"unknown regions {self.regions!r}; choose one of: {', '.join(REGION_CHOICES)}")
        if not isinstance(self.denoise, bool):
            raise ConfigError(f"denoise must be true or false, got {self.denoise!r}")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(f"unknown wavelet {self.wavelet!r}; e.g. db1, db2, sym4, coif1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash identifying this configuration in result tables."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


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


def select_regions(
    classifier: Classifier, images: torch.Tensor, evidence: ClassEvidence | None, config: CIIDefenceConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes chosen as ``config.regions`` says, and their union mask at the images' size.

    Parameters
    ----------
    classifier : Classifier
        Gives the view geometry from the classifier's input to image pixels.
    images : torch.Tensor
        ``(B, 3, H, W)``; only its shape and device are used.
    evidence : ClassEvidence or None
        The CAMs; needed when ``config.regions == "cam"``.
    config : CIIDefenceConfig

    Returns
    -------
    mask : torch.Tensor
        ``(B, H, W)`` bool.
    boxes : torch.Tensor
        ``(B, N, 4)`` in image pixels; ``N = k * p``, or 0 for ``regions="none"``.
    valid : torch.Tensor
        ``(B, N)`` bool.
    """
    batch, height, width = images.shape[0], *images.shape[-2:]
    count = config.top_k * config.peaks if config.regions != "none" else 0
    if config.regions == "cam":
        peaks, valid = select_peaks(evidence.cams, config.peaks, 2 * config.half_width + 1)
        peaks, valid = peaks.flatten(1, 2), valid.flatten(1)
    else:
        peaks = torch.randint(0, classifier.input_size, (batch, count, 2), device=images.device)
        valid = torch.ones(batch, count, dtype=torch.bool, device=images.device)
    scale, top, left = classifier.view_geometry(height, width)
    boxes = peaks_to_boxes(peaks, config.half_width, scale, top, left)
    return boxes_to_mask(boxes, valid, height, width), boxes, valid


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


def purify(
    images: torch.Tensor,
    classifier: Classifier,
    config: CIIDefenceConfig | None = None,
    timings: dict[str, float] | None = None,
) -> Purification:
    """Purify images with CIIDefence, keeping every intermediate.

    1. rank the classes and take the CAMs of the top ``k``;
    2. select ``p`` peaks per CAM and the union of their boxes;
    3. inpaint the boxes and wavelet-denoise the image;
    4. fuse the two.

    ``config.regions`` and ``config.denoise`` switch steps off for ablations.

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

    Returns
    -------
    Purification
        ``output`` has the input's shape.
    """
    config = config or CIIDefenceConfig()
    check_images(images)
    height, width = images.shape[-2:]
    with torch.no_grad():
        evidence = None
        if config.regions == "cam":
            with _timed(timings, "cam"):
                evidence = class_activation_maps(classifier, images, config.top_k)
        with _timed(timings, "regions"):
            mask, boxes, valid = select_regions(classifier, images, evidence, config)
        with _timed(timings, "inpaint"):
            inpainted = inpaint(
                images, mask, config.inpainter, config.inpaint_radius, config.inpainter_model
            ) if mask.any() else images
        if not config.denoise:
            return Purification(inpainted, inpainted, images, mask, boxes, valid, evidence)
        # Equal within 1e-4 (tested); scikit-image is faster for one image on a CPU, ptwt for batches and GPUs.
        single_cpu_image = images.device.type == "cpu" and len(images) == 1
        denoiser = wavelet_denoise if single_cpu_image else wavelet_denoise_torch
        with _timed(timings, "denoise"):
            denoised = denoiser(
                images if config.fusion == "mask" else inpainted,
                config.sigma, config.wavelet, config.wavelet_levels, config.threshold,
            )
        with _timed(timings, "fuse"):
            output = fuse(inpainted, denoised, mask) if config.fusion == "mask" else denoised
    return Purification(output, inpainted, denoised, mask, boxes, valid, evidence)


class CIIDefence(nn.Module):
    """CIIDefence as a preprocessing module: ``images -> purified images``.

    Parameters
    ----------
    classifier : Classifier
        The classifier whose CAMs choose the regions to inpaint.
    config : CIIDefenceConfig, optional

    Notes
    -----
    The map is not differentiable (inpainting, thresholds, peak selection);
    its output carries no gradient.
    """

    def __init__(self, classifier: Classifier, config: CIIDefenceConfig | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.config = config or CIIDefenceConfig()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] to purified images of the same shape."""
        return purify(images, self.classifier, self.config).output

    def differentiable_approximation(self, images: torch.Tensor) -> torch.Tensor:
        """A differentiable stand-in for BPDA: exact gradients through a torch
        wavelet shrinkage, identity through the inpainting; the region mask is
        recomputed from ``images`` but not differentiated."""
        config = self.config
        if config.denoise:
            denoised = wavelet_denoise_torch(
                images, config.sigma, config.wavelet, config.wavelet_levels, config.threshold
            )
        else:
            denoised = images
        if config.fusion == "denoise-after" or config.regions == "none":
            return denoised
        with torch.no_grad():
            evidence = None
            if config.regions == "cam":
                evidence = class_activation_maps(self.classifier, images.detach(), config.top_k)
            mask, _, _ = select_regions(self.classifier, images, evidence, config)
        return fuse(images, denoised, mask)
