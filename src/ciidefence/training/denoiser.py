"""Training the Gaussian denoiser of denoised smoothing (Salman et al., NeurIPS 2020).

Two phases, as in the paper: first the mean squared error between the
denoised noisy crop (before it is clamped to [0, 1]: see
:meth:`~ciidefence.denoising.learned.GaussianDenoiser.estimate`) and the
clean one (``steps`` before ``stability_from``), then the stability
objective through the frozen classifier: the cross-entropy between the
classifier's logits on the denoised noisy image and its own prediction on
the clean image (no labels needed), at the classifier's input size. Our
addition: the stability phase keeps the MSE as an anchor
(``stability_mse_weight`` times it), because on its own the objective
drifted here to a denoiser of 13 dB PSNR whose agreement at σ = 0.12 and
0.25 fell below the bare noisy image's. Each image of a batch gets a noise
level drawn from ``sigmas``; the denoiser is told it (an input channel).

Validation, on fixed crops of held-back images with fixed noise at each σ:
the PSNR of the denoised image, and how often the classifier's prediction on
it agrees with its prediction on the clean image, beside the bare noisy
image's agreement.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..denoising.learned import DenoiserConfig, GaussianDenoiser, load_denoiser, save_denoiser, weights_digest
from ..errors import ConfigError
from ..models.base import Classifier
from .trainer import DecodedImages, Trainer


@dataclass(frozen=True)
class DenoiserTrainingConfig:
    """How the denoiser is trained.

    Attributes
    ----------
    steps : int
        Steps in all.
    stability_from : int
        The step from which the stability objective replaces the MSE (``steps`` or more: MSE only).
    batch_size, crop, learning_rate :
        The MSE phase's batch, square crop side and Adam learning rate.
    stability_batch_size, stability_learning_rate :
        The stability phase's (its crops are the classifier's input size).
    stability_mse_weight : float
        The weight of the MSE kept beside the stability objective (0: the objective alone).
    sigmas : tuple of float
        Noise levels, in [0, 1] pixel units; each image draws one.
    validation_images : int
        Images held back (the last ones, sorted by name).
    seed : int
    """

    steps: int = 4000
    stability_from: int = 2000
    batch_size: int = 16
    crop: int = 128
    learning_rate: float = 1e-3
    stability_batch_size: int = 8
    stability_learning_rate: float = 1e-4
    stability_mse_weight: float = 100.0
    sigmas: tuple[float, ...] = field(default=(0.12, 0.25, 0.5))
    validation_images: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.stability_batch_size, self.crop) < 1 or self.stability_from < 0:
            raise ConfigError("steps, batch sizes and the crop must be positive, and stability_from non-negative")
        if not (0 < self.learning_rate < 1 and 0 < self.stability_learning_rate < 1):
            raise ConfigError("the learning rates must lie in (0, 1)")
        if not self.stability_mse_weight >= 0:
            raise ConfigError(f"stability_mse_weight must be non-negative, got {self.stability_mse_weight}")
        if not self.sigmas or not all(0 < s < 1 for s in self.sigmas):
            raise ConfigError(f"the noise levels must lie in (0, 1), got {self.sigmas}")


def random_crops(images: DecodedImages, side: int, count: int, rng: random.Random) -> torch.Tensor:
    """``(count, 3, side, side)`` random crops (randomly mirrored); images shorter than ``side`` are enlarged."""
    crops = []
    for _ in range(100 * count):
        image = images[rng.randrange(len(images))]
        if image is None:
            continue
        height, width = image.shape[-2:]
        if min(height, width) < side:
            scale = side / min(height, width)
            image = F.interpolate(image[None], size=(max(side, round(height * scale)), max(side, round(width * scale))),
                                  mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
            height, width = image.shape[-2:]
        top, left = rng.randint(0, height - side), rng.randint(0, width - side)
        crop = image[:, top : top + side, left : left + side]
        crops.append(crop.flip(-1) if rng.random() < 0.5 else crop)
        if len(crops) == count:
            return torch.stack(crops)
    raise ConfigError("too few readable training images to draw crops from")


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    error = F.mse_loss(output, target).item()
    return 10 * math.log10(1 / max(error, 1e-12))


class DenoiserTrainer(Trainer):
    """Train (or resume training) a :class:`GaussianDenoiser` on a folder of images.

    ``classifier`` (frozen) gives the stability objective and the validation's agreement figures.
    ``init_from`` (a denoiser's safetensors file, e.g. the shipped one) starts from its weights instead of
    random ones (fine-tuning, say for one σ); its architecture replaces ``model_config``.
    """

    def __init__(self, data: str | os.PathLike, out: str | os.PathLike, model_config: DenoiserConfig,
                 config: DenoiserTrainingConfig, device: torch.device, classifier: Classifier,
                 resume: bool = False, checkpoint: str | os.PathLike | None = None,
                 init_from: str | os.PathLike | None = None) -> None:
        super().__init__(data, out, config, device, checkpoint)
        self.classifier = classifier.to(device).eval()
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)
        torch.manual_seed(config.seed)
        if init_from is None:
            self.model, self.init_digest = GaussianDenoiser(model_config).to(device), None
        else:
            self.model, self.init_digest = load_denoiser(init_from, device).train(), weights_digest(init_from)
        self.optimiser = torch.optim.Adam(self.model.parameters(), config.learning_rate)
        self.validation = self._validation_set()
        self.begin(resume)

    def _validation_set(self) -> list[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(σ, clean views, noisy views, the classifier's clean predictions) at each σ, with fixed noise."""
        held = DecodedImages(self.validation_paths)
        views = torch.cat([self.classifier.prepare(image[None].to(self.device))
                           for image in held if image is not None]).cpu()
        with torch.no_grad():
            predictions = self.classifier(views.to(self.device)).argmax(1).cpu()
        generator = torch.Generator().manual_seed(12345)
        return [(sigma, views, (views + sigma * torch.randn(views.shape, generator=generator)).clamp(0, 1),
                 predictions) for sigma in self.config.sigmas]

    def _noisy(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image with Gaussian noise of a level drawn from ``sigmas``, and the levels ``(B,)``."""
        generator = torch.Generator().manual_seed(self.rng.getrandbits(63))
        sigmas = torch.tensor([self.rng.choice(self.config.sigmas) for _ in range(len(clean))])
        noise = torch.randn(clean.shape, generator=generator)
        return (clean + sigmas.view(-1, 1, 1, 1) * noise).clamp(0, 1).to(self.device), sigmas.to(self.device)

    watched_losses = ("mse",)

    def step(self) -> dict[str, float]:
        config = self.config
        stability = self.state.step >= config.stability_from
        for group in self.optimiser.param_groups:
            group["lr"] = config.stability_learning_rate if stability else config.learning_rate
        if stability:
            clean = random_crops(self.train_images, self.classifier.input_size, config.stability_batch_size, self.rng)
            noisy, sigmas = self._noisy(clean)
            clean = clean.to(self.device)
            with torch.no_grad():
                target = self.classifier(clean).argmax(1)
            estimate = self.model.estimate(noisy, sigmas)
            loss = F.cross_entropy(self.classifier(estimate.clamp(0, 1)), target)
            if config.stability_mse_weight:
                loss = loss + config.stability_mse_weight * F.mse_loss(estimate, clean)
            name = "stability"
        else:
            clean = random_crops(self.train_images, config.crop, config.batch_size, self.rng)
            noisy, sigmas = self._noisy(clean)
            loss = F.mse_loss(self.model.estimate(noisy, sigmas), clean.to(self.device))
            name = "mse"
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return {name: float(loss.detach())}

    def validate(self) -> dict[str, float]:
        """Per σ: the denoised PSNR (``psnr_s``), and the classifier's agreement with its clean predictions on
        the denoised (``agree_s``) and the bare noisy images (``bare_s``)."""
        self.model.eval()
        found = {}
        with torch.no_grad():
            for sigma, clean, noisy, predictions in self.validation:
                denoised = self.model(noisy.to(self.device), sigma)
                found[f"psnr_s{sigma:g}"] = psnr(denoised.cpu(), clean)
                agree = self.classifier(denoised).argmax(1).cpu() == predictions
                bare = self.classifier(noisy.to(self.device)).argmax(1).cpu() == predictions
                found[f"agree_s{sigma:g}"] = float(agree.float().mean())
                found[f"bare_s{sigma:g}"] = float(bare.float().mean())
        self.model.train()
        return found

    def model_tensors(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def checkpoint_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "model_config": asdict(self.model.config), "init_from": self.init_digest}

    def load_checkpoint_state(self, saved: dict) -> None:
        if saved.get("model_config") != asdict(self.model.config):
            raise ConfigError(f"{self.checkpoint_path} was trained with another architecture: "
                              f"{saved.get('model_config')}")
        self.model.load_state_dict(saved["model"])
        self.optimiser.load_state_dict(saved["optimiser"])
        self.init_digest = saved.get("init_from")

    def write_weights(self, path: Path) -> None:
        started_from = {"init_from": self.init_digest} if self.init_digest else {}
        save_denoiser(self.model, path, {"steps": str(self.state.step), "training": json.dumps(asdict(self.config)),
                                         "classifier": self.classifier.name, **started_from})

    def describe(self, losses: dict[str, float], latest: dict) -> str:
        text = ", ".join(f"{key} {value:.4f}" for key, value in losses.items())
        agreement = [f"σ={key[7:]} {100 * value:.0f}%" for key, value in latest.items() if key.startswith("agree_s")]
        return text + (f", val agreement {' '.join(agreement)}" if agreement else "")
