"""Running an evaluation: attack, defend, score, and write every image's outcome."""

from __future__ import annotations

import hashlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..attacks import attack_spec
from ..attacks.estimators import art_estimator
from ..defences import (
    CIIDefenceConfig,
    build_defence,
    defence_digest,
    defence_params,
    defence_spec,
)
from ..defences.art import ARTPreprocessor
from ..errors import ConfigError
from ..images import load_image
from ..models import Classifier, load_classifier
from .data import LabelledImage, load_dataset
from .plan import Experiment, RunConfig
from .store import ResultRow, ResultStore, canonical_json

RESULTS_FILE = "results.sqlite"
CONFIG_FILE = "config.json"


@dataclass
class Defence:
    """A named defence: its module (None for no defence), config and hash."""

    name: str
    module: torch.nn.Module | None
    config_json: str
    digest: str
    randomised: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            return images
        with torch.no_grad():
            return self.module(images)


UNDEFENDED = Defence("none", None, "{}", "none")


def build_defences(classifier: Classifier, config: RunConfig) -> dict[str, Defence]:
    """The run's defences keyed by name; sweep points are keyed ``ciid@<hash>``."""
    entries = [(name, name, defence_params(name, config.ciid_config)) for name in config.defences]
    for point in config.sweep:
        params = CIIDefenceConfig(**point).to_dict()
        entries.append((f"ciid@{defence_digest('ciid', params)}", "ciid", params))
    defences = {}
    for key, name, params in entries:
        digest = defence_digest(name, params) if name != "none" else "none"
        module = build_defence(name, classifier, params=params)
        defences[key] = Defence(name, module, canonical_json(params), digest, defence_spec(name).randomised)
    return defences


def open_run(run_dir: str | Path, config: RunConfig, resume: bool) -> ResultStore:
    """Create a run folder, or reopen one to resume after checking its configuration.

    Raises
    ------
    ConfigError
        If the folder already holds results and ``resume`` is False, or holds a
        run of another configuration. Nothing is overwritten.
    """
    run_dir = Path(run_dir)
    database = run_dir / RESULTS_FILE
    if database.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not database.exists():
        raise ConfigError(f"{run_dir}: nothing to resume (no {RESULTS_FILE})")
    run_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(database)
    stored = store.get_meta("config")
    if stored is None:
        store.set_meta("config", config.to_json())
        (run_dir / CONFIG_FILE).write_text(config.to_json() + "\n")
    elif stored != config.to_json():
        store.close()
        raise ConfigError(
            f"{run_dir} was made by a different configuration; resume it with the same options "
            f"(see {run_dir / CONFIG_FILE}) or choose another --out"
        )
    return store


def _seed_for(seed: int, *parts: object) -> int:
    text = "|".join(map(str, (seed, *parts)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def _seed_all(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class Evaluation:
    """An evaluation run over one classifier, its defences and a set of experiments.

    Parameters
    ----------
    config : RunConfig
    store : ResultStore
    device : torch.device
    progress : callable, optional
        ``progress(total_batches) -> bar`` with ``update(n)`` and ``set_postfix_str(text)``.
    """

    def __init__(self, config: RunConfig, store: ResultStore, device: torch.device, progress=None) -> None:
        self.config = config
        self.store = store
        self.device = device
        self.progress = progress
        self.classifier = load_classifier(config.model, config.checkpoint, config.random_weights).to(device)
        self.images = load_dataset(config.data, config.labels, num_classes=1000)[: config.limit]
        self.defences = build_defences(self.classifier, config)
        self.experiments = config.experiments()
        self._views: dict[str, torch.Tensor] = {}
        self._estimators: dict[tuple, object] = {}

    def batches(self) -> list[list[LabelledImage]]:
        size = self.config.batch_size
        return [self.images[start : start + size] for start in range(0, len(self.images), size)]

    def view(self, batch: list[LabelledImage]) -> torch.Tensor:
        """The classifier's ``S x S`` view of each image, cached."""
        for item in batch:
            if item.key not in self._views:
                self._views[item.key] = self.classifier.prepare(load_image(item.path)[None])[0]
        return torch.stack([self._views[item.key] for item in batch]).to(self.device)

    def _estimator(self, experiment: Experiment):
        key = (experiment.threat, experiment.defence)
        if key not in self._estimators:
            preprocessors, eot_samples = None, 1
            if experiment.approximation is not None:
                defence = self.defences[experiment.defence]
                preprocessors = [ARTPreprocessor(defence.module, experiment.approximation,
                                                 "gpu" if self.device.type == "cuda" else "cpu")]
                eot_samples = self.config.eot_samples if defence.randomised else 1
            self._estimators[key] = art_estimator(self.classifier, preprocessors, eot_samples)
        return self._estimators[key]

    def _attack(self, experiment: Experiment, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if experiment.threat == "clean":
            return images
        spec = attack_spec(experiment.attack)
        attack = spec.build(self._estimator(experiment), experiment.eps, dict(experiment.params),
                            self.config.batch_size)
        adversarial = attack.generate(images.cpu().numpy(), y=labels.cpu().numpy())
        return torch.from_numpy(adversarial).to(self.device).clamp(0, 1)

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(images).argmax(1).cpu()

    def _clean(self, defence: Defence, batch: list[LabelledImage], images: torch.Tensor,
               cache: dict[tuple[str, str], int]) -> tuple[list[int], float | None]:
        """``defence``'s predictions on the clean images, computed once per image; and its ms/img if computed now."""
        keys = [(defence.digest, item.key) for item in batch]
        if all(key in cache for key in keys):
            return [cache[key] for key in keys], None
        purified, defence_ms = self._defend(defence, images)
        cache.update(zip(keys, self._predict(purified).tolist()))
        return [cache[key] for key in keys], defence_ms

    @staticmethod
    def _defend(defence: Defence, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The defended images and the defence's milliseconds per image."""
        started = time.perf_counter()
        purified = defence(images)
        return purified, 1000 * (time.perf_counter() - started) / len(images)

    def pending(self) -> list[tuple[Experiment, int, list[LabelledImage]]]:
        """(experiment, batch index, batch) for every batch not yet written."""
        work = []
        for experiment in self.experiments:
            done = [
                self.store.done_images(self.classifier.name, defence.digest, experiment.attack,
                                       experiment.params_json, experiment.eps_label, experiment.threat)
                for defence in self.scored_defences(experiment)
            ]
            for index, batch in enumerate(self.batches()):
                if any(item.key not in images for images in done for item in batch):
                    work.append((experiment, index, batch))
        return work

    def scored_defences(self, experiment: Experiment) -> list[Defence]:
        if experiment.defence is not None:
            return [self.defences[experiment.defence]]
        return list(self.defences.values())

    def run(self) -> None:
        """Run every pending batch, writing each batch's rows in one transaction."""
        work = self.pending()
        bar = self.progress(len(work)) if self.progress else None
        clean_cache: dict[tuple[str, str], int] = {}  # (defence hash, image) -> prediction on the clean image
        for experiment, index, batch in work:
            if bar is not None:
                bar.set_postfix_str(experiment.describe())
            started = time.perf_counter()
            _seed_all(_seed_for(self.config.seed, experiment, index))
            images = self.view(batch)
            labels = torch.tensor([item.label for item in batch])
            adversarial = self._attack(experiment, images, labels)
            pred_clean = torch.tensor(self._clean(UNDEFENDED, batch, images, clean_cache)[0])
            pred_adv = pred_clean if adversarial is images else self._predict(adversarial)
            difference = (adversarial - images).flatten(1).cpu()
            l2, linf = difference.norm(dim=1), difference.abs().amax(dim=1)
            scored = []
            for defence in self.scored_defences(experiment):
                clean_defended, defence_ms = self._clean(defence, batch, images, clean_cache)
                if experiment.threat == "clean" and defence_ms is not None:
                    defended_adv = torch.tensor(clean_defended)  # the adversarial images are the clean ones
                elif defence.module is None:
                    defended_adv, defence_ms = pred_adv, 0.0
                else:
                    purified, defence_ms = self._defend(defence, adversarial)
                    defended_adv = self._predict(purified)
                scored.append((defence, clean_defended, defended_adv, defence_ms))
            seconds = (time.perf_counter() - started) / len(batch)
            self.store.write([
                ResultRow(
                    item.key, item.label, self.classifier.name, defence.name, defence.config_json,
                    defence.digest, experiment.attack, experiment.params_json, experiment.eps,
                    experiment.eps_label, experiment.threat, int(pred_clean[i]), clean_defended[i],
                    int(pred_adv[i]), int(defended_adv[i]), float(l2[i]), float(linf[i]), seconds, defence_ms,
                )
                for defence, clean_defended, defended_adv, defence_ms in scored
                for i, item in enumerate(batch)
            ])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()


def tqdm_progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluate", unit="batch", file=sys.stderr, dynamic_ncols=True)
