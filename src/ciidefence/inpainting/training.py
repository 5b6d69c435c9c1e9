"""Training the DeepFill-style inpainter on holes shaped like CIIDefence's.

Each step draws one hole size ``w`` (from 2 to 16, the classifier-scale half
widths CIIDefence uses), takes for each image of the batch a square crop
three hole-widths wide (the window the inpainter sees at inference) around a
hole of side ``2w + 1``, adds a few smaller random holes, and minimises the
spatially discounted L1 loss of Yu et al. (pixels deep inside a hole, which
no method can know, count less) on the refined and, for a learned coarse
stage, the coarse output. An optional WGAN-GP term with a global and a local
critic (the paper's) can be switched on with ``adversarial_weight``.

The loop, checkpoints (weights, optimiser, critics, step, and the generator's
state, written atomically every few minutes) and resume are the shared
:class:`ciidefence.training.trainer.Trainer`'s.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..training.trainer import DecodedImages
from ..training.trainer import Trainer as BaseTrainer
from .deepfill import DeepFill, DeepFillConfig, save_deepfill, window_side


@dataclass(frozen=True)
class TrainingConfig:
    """How the inpainter is trained.

    Attributes
    ----------
    steps, batch_size : int
    learning_rate : float
        Adam's, with betas (0.5, 0.9) as in the paper.
    min_half_width, max_half_width : int
        Range of the main hole's ``w`` (side ``2w + 1``).
    extra_holes : int
        Up to this many further random holes per crop.
    discount : float
        ``gamma`` of the spatially discounted L1 (0.99 in the paper; 1 for plain L1).
    adversarial_weight : float
        Weight of the WGAN-GP generator loss; 0 trains on L1 alone.
    gradient_penalty : float
        WGAN-GP's penalty weight (10).
    validation_images : int
        Images held back (the last ones, sorted by name) for validation.
    seed : int
    """

    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-4
    min_half_width: int = 2
    max_half_width: int = 16
    extra_holes: int = 2
    discount: float = 0.99
    adversarial_weight: float = 0.001
    gradient_penalty: float = 10.0
    validation_images: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not 0 < self.learning_rate < 1:
            raise ConfigError("steps and batch size must be positive and the learning rate in (0, 1)")
        if not 1 <= self.min_half_width <= self.max_half_width:
            raise ConfigError("need 1 <= min_half_width <= max_half_width")
        if not 0 < self.discount <= 1 or self.adversarial_weight < 0:
            raise ConfigError("discount must lie in (0, 1] and adversarial_weight be non-negative")


DRAWS_PER_CROP = 100
"""Images drawn for one crop before a folder is declared unreadable."""


def crop_side(half_width: int) -> int:
    """The crop side for a hole of half width ``w``: the window :func:`~.deepfill.hole_windows` puts around it."""
    return window_side(2 * half_width + 1)


def sample_batch(images: Sequence[torch.Tensor | None], half_width: int, count: int, extra_holes: int,
                 rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` crops around a ``2w + 1`` hole (jittered about the centre) with up to ``extra_holes`` more.

    Images that are ``None`` (unreadable) are drawn again. Returns crops
    ``(count, 3, S, S)`` and holes ``(count, 1, S, S)`` (1 = missing).
    """
    side = crop_side(half_width)
    box = 2 * half_width + 1
    crops, holes = [], []
    for _ in range(count):
        image = _draw(images, rng)
        height, width = image.shape[-2:]
        if min(height, width) < side:
            image = F.interpolate(image[None], scale_factor=side / min(height, width) + 1e-3, mode="bilinear",
                                  align_corners=False, antialias=True)[0]
            height, width = image.shape[-2:]
        top, left = rng.randrange(height - side + 1), rng.randrange(width - side + 1)
        crop = image[:, top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        hole = torch.zeros(1, side, side)
        jitter = max(1, side // 8)
        y = (side - box) // 2 + rng.randint(-jitter, jitter)
        x = (side - box) // 2 + rng.randint(-jitter, jitter)
        hole[:, y : y + box, x : x + box] = 1
        for _ in range(rng.randint(0, extra_holes)):
            small = 2 * rng.randint(1, max(1, half_width // 2)) + 1
            y, x = rng.randrange(side - small + 1), rng.randrange(side - small + 1)
            hole[:, y : y + small, x : x + small] = 1
        crops.append(crop)
        holes.append(hole)
    return torch.stack(crops), torch.stack(holes)


def _draw(images: Sequence[torch.Tensor | None], rng: random.Random) -> torch.Tensor:
    for _ in range(DRAWS_PER_CROP):
        image = images[rng.randrange(len(images))]
        if image is not None:
            return image
    raise ConfigError(f"none of {DRAWS_PER_CROP} training images drawn in a row could be read")


def discount_weights(holes: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma ** d`` inside the holes, ``d`` the distance to the nearest known pixel; 0 outside."""
    from scipy import ndimage

    weights = np.stack([gamma ** ndimage.distance_transform_edt(hole) * hole for hole in holes[:, 0].numpy()])
    return torch.from_numpy(weights.astype(np.float32))[:, None]


def discounted_l1(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``weights * |output - target|`` over the weighted pixels."""
    return (weights * (output - target).abs()).sum() / (3 * weights.sum()).clamp(min=1e-6)


def masked_psnr(output: torch.Tensor, target: torch.Tensor, holes: torch.Tensor) -> float:
    """PSNR (dB) of the filled pixels against the originals, over all holes of the batch."""
    error = ((output - target) ** 2 * holes).sum() / (3 * holes.sum()).clamp(min=1)
    return float(10 * torch.log10(1 / error.clamp(min=1e-10)))


class Critic(nn.Module):
    """A WGAN critic: strided convolutions, averaged over positions, and a linear score.

    The paper's global and local critics end in a linear layer over a fixed
    size; the average makes one critic serve the crops of every hole size.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for index in range(4):
            layers += [nn.Conv2d(channels, width * 2 ** min(index, 2), 5, 2, 2), nn.LeakyReLU(0.2)]
            channels = width * 2 ** min(index, 2)
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(images * 2 - 1).mean(dim=(2, 3)))


def _gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _local(images: torch.Tensor, side: int) -> torch.Tensor:
    """The centre half of each crop, where the main hole lies."""
    start = side // 4
    return images[..., start : start + side // 2, start : start + side // 2]


class Trainer(BaseTrainer):
    """Train (or resume training) a :class:`DeepFill` on a folder of images.

    Parameters
    ----------
    data : path
        A folder of images, in any layout.
    out : path
        The weights file to write (safetensors).
    model_config : DeepFillConfig
    config : TrainingConfig
    device : torch.device
    resume : bool
        Continue from the checkpoint.
    checkpoint : path, optional
        The training state: a work file, never inside the package (default: ``out`` + ``.ckpt``).
    """

    def __init__(self, data: str | os.PathLike, out: str | os.PathLike, model_config: DeepFillConfig,
                 config: TrainingConfig, device: torch.device, resume: bool = False,
                 checkpoint: str | os.PathLike | None = None) -> None:
        super().__init__(data, out, config, device, checkpoint)
        self.validation = self._validation_set()
        torch.manual_seed(config.seed)
        self.model = DeepFill(model_config).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), config.learning_rate, betas=(0.5, 0.9))
        self.critics: nn.ModuleDict | None = None
        if config.adversarial_weight > 0:
            self.critics = nn.ModuleDict({"global": Critic(model_config.width), "local": Critic(model_config.width)})
            self.critics.to(device)
        self.critic_optimiser: torch.optim.Optimizer | None = None
        self.begin(resume)

    def _validation_set(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed crops and holes (seeded) at w = 4, 8, 12 and 16 from the held-back images."""
        images = DecodedImages(self.validation_paths)
        rng = random.Random(12345)
        return [sample_batch(images, w, 16, 0, rng) for w in (4, 8, 12, 16)]

    def validate(self) -> dict[str, float]:
        """Masked PSNR of the model, and of the harmonic fill, at each validation hole size."""
        from .harmonic import inpaint_harmonic

        self.model.eval()
        found = {}
        with torch.no_grad():
            for w, (crops, holes) in zip((4, 8, 12, 16), self.validation, strict=True):
                crops, holes = crops.to(self.device), holes.to(self.device)
                found[f"psnr_w{w}"] = masked_psnr(self.model(crops, holes), crops, holes)
                found[f"harmonic_w{w}"] = masked_psnr(inpaint_harmonic(crops, holes[:, 0] > 0), crops, holes)
        self.model.train()
        return found

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its losses."""
        config = self.config
        half_width = self.rng.randint(config.min_half_width, config.max_half_width)
        crops, holes = sample_batch(self.train_images, half_width, config.batch_size, config.extra_holes, self.rng)
        weights = discount_weights(holes, config.discount).to(self.device)
        crops, holes = crops.to(self.device), holes.to(self.device)
        output = self.model(crops, holes)
        loss = discounted_l1(output, crops, weights)
        losses = {"l1": float(loss.detach())}
        if self.model.config.coarse == "network":
            coarse = self.model.coarse_fill(crops, holes)
            coarse_loss = discounted_l1(coarse, crops, weights)
            loss = loss + coarse_loss
            losses["coarse_l1"] = float(coarse_loss.detach())
        if self.critics is not None:
            loss = loss + self._adversarial(crops, output, losses)
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return losses

    def _adversarial(self, crops: torch.Tensor, output: torch.Tensor, losses: dict[str, float]) -> torch.Tensor:
        """One critic update (WGAN-GP, global and local), and the generator's adversarial loss."""
        if self.critics is None:
            raise ConfigError("the adversarial loss needs adversarial_weight > 0")
        side = crops.shape[-1]
        pairs = {"global": (crops, output), "local": (_local(crops, side), _local(output, side))}
        if self.critic_optimiser is None:
            self.critic_optimiser = torch.optim.Adam(self.critics.parameters(), self.config.learning_rate,
                                                     betas=(0.5, 0.9))
        critic_loss = sum(
            self.critics[name](fake.detach()).mean() - self.critics[name](real).mean()
            + self.config.gradient_penalty * _gradient_penalty(self.critics[name], real, fake.detach())
            for name, (real, fake) in pairs.items()
        )
        self.critic_optimiser.zero_grad()
        critic_loss.backward()
        self.critic_optimiser.step()
        generator_loss = -sum(self.critics[name](fake).mean() for name, (_, fake) in pairs.items())
        losses["critic"] = float(critic_loss.detach())
        return self.config.adversarial_weight * generator_loss

    def model_tensors(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
            "critics": self.critics.state_dict() if self.critics is not None else None,
            "critic_optimiser": self.critic_optimiser.state_dict() if self.critic_optimiser is not None else None,
            "model_config": asdict(self.model.config),
        }

    def load_checkpoint_state(self, saved: dict) -> None:
        if saved["model_config"] != asdict(self.model.config):
            raise ConfigError(f"{self.checkpoint_path} was trained with another architecture: {saved['model_config']}")
        self.model.load_state_dict(saved["model"])
        self.optimiser.load_state_dict(saved["optimiser"])
        if self.critics is not None and saved["critics"] is not None:
            self.critics.load_state_dict(saved["critics"], strict=False)

    def write_weights(self, path: Path) -> None:
        save_deepfill(self.model, path, {"steps": self.state.step, "training": json.dumps(asdict(self.config))})

    def describe(self, losses: dict[str, float], latest: dict) -> str:
        return f"l1 {losses['l1']:.4f}" + (
            f", val PSNR w8 {latest['psnr_w8']:.2f} dB (harmonic {latest['harmonic_w8']:.2f})" if latest else "")
