"""The training loop every learned component shares: images, checkpoints, resume, validation, progress.

A model's trainer (the inpainter's in :mod:`ciidefence.inpainting.training`,
the denoiser's in :mod:`ciidefence.training.denoiser`) subclasses
:class:`Trainer` and says only what is its own: one optimisation step, its
validation, the state its checkpoint holds, and how its weights are written.
The base class lists and caches the training images, holds back the last
ones for validation, writes the checkpoint (a work file, never inside the
package) and the weights atomically every few minutes, and resumes a killed
run where it stopped.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, ImageError
from ..files import check_writable_folder, refuse_link, write_atomically
from ..images import IMAGE_SUFFIXES, load_image
from ..progress import ProgressBar

PACKAGE_FOLDER = Path(__file__).resolve().parents[1]
"""The installed ciidefence package: shipped weights only, never a training checkpoint."""


class BlowUpWatch:
    """Whether a positive loss has blown up without becoming infinite: its running mean (exponential, weight
    ``smoothing`` per step) risen above ``factor`` times the lowest running mean it reached after ``warm_up``
    steps. One per loss name, since a model's phases have losses of different scales.

    A denoiser trained here at Adam 1e-3 went from an MSE of 0.006 to 0.31 and stayed there (docs/JOURNAL.md,
    issue 41): training went on for half an hour on a broken network, which this stops.
    """

    def __init__(self, factor: float = 10.0, smoothing: float = 0.05, warm_up: int = 100) -> None:
        self.factor, self.smoothing, self.warm_up = factor, smoothing, warm_up
        self.mean: float | None = None
        self.lowest = math.inf
        self.seen = 0

    def blew_up(self, loss: float) -> bool:
        self.mean = loss if self.mean is None else (1 - self.smoothing) * self.mean + self.smoothing * loss
        self.seen += 1
        if self.seen < self.warm_up:
            return False
        self.lowest = min(self.lowest, self.mean)
        return self.mean > self.factor * self.lowest


def training_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file below ``folder`` (any layout, the ImageNet training folders included), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of training images")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(found) < 2:
        raise ConfigError(f"{folder}: needs at least 2 images to train and validate on, found {len(found)}")
    return found


class DecodedImages(Sequence):
    """Training images decoded on demand; the most recently used are kept, up to ``max_bytes`` of pixels.

    A folder the size of ImageNet's training set does not fit in memory as
    decoded float images, so none is decoded before it is drawn. A small
    folder (the 999 training photographs, about 1 GB decoded) ends up wholly
    cached, as if it had been loaded up front. ``images[i]`` is the
    ``(3, H, W)`` image in [0, 1], or ``None`` where the file cannot be read.
    """

    def __init__(self, paths: Sequence[Path], max_bytes: int = 2 << 30) -> None:
        self.paths, self.max_bytes = list(paths), max_bytes
        self._cache: OrderedDict[int, torch.Tensor | None] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | None:  # type: ignore[override]
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        try:
            image: torch.Tensor | None = load_image(self.paths[index])
        except ImageError:
            image = None
        size = image.numel() * image.element_size() if image is not None else 0
        while self._cache and self._bytes + size > self.max_bytes:
            _, dropped = self._cache.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size() if dropped is not None else 0
        self._cache[index] = image
        self._bytes += size
        return image

    @property
    def cached_bytes(self) -> int:
        return self._bytes


@dataclass
class TrainingState:
    step: int
    history: list[dict]


class Trainer:
    """Train (or resume training) a model on a folder of images.

    Parameters
    ----------
    data : path
        A folder of images, in any layout.
    out : path
        The weights file to write (safetensors).
    config : dataclass
        The model's training configuration; the loop reads its ``steps``,
        ``validation_images`` and ``seed``, and the checkpoint stores it whole.
    device : torch.device
    checkpoint : path, optional
        The training state (weights, optimisers, random state): a work file,
        never inside the package (default: ``out`` + ``.ckpt``).

    A subclass builds its model and optimisers, then calls :meth:`begin`.
    """

    def __init__(self, data: str | os.PathLike, out: str | os.PathLike, config, device: torch.device,
                 checkpoint: str | os.PathLike | None = None) -> None:
        self.out = Path(out)
        self.checkpoint_path = Path(checkpoint) if checkpoint else self.out.with_name(self.out.name + ".ckpt")
        if self.checkpoint_path.resolve().is_relative_to(PACKAGE_FOLDER):
            raise ConfigError(f"{self.checkpoint_path} lies inside the ciidefence package, where training state never "
                              f"goes: give --checkpoint a work file elsewhere (e.g. runs/{self.out.stem}.ckpt)")
        if self.out.suffix != ".safetensors":
            raise ConfigError(f"--out {self.out}: the weights are written as safetensors; give a path ending in "
                              f".safetensors")
        if self.checkpoint_path.resolve() == self.out.resolve():
            raise ConfigError("--checkpoint and --out must be two files")
        for path, option in ((self.out, "--out"), (self.checkpoint_path, "--checkpoint")):
            refuse_link(path)
            check_writable_folder(path.parent, option, create=True)
        self.config, self.device = config, device
        paths = training_images(data)
        held = min(config.validation_images, len(paths) // 5) or 1
        self.train_paths, self.validation_paths = paths[:-held], paths[-held:]
        self.train_images = DecodedImages(self.train_paths)
        self.rng = random.Random(config.seed)
        self.state = TrainingState(0, [])

    def begin(self, resume: bool) -> None:
        """Restore the checkpoint (``resume``), or refuse to start over one."""
        if resume:
            self._restore()
            if self.state.step >= self.config.steps:
                raise ConfigError(f"{self.checkpoint_path} is at step {self.state.step}, and --steps is "
                                  f"{self.config.steps}: nothing left to train; give a larger --steps to go on")
        elif self.checkpoint_path.exists():
            raise ConfigError(f"{self.checkpoint_path} exists: pass --resume to continue that run, or remove it")
        elif self.out.exists():
            raise ConfigError(f"--out {self.out} exists: remove it, or choose another file")

    # --- what each model says -----------------------------------------------------------------------

    watched_losses: tuple[str, ...] = ()
    """Losses (positive, of a stable scale within a phase) whose blow-up stops training (:class:`BlowUpWatch`)."""

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its losses."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Figures on the held-back images."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict:
        """What the checkpoint holds of the model and its optimisers (state dicts, architecture)."""
        raise NotImplementedError

    def load_checkpoint_state(self, saved: dict) -> None:
        """Restore :meth:`checkpoint_state`'s part of a checkpoint; raise :class:`ConfigError` if it cannot."""
        raise NotImplementedError

    def write_weights(self, path: Path) -> None:
        """Write the model's weights (safetensors) to ``path``."""
        raise NotImplementedError

    def describe(self, losses: dict[str, float], latest: dict) -> str:
        """The progress bar's postfix: the step's losses and the latest validation."""
        return ", ".join(f"{key} {value:.4f}" for key, value in losses.items())

    # --- the loop -------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the checkpoint and the weights file, each atomically (never through a link)."""
        state = {**self.checkpoint_state(), "step": self.state.step, "history": self.state.history,
                 "rng": self.rng.getstate(), "torch_rng": torch.random.get_rng_state(), "config": asdict(self.config)}
        write_atomically(self.checkpoint_path, lambda handle: torch.save(state, handle))
        self.write_weights(self.out)

    def _restore(self) -> None:
        if not self.checkpoint_path.is_file():
            raise ConfigError(f"{self.checkpoint_path}: nothing to resume")
        try:
            with warnings.catch_warnings():  # a foreign file's pickle protocol is not worth a warning
                warnings.simplefilter("ignore")
                saved = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
            self.load_checkpoint_state(saved)
            state = TrainingState(int(saved["step"]), list(saved["history"]))
            self.rng.setstate(_as_tuples(saved["rng"]))  # type: ignore[arg-type]
            torch.random.set_rng_state(saved["torch_rng"])
        except ConfigError:
            raise
        except Exception as error:  # torch.load and the state dicts raise many types for one bad file
            raise ConfigError(f"{self.checkpoint_path}: not a training checkpoint this command can resume "
                              f"({type(error).__name__})") from None
        if not all(torch.isfinite(value).all() for value in self.model_tensors()):
            raise ConfigError(f"{self.checkpoint_path}: the weights hold NaN or Inf values; start again from an "
                              f"earlier checkpoint or from scratch")
        self.state = state

    def model_tensors(self) -> list[torch.Tensor]:
        """The weights a restored checkpoint gave the model, to check they are finite."""
        raise NotImplementedError

    def train(self, progress: Callable[[int, int], ProgressBar] | None = None, checkpoint_minutes: float = 5.0,
              validate_every: int = 200) -> list[dict]:
        """Train to ``config.steps``, validating and checkpointing on the way; returns the history."""
        bar = progress(self.state.step, self.config.steps) if progress else None
        last_save = time.monotonic()
        started = time.monotonic()
        watches = {name: BlowUpWatch() for name in self.watched_losses}
        while self.state.step < self.config.steps:
            losses = self.step()
            blown = [name for name, value in losses.items() if name in watches and watches[name].blew_up(value)]
            if blown or not all(math.isfinite(value) for value in losses.values()):
                saved = f"; {self.checkpoint_path} (its last checkpoint) is kept" if self.checkpoint_path.exists() \
                    else ""
                why = (f"{blown[0]}'s running mean rose above {watches[blown[0]].factor:g} times its lowest, "
                       f"{watches[blown[0]].lowest:.4g}" if blown else self.describe(losses, {}))
                raise ConfigError(f"training diverged at step {self.state.step + 1} ({why}){saved}: lower the "
                                  f"learning rate")
            self.state.step += 1
            if self.state.step % validate_every == 0 or self.state.step == self.config.steps:
                record = {"step": self.state.step, "seconds": round(time.monotonic() - started, 1), **losses,
                          **self.validate()}
                self.state.history.append(record)
            if bar is not None:
                bar.set_postfix_str(self.describe(losses, self.state.history[-1] if self.state.history else {}))
                bar.update(1)
            if time.monotonic() - last_save > 60 * checkpoint_minutes or self.state.step == self.config.steps:
                self.save()
                last_save = time.monotonic()
        if bar is not None:
            bar.close()
        return self.state.history


def _as_tuples(value: object) -> object:
    """``random.Random.getstate()`` after a round trip through ``torch.save`` (lists may come back for tuples)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
