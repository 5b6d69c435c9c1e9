"""CIIDefence's parameters, in one immutable, validated configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..denoising import WAVELET_BACKENDS, check_shrinkage
from ..errors import ConfigError
from ..fusion import FUSIONS
from ..inpainting import INPAINTERS, check_precision
from ..regions import REGION_METHODS

MAX_MASK_FRACTION = 0.5
"""Largest share of the classifier's view the boxes may cover; beyond it CIIDefence would erase the image."""


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
    peak_threshold : float
        A local maximum counts as a peak only if its CAM value is at least
        this fraction of its map's maximum, in [0, 1): weaker maxima (often at
        the borders) are noise, not evidence.
    inpainter : str
        One of ``"telea"``, ``"navier-stokes"``, ``"biharmonic"``, ``"harmonic"`` (torch-native),
        ``"deepfill"`` (the project's trained DeepFill-style network) or ``"learned"`` (your TorchScript file).
    inpaint_radius : float
        Neighbourhood radius of the OpenCV inpainters, in image pixels.
    inpainter_model : str, optional
        TorchScript file of the ``"learned"`` inpainter, or weights for ``"deepfill"`` (default: the shipped ones).
    trust_model : bool
        Allow the ``"learned"`` inpainter's TorchScript file to load. Such a
        file is a program: loading and calling it runs its code with your
        rights. False (the default) refuses it.
    inpainter_precision : str
        ``"float32"`` or ``"bfloat16"``: the arithmetic of the ``"deepfill"``
        network (bfloat16 runs its convolutions under autocast: about twice
        as fast on CPUs with AMX or AVX-512 BF16 and on GPUs, fills within
        0.01 dB of float32's; docs/JOURNAL.md).
    sigma : float
        Noise level assumed by the wavelet shrinkage, for images in [0, 1].
    wavelet : str
        PyWavelets wavelet name.
    wavelet_levels : int, optional
        Decomposition levels; None for scikit-image's default.
    threshold : str
        ``"bayes"`` (BayesShrink) or ``"visu"`` (VisuShrink).
    wavelet_backend : str
        ``"torch"`` (ptwt: batched, any device, differentiable; each image's
        output is the same whatever the batch) or ``"skimage"`` (scikit-image,
        image by image on the CPU; the reference, equal within 1e-4).
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
    half_width: int = 8
    peak_threshold: float = 0.1
    inpainter: str = "deepfill"
    inpaint_radius: float = 3.0
    inpainter_model: str | None = None
    inpainter_precision: str = "float32"
    trust_model: bool = False
    sigma: float = 0.05
    wavelet: str = "db2"
    wavelet_levels: int | None = None
    threshold: str = "bayes"
    wavelet_backend: str = "torch"
    fusion: str = "mask"
    regions: str = "cam"
    denoise: bool = True

    def __post_init__(self) -> None:
        import pywt

        for name, minimum in (("top_k", 1), ("peaks", 1), ("half_width", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not 0 <= self.peak_threshold < 1:
            raise ConfigError(f"peak_threshold must lie in [0, 1), got {self.peak_threshold!r}")
        if self.inpainter not in INPAINTERS:
            raise ConfigError(f"unknown inpainter {self.inpainter!r}; choose one of: {', '.join(INPAINTERS)}")
        if self.inpainter == "learned" and not self.inpainter_model:
            raise ConfigError("inpainter 'learned' needs inpainter_model, a TorchScript file")
        if self.inpainter == "learned" and not self.trust_model:
            raise ConfigError(f"inpainter 'learned' loads {self.inpainter_model}, a TorchScript program that runs "
                              f"with your rights: pass --trust-model (trust_model=True) if you trust its author")
        check_precision(self.inpainter, self.inpainter_precision)
        check_shrinkage(self.sigma, self.threshold)
        if self.wavelet_backend not in WAVELET_BACKENDS:
            raise ConfigError(f"unknown wavelet backend {self.wavelet_backend!r}; "
                              f"choose one of: {', '.join(WAVELET_BACKENDS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of: {', '.join(FUSIONS)}")
        if not 0 < self.inpaint_radius < float("inf"):
            raise ConfigError(f"inpaint_radius must be positive and finite, got {self.inpaint_radius}")
        if self.regions not in REGION_METHODS:
            raise ConfigError(f"unknown regions {self.regions!r}; choose one of: {', '.join(REGION_METHODS)}")
        if not isinstance(self.denoise, bool):
            raise ConfigError(f"denoise must be true or false, got {self.denoise!r}")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ConfigError(f"unknown wavelet {self.wavelet!r}; e.g. db1, db2, sym4, coif1")

    def check_coverage(self, input_size: int) -> None:
        """Refuse boxes that could cover more than :data:`MAX_MASK_FRACTION` of an ``input_size`` view.

        Raises
        ------
        ConfigError
            If ``top_k * peaks`` boxes of side ``2 half_width + 1`` can cover
            more than that share: CIIDefence would then erase the image, and
            an inpainter filling from a vanished border returns it unchanged.
        """
        if self.regions == "none":
            return
        side = min(2 * self.half_width + 1, input_size)
        fraction = self.top_k * self.peaks * side * side / (input_size * input_size)
        if fraction > MAX_MASK_FRACTION:
            raise ConfigError(
                f"{self.top_k * self.peaks} boxes of {side}x{side} px can cover {fraction:.0%} of the "
                f"{input_size}x{input_size} view (limit {MAX_MASK_FRACTION:.0%}); lower --half-width, --top-k "
                f"or --peaks"
            )

    def to_dict(self) -> dict:
        """The parameters, as stored in results and hashed into the defence's digest.

        Fields added after 0.2 are left out while they hold their default, so
        the digests of configurations that existed before them, and the run
        folders that store those, stay valid.
        """
        found = dataclasses.asdict(self)
        for name, default in FIELDS_ADDED_AFTER_0_2.items():
            if found[name] == default:
                del found[name]
        return found


FIELDS_ADDED_AFTER_0_2 = {"inpainter_precision": "float32", "trust_model": False}
"""Fields added to :class:`CIIDefenceConfig` after 0.2, with their defaults (see ``to_dict``)."""


STRENGTHS = ("light", "balanced")
"""Named operating points, by increasing robustness and clean cost; ``balanced`` is ``CIIDefenceConfig()``."""

_STRENGTH_SETTINGS: dict[str, dict] = {
    # Chosen by `ciid sweep` on the 500 shared images (docs/JOURNAL.md, issue 12).
    "light": {"half_width": 4, "sigma": 0.015},
    "balanced": {},
}

REMOVED_STRENGTHS = {
    "strong": "it was the same point as balanced: the sweep that chose the points stopped at sigma 0.05, where the "
              "rule for strong (the most robust at 75% clean or more) picks balanced's point. Use balanced; a larger "
              "--sigma trades clean accuracy for gray-box robustness (issue 43's calibration, first 100 shared images: "
              "sigma 0.07 kept 69.0% clean and 57.3% mean robust, against balanced's 73.0% and 50.5%)",
}
"""Strengths offered before and withdrawn, with why (said when one is asked for)."""


def strength_config(name: str) -> CIIDefenceConfig:
    """The configuration of a named operating point.

    Parameters
    ----------
    name : {"light", "balanced"}
        ``light``: the most robust point that keeps clean top-1 within 2
        points of the undefended classifier's; ``balanced`` (the default): the
        point of highest mean of clean and gray-box robust top-1. Measured
        with EfficientNet-Lite0 on the 500 shared images (docs/JOURNAL.md).

    Raises
    ------
    ConfigError
        If ``name`` is not one of :data:`STRENGTHS` (for a withdrawn one, :data:`REMOVED_STRENGTHS` says why).
    """
    if name in REMOVED_STRENGTHS:
        raise ConfigError(f"strength {name!r} was removed: {REMOVED_STRENGTHS[name]}")
    if name not in _STRENGTH_SETTINGS:
        raise ConfigError(f"unknown strength {name!r}; choose one of: {', '.join(STRENGTHS)}")
    return CIIDefenceConfig(**_STRENGTH_SETTINGS[name])
