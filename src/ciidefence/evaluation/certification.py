"""A certification run: CERTIFY on every image of a data set, for each noise level and front; typed and resumable.

:class:`CertifyConfig` is what determines the run (stored, and matched on
``--resume`` wherever the data lies); each :class:`Setting` (σ, the front's
identity and digest, N0, N, α) is resolved once and stored with every row;
a unit is one image under one setting, written in one transaction, so a
killed run loses at most the image in progress. Every noise draw comes from
a generator seeded by (seed, model, σ, image): every front sees the same
noise (a paired comparison), and a resumed run or one in another order
certifies the same radii.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..defences.config import CIIDefenceConfig
from ..defences.registry import DEFENCES, Defence, build_defence, defence_params
from ..errors import CIIDefenceError, ConfigError, one_line
from ..images import DEFAULT_MAX_PIXELS, load_image
from ..models import load_classifier
from ..progress import ProgressBar
from ..randomness import seeded_generator
from ..smoothing.certify import certify, check_smoothing
from .certificates import CertificateRow, CheckRow
from .data import LabelledImage, load_dataset
from .store import NO_PREDICTION, ResultStore
from .stored import StoredConfig

FRONTS = ("none", "wavelet", "learned")
"""The fronts by their smoothing names: nothing, CIIDefence's wavelet shrinkage at the noise's σ, the learned
Gaussian denoiser at the noise's σ. Any defence of the registry may be named too."""


@dataclass(frozen=True)
class CertifyConfig(StoredConfig):
    """Everything that determines a certification run's results; a resumed run must match it.

    ``fronts`` are :data:`FRONTS` or defence names; ``ciid`` the CIIDefence
    configuration a CIIDefence front starts from; ``denoiser_model`` the
    learned denoiser's weights (None: the shipped ones).
    """

    data: str
    labels: str | None
    model: str
    sigmas: tuple[float, ...] = (0.25,)
    fronts: tuple[str, ...] = ("learned",)
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch_size: int = 100
    limit: int | None = None
    seed: int = 0
    ciid: dict | None = None
    denoiser_model: str | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    data_digest: str | None = None

    def __post_init__(self) -> None:
        if not self.sigmas or not self.fronts:
            raise ConfigError("give at least one --sigma and one --denoiser")
        for sigma in self.sigmas:
            check_smoothing(sigma, self.n0, self.n, self.alpha)
        for front in self.fronts:
            if front not in FRONTS and front not in DEFENCES:
                raise ConfigError(f"unknown front {front!r}; choose from: {', '.join(FRONTS)} or a defence "
                                  f"({', '.join(name for name in DEFENCES if name != 'none')})")
        if self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ConfigError("--batch-size and --limit must be positive")

    def located(self) -> CertifyConfig:
        """The data's paths and the denoiser's weights made absolute (for processes that start elsewhere)."""
        located = super().located()
        if self.denoiser_model is None:
            return located
        return dataclasses.replace(located, denoiser_model=str(Path(self.denoiser_model).resolve()))


@dataclass(frozen=True)
class Setting:
    """One certified configuration: the noise level, the front that is smoothed, and CERTIFY's counts.

    ``front`` is the name asked for (``learned``, ``wavelet``, ``none`` or a
    defence's); ``front_name``, ``front_config`` and ``front_hash`` the
    defence it was built as, its full parameters and their digest.
    """

    sigma: float
    front: str
    front_name: str
    front_config: str
    front_hash: str
    n0: int
    n: int
    alpha: float

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> str:
        return f"σ={self.sigma:g} {self.front}"


def build_front(front: str, classifier, sigma: float, ciid: CIIDefenceConfig,
                denoiser_model: str | None) -> Defence:
    """The defence a front name stands for at noise level ``sigma``."""
    if front == "none":
        return build_defence("none", classifier)
    if front == "wavelet":
        shrinkage = CIIDefenceConfig(**{**ciid.to_dict(), "sigma": sigma})
        return build_defence("ciid-denoise-only", classifier, params=defence_params("ciid-denoise-only", shrinkage))
    if front == "learned":
        return build_defence("gaussian-denoiser", classifier, params={"sigma": sigma, "weights": denoiser_model})
    return build_defence(front, classifier, ciid)


Unit = tuple[Setting, int, LabelledImage]
"""(setting, the image's index in the plan, the image): the work one transaction writes."""


class Certification:
    """A certification run over one classifier: every image under every setting.

    Building it checks the model, the data and the fronts, and writes nothing.
    """

    def __init__(self, config: CertifyConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.classifier = load_classifier(config.model).to(device)
        self.images = load_dataset(config.data, config.labels, num_classes=1000)[: config.limit]
        ciid = CIIDefenceConfig(**config.ciid) if config.ciid else CIIDefenceConfig()
        self.fronts: dict[str, Defence] = {}
        self.settings: list[Setting] = []
        for sigma in config.sigmas:
            for front in config.fronts:
                defence = build_front(front, self.classifier, sigma, ciid, config.denoiser_model)
                setting = Setting(sigma, front, defence.name, defence.params_json, defence.digest, config.n0,
                                  config.n, config.alpha)
                self.fronts[setting.digest] = defence
                self.settings.append(setting)

    def units(self) -> list[Unit]:
        """Every unit, image by image and, for each image, every setting: a run stopped at any point holds
        paired certificates (every front on the same images and noise)."""
        return [(setting, index, item) for index, item in enumerate(self.images) for setting in self.settings]

    def pending(self, store: ResultStore) -> list[Unit]:
        done = store.certified(self.classifier.name)
        return [(setting, index, item) for setting, index, item in self.units()
                if (item.key, setting.digest) not in done]

    def noise_generator(self, setting: Setting, item: LabelledImage) -> torch.Generator:
        """The noise of ``item`` at ``setting``'s σ: the same for every front (a paired comparison)."""
        return seeded_generator(self.config.seed, self.classifier.name, setting.sigma, item.key)

    def read_view(self, item: LabelledImage) -> torch.Tensor | str:
        """``item`` at the classifier's view (on the CPU), or why it cannot be read."""
        try:
            image = load_image(item.path, self.config.max_pixels, self.classifier.view_side)
            return self.classifier.prepare(image[None])[0]
        except CIIDefenceError as error:
            return str(error)

    def run_unit(self, setting: Setting, item: LabelledImage, view: torch.Tensor | str | None = None
                 ) -> CertificateRow:
        """``item``'s certificate under ``setting``, or its error row; ``view`` is the image as
        :meth:`read_view` gives it (default: read here)."""
        started = time.perf_counter()
        view = self.read_view(item) if view is None else view
        if isinstance(view, str):
            return self.error_row(setting, item, view)
        try:
            view = view.to(self.device)
            front = self.fronts[setting.digest]
            front_generator = seeded_generator(self.config.seed, self.classifier.name, setting.sigma, item.key,
                                               setting.front_hash, "front")

            def base(noisy: torch.Tensor) -> torch.Tensor:
                return self.classifier(front(noisy, generator=front_generator))

            certificate = certify(base, view, setting.sigma, setting.n0, setting.n, setting.alpha,
                                  self.config.batch_size, self.noise_generator(setting, item))
        except CIIDefenceError as error:
            return self.error_row(setting, item, str(error))
        except Exception as error:  # one failed unit must not end a run of hours: the same rule as evaluate's
            return self.error_row(setting, item, f"unit failed: {type(error).__name__}: {one_line(error)}")
        return self._row(setting, item, certificate.top_class, certificate.count, certificate.p_lower,
                         certificate.radius, certificate.prediction, time.perf_counter() - started)

    def error_row(self, setting: Setting, item: LabelledImage, message: str) -> CertificateRow:
        """The row that records why ``item`` has no certificate under ``setting``."""
        return self._row(setting, item, error=message)

    def _row(self, setting: Setting, item: LabelledImage, top_class: int = NO_PREDICTION, count: int = 0,
             p_lower: float = 0.0, radius: float = 0.0, prediction: int = NO_PREDICTION, seconds: float = 0.0,
             error: str | None = None) -> CertificateRow:
        return CertificateRow(item.key, item.label, self.classifier.name, setting.digest, setting.sigma,
                              setting.front, setting.front_config, setting.front_hash, setting.n0, setting.n,
                              setting.alpha, top_class, count, p_lower, radius, prediction,
                              int(error is None and prediction == item.label), seconds, error)

    def forget_failed(self, store: ResultStore) -> int:
        """Delete the certificates that record an error, so that the run redoes those units; returns how many."""
        failed = store.failed_certificates(self.classifier.name)
        units = [(setting.digest, index, item.key) for setting, index, item in self.units()
                 if (item.key, setting.digest) in failed]
        store.forget_certificates(self.classifier.name, units)
        return len(units)

    def check(self, store: ResultStore, limit: int, steps: int = 20, samples: int = 16,
              progress: Callable[[int], ProgressBar] | None = None) -> None:
        """Attack each certified image among the first ``limit`` (SmoothAdv inside its radius), and record
        whether the smoothed classifier's answer flips (:func:`~ciidefence.smoothing.attack.flips_within`)."""
        keys = {item.key: item for item in self.images[:limit]}
        done = store.checked(self.classifier.name)
        work = [row for row in store.certificate_rows() if row.model == self.classifier.name
                and row.image in keys and row.prediction >= 0 and (row.image, row.setting) not in done
                and row.setting in self.fronts]
        bar = progress(len(work)) if progress else None
        settings = {setting.digest: setting for setting in self.settings}
        try:
            for row in work:
                store.write_check(self._check_one(row, settings[row.setting], keys[row.image], steps, samples))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def _check_one(self, row: CertificateRow, setting: Setting, item: LabelledImage, steps: int,
                   samples: int) -> CheckRow:
        from ..defences.bpda import bpda_approximation
        from ..smoothing.attack import flips_within, straight_through

        started = time.perf_counter()
        front = self.fronts[setting.digest]
        view = self.classifier.prepare(load_image(item.path, self.config.max_pixels,
                                                  self.classifier.view_side)[None].to(self.device))[0]
        draws = seeded_generator(self.config.seed, self.classifier.name, setting.sigma, item.key, setting.front_hash,
                                 "check")
        approximation = (bpda_approximation(front.module, "differentiable")
                         if "differentiable" in front.approximations else None)

        def defended(noisy: torch.Tensor) -> torch.Tensor:
            return front(noisy, generator=draws)

        def approximated(noisy: torch.Tensor) -> torch.Tensor:
            return approximation(noisy, draws) if approximation is not None else noisy

        def base(noisy: torch.Tensor) -> torch.Tensor:
            return self.classifier(defended(noisy))

        check = flips_within(base, straight_through(defended, approximated, self.classifier), view,
                             row.prediction, row.radius, setting.sigma, setting.n, setting.alpha,
                             self.config.batch_size, draws, steps, samples)
        return CheckRow(item.key, self.classifier.name, setting.digest, row.prediction, row.radius, check.budget,
                        check.l2, steps, samples, check.prediction, int(check.flipped), time.perf_counter() - started)

    def record_plan(self, store: ResultStore) -> None:
        store.set_meta("kind", "certify")
        store.set_meta("images", str(len(self.images)))
        store.set_meta("units_total", str(len(self.units())))
        store.set_meta("settings", json.dumps([asdict(s) | {"digest": s.digest} for s in self.settings]))

    def run(self, store: ResultStore, progress: Callable[[int], ProgressBar] | None = None) -> None:
        """Certify every pending unit here, each written in one transaction."""
        work = self.pending(store)
        bar = progress(len(work)) if progress else None
        self.record_plan(store)
        try:
            for setting, index, item in work:
                if bar is not None:
                    bar.set_postfix_str(setting.describe())
                store.write_certificate(self.run_unit(setting, item), unit=(self.classifier.name, setting.digest,
                                                                            index))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
