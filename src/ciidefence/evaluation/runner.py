"""Running an evaluation: attack, defend, score, and write every image's outcome.

:class:`Evaluation` checks and builds everything a run needs (classifier,
data, defences, experiments) before anything is written;
:func:`~ciidefence.evaluation.run_folder.open_run` then creates or reopens the
run folder. Work is split into units (one batch
of images under one experiment, scored by every defence it concerns);
:meth:`Evaluation.run_unit` computes a unit's rows from its identity alone,
so the rows do not depend on the order in which units run.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..attacks.estimators import art_estimator
from ..attacks.generate import generate
from ..defences.art import ARTPreprocessor
from ..defences.registry import Defence, build_defence
from ..errors import ConfigError, one_line
from ..models import load_classifier
from ..models.base import Classifier
from ..progress import ProgressBar, tqdm_bar
from ..randomness import seeded_generator, stable_seed
from .data import LabelledImage, load_dataset
from .inputs import Inputs
from .plan import Experiment, RunConfig
from .store import NO_PREDICTION, ResultRow, ResultStore

Unit = tuple[Experiment, int, list[LabelledImage]]
"""(experiment, batch index, batch): the work that one transaction writes."""


class Draws(NamedTuple):
    """How often a defence scored an image, how many of those draws gave the label, and the class most gave."""

    draws: int
    correct: int
    vote: int


class Evaluation:
    """An evaluation run over one classifier, its defences and a set of experiments.

    Building it checks the model, the data and every option, and writes nothing.

    Parameters
    ----------
    config : RunConfig
    device : torch.device
    progress : callable, optional
        ``progress(total_units) -> bar`` with ``update(n)``, ``set_postfix_str(text)`` and ``close()``.
    model : str, optional
        Which of ``config.models`` this evaluation runs (default: the first).
    """

    def __init__(self, config: RunConfig, device: torch.device,
                 progress: Callable[[int], ProgressBar] | None = None, model: str | None = None) -> None:
        self.config = config
        self.device = device
        self.progress = progress
        self.classifier: Classifier = load_classifier(model or config.model, config.checkpoint,
                                                      config.random_weights).to(device)
        self.images = config.select(load_dataset(config.data, config.labels, num_classes=1000))
        if not self.images:
            raise ConfigError(f"{config.data}: no images left to evaluate after --limit and --shard")
        self.undefended = build_defence("none", self.classifier)
        self.defences: dict[str, Defence] = {
            label: build_defence(name, self.classifier, params=params)
            for label, name, params in config.named_defences()
        }
        self.invalid: dict[str, str] = {}  # sweep points refused (label: why), recorded, not scored
        for label, name, params in config.sweep_defences():
            try:
                self.defences[label] = build_defence(name, self.classifier, params=params)
            except ConfigError as error:
                self.invalid[label] = str(error)
        self.sources: dict[str, Classifier] = {  # the classifiers transfer attacks are made on
            name: load_classifier(name).to(device) for name in config.transfer_from
        }
        self.experiments = config.experiments(self.defences)
        self.clean = config.clean_experiment()
        self.inputs = Inputs(self.classifier, config.resolution, config.max_pixels)
        self._clean_predictions: dict[tuple[str, str], int] = {}  # (defence digest, image) -> class
        self._estimators: dict[tuple, tuple[object, ARTPreprocessor | None]] = {}

    # --- the plan -------------------------------------------------------------------------------

    def batches(self) -> list[list[LabelledImage]]:
        size = self.config.batch_size
        return [self.images[start : start + size] for start in range(0, len(self.images), size)]

    def scored_defences(self, experiment: Experiment) -> list[Defence]:
        """The defences scored on an experiment's adversarial images.

        BPDA: its target. Sanity checks: the undefended model only (they test
        the attack). Otherwise every defence of the run.
        """
        if experiment.target is not None:
            return [self.defences[experiment.target]]
        if experiment.purpose == "sanity":
            return [self.undefended]
        return list(self.defences.values())

    def units(self) -> list[Unit]:
        """Every unit of the run, in plan order."""
        return [(experiment, index, batch) for experiment in self.experiments
                for index, batch in enumerate(self.batches())]

    def check_resumable(self, store: ResultStore) -> None:
        """Refuse (:class:`ConfigError`) to continue ``store`` where it holds rows of a defence this run builds
        otherwise: its parameters, weights or (a plug-in's) source changed since those rows were written."""
        built = {(defence.name, defence.digest) for defence in (self.undefended, *self.defences.values())}
        names = {name for name, _ in built}
        for name, digest in sorted(store.defence_hashes(self.classifier.name)):
            if name in names and (name, digest) not in built:
                now = sorted(d for n, d in built if n == name)
                raise ConfigError(f"defence {name} has changed since this run wrote its rows (digest {digest}, now "
                                  f"{', '.join(now)}: its parameters, weights or source); start a new --out, or "
                                  f"restore the defence as it was")

    def pending(self, store: ResultStore) -> list[Unit]:
        """The units not yet fully written to ``store``."""
        done = store.done(self.classifier.name)
        return [
            (experiment, index, batch) for experiment, index, batch in self.units()
            if any((item.key, defence.digest, experiment.digest) not in done
                   for defence in self.scored_defences(experiment) for item in batch)
        ]

    # --- randomness -------------------------------------------------------------------------------

    def _seed(self, *parts: object) -> int:
        return stable_seed(self.config.seed, self.classifier.name, *parts)

    def defence_generators(self, experiment: Experiment, batch: list[LabelledImage],
                    defence: Defence) -> list[torch.Generator]:
        """One generator per image for ``defence`` under ``experiment``: the same whatever the batching."""
        return [seeded_generator(self.config.seed, self.classifier.name, experiment.digest, item.key, defence.digest)
                for item in batch]

    # --- the work ----------------------------------------------------------------------------------

    def _estimator(self, experiment: Experiment) -> tuple[object, ARTPreprocessor | None]:
        key = (experiment.target, experiment.approximation, experiment.eot, experiment.source)
        if key not in self._estimators:
            preprocessor, eot_samples = None, 1
            attacked = self.sources[experiment.source] if experiment.source is not None else self.classifier
            if experiment.target is not None and experiment.approximation is not None:  # BPDA
                defence = self.defences[experiment.target]
                preprocessor = ARTPreprocessor(defence.module, experiment.approximation,
                                               "gpu" if self.device.type == "cuda" else "cpu")
                eot_samples = experiment.eot
            estimator = art_estimator(attacked, [preprocessor] if preprocessor else None, eot_samples)
            self._estimators[key] = (estimator, preprocessor)
        return self._estimators[key]

    def _attack(self, experiment: Experiment, batch: list[LabelledImage], images: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        if experiment.threat == "clean":
            return images
        keys = [item.key for item in batch]
        estimator, preprocessor = self._estimator(experiment)
        if preprocessor is not None:
            preprocessor.generator = seeded_generator(self.config.seed, self.classifier.name, experiment.digest,
                                                      "eot", *keys)
        eps: float | np.ndarray | None = experiment.eps
        if experiment.budget == "nl2" and experiment.eps is not None:  # each image's own L2 budget
            eps = experiment.eps * images.flatten(1).norm(dim=1).cpu().numpy().reshape(-1, 1, 1, 1)
        return generate(estimator, experiment.attack, images, labels, eps, dict(experiment.params),
                        self.config.batch_size, self._seed(experiment.digest, "attack", *keys))

    def _predict(self, images: torch.Tensor) -> list[int]:
        with torch.no_grad():
            return self.classifier(images).argmax(1).cpu().tolist()

    def defence_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the defences receive of ``images``: the images, or at ``resolution="full-then-view"`` the
        classifier's view of them."""
        return self.classifier.prepare(images) if self.config.resolution == "full-then-view" else images

    def _defend(self, defence: Defence, images: torch.Tensor,
                generators: list[torch.Generator]) -> tuple[torch.Tensor, float]:
        """The defended images and the defence's milliseconds per image. At ``resolution="full-then-view"`` the
        defence receives the classifier's view of the (full-resolution) images."""
        started = time.perf_counter()
        purified = defence(self.defence_input(images), generator=generators)
        return purified, 1000 * (time.perf_counter() - started) / len(images)

    def _clean_prediction(self, defence: Defence, batch: list[LabelledImage],
                          images: torch.Tensor) -> tuple[list[int], float | None]:
        """``defence``'s predictions on the clean images, drawn under the clean experiment's identity.

        Computed once per image and defence; returns the defence's ms per
        image when computed now, else None.
        """
        keys = [(defence.digest, item.key) for item in batch]
        if all(key in self._clean_predictions for key in keys):
            return [self._clean_predictions[key] for key in keys], None
        purified, defence_ms = self._defend(defence, images, self.defence_generators(self.clean, batch, defence))
        self._clean_predictions.update(zip(keys, self._predict(purified), strict=True))
        return [self._clean_predictions[key] for key in keys], defence_ms

    def run_unit(self, experiment: Experiment, batch: list[LabelledImage]) -> list[ResultRow]:
        """Every row of one unit: each image of ``batch`` under ``experiment``, scored by each defence.

        An image that cannot be read gets error rows (predictions
        :data:`NO_PREDICTION`, the message in ``error``); the others go on.
        Images of one size are attacked and defended together (at the view,
        the whole batch).
        """
        clock = time.perf_counter()
        rows, groups = self.readable_groups(experiment, batch)
        for group, images in groups:
            scored = self._score(experiment, group, images)
            now = time.perf_counter()
            rows += [row(seconds=(now - clock) / len(group)) for row in scored]
            clock = now
        return rows

    def readable_groups(self, experiment: Experiment, batch: list[LabelledImage]
                        ) -> tuple[list[ResultRow], list[tuple[list[LabelledImage], torch.Tensor]]]:
        """The error rows of ``batch``'s unreadable images, and its readable ones in groups of one size, each
        with its ``(N, 3, H, W)`` images on the run's device: what a unit attacks together."""
        inputs = {item.key: self.inputs.get(item) for item in batch}
        errors = [row for item in batch if not isinstance(inputs[item.key], torch.Tensor)
                  for row in self.error_rows(experiment, [item], str(inputs[item.key]))]
        sizes: dict[tuple[int, ...], list[LabelledImage]] = {}
        for item in batch:
            image = inputs[item.key]
            if isinstance(image, torch.Tensor):
                sizes.setdefault(tuple(image.shape), []).append(item)
        return errors, [(group, torch.stack([inputs[item.key] for item in group]).to(self.device))  # type: ignore[misc]
                        for group in sizes.values()]

    def attacked(self, experiment: Experiment, batch: list[LabelledImage],
                 images: torch.Tensor) -> tuple[list[int], torch.Tensor, list[int]]:
        """The undefended classifier's predictions on ``images`` (one size group of a unit), their adversarial
        images under ``experiment`` (the clean ones for the clean experiment, and under the paper's protocol
        for images it gets wrong), and its predictions on those."""
        labels = torch.tensor([item.label for item in batch])
        pred_clean, _ = self._clean_prediction(self.undefended, batch, images)
        adversarial = images
        attacked = [i for i, item in enumerate(batch)
                    if self.config.protocol == "all" or pred_clean[i] == item.label]
        if experiment.threat != "clean" and attacked:  # under the paper's protocol, only images classified right
            adversarial = images.clone()
            adversarial[attacked] = self._attack(experiment, [batch[i] for i in attacked], images[attacked],
                                                 labels[attacked])
        pred_adv = pred_clean if experiment.threat == "clean" else self._predict(adversarial)
        return pred_clean, adversarial, pred_adv

    def defended(self, defence: Defence, experiment: Experiment, batch: list[LabelledImage],
                 adversarial: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``defence``'s output on ``attacked``'s adversarial images, with the draws the run scores them by, and
        its milliseconds per image."""
        return self._defend(defence, adversarial, self.defence_generators(experiment, batch, defence))

    def _score(self, experiment: Experiment, batch: list[LabelledImage],
               images: torch.Tensor) -> list[Callable[..., ResultRow]]:
        """The rows of ``batch`` (its ``images``, all of one size) under ``experiment``, each waiting for its
        seconds per image."""
        defences = self.scored_defences(experiment)
        pred_clean, adversarial, pred_adv = self.attacked(experiment, batch, images)
        difference = (adversarial - images).flatten(1).cpu()
        l2, linf = difference.norm(dim=1).tolist(), difference.abs().amax(dim=1).tolist()
        norms = images.flatten(1).norm(dim=1).cpu().tolist()
        nl2 = [distance / max(norm, 1e-12) for distance, norm in zip(l2, norms, strict=True)]
        scored = []
        for defence in defences:
            clean_defended, defence_ms = self._clean_prediction(defence, batch, images)
            if experiment.threat == "clean":
                defended_adv = clean_defended  # the adversarial images are the clean ones
                if defence_ms is None:
                    _, defence_ms = self.defended(defence, experiment, batch, images)
            else:
                purified, defence_ms = self.defended(defence, experiment, batch, adversarial)
                defended_adv = pred_adv if defence.identity else self._predict(purified)
            draws = self._draws(defence, experiment, batch, adversarial, defended_adv)
            scored.append((defence, clean_defended, defended_adv, defence_ms, draws))
        return [
            functools.partial(self._row, item, defence, experiment, pred_clean[i], clean_defended[i], pred_adv[i],
                              defended_adv[i], l2[i], linf[i], defence_ms=defence_ms, nl2=nl2[i], draws=draws[i])
            for defence, clean_defended, defended_adv, defence_ms, draws in scored
            for i, item in enumerate(batch)
        ]

    def _draws(self, defence: Defence, experiment: Experiment, batch: list[LabelledImage], images: torch.Tensor,
               first: list[int]) -> list[Draws]:
        """Each image scored ``eval_draws`` times by a randomised ``defence`` (once by a deterministic one),
        ``first`` being the first draw's predictions; every further draw seeded by its number and the unit's
        identity."""
        predictions = [[prediction] for prediction in first]
        for draw in range(1, self.config.eval_draws if defence.randomised else 1):
            generators = [seeded_generator(self.config.seed, self.classifier.name, experiment.digest, item.key,
                                           defence.digest, "draw", draw) for item in batch]
            purified, _ = self._defend(defence, images, generators)
            for own, prediction in zip(predictions, self._predict(purified), strict=True):
                own.append(prediction)
        return [Draws(len(own), sum(prediction == item.label for prediction in own),
                      Counter(own).most_common(1)[0][0])  # ties go to the class met first: the first draw's
                for own, item in zip(predictions, batch, strict=True)]

    def run_unit_or_error_rows(self, experiment: Experiment, batch: list[LabelledImage]) -> list[ResultRow]:
        """:meth:`run_unit`, or, if the unit fails (out of memory, a defence's error), its error rows: one failure
        rule for local and Ray runs. The run goes on; ``--retry-errors`` reruns the unit later."""
        try:
            return self.run_unit(experiment, batch)
        except Exception as error:  # one failed unit must not end a run of hours
            return self.error_rows(experiment, batch, f"unit failed: {type(error).__name__}: {one_line(error)}")

    def forget_failed(self, store: ResultStore) -> int:
        """Delete the rows of every unit of this plan that holds an error row, so that the run redoes those units
        (and only those); returns how many."""
        failed = store.failed(self.classifier.name)
        units = [(experiment.digest, index, [item.key for item in batch])
                 for experiment, index, batch in self.units()
                 if any((experiment.digest, item.key) in failed for item in batch)]
        store.forget(self.classifier.name, units)
        return len(units)

    def error_rows(self, experiment: Experiment, batch: list[LabelledImage], message: str) -> list[ResultRow]:
        """Rows that record ``message`` for each image of ``batch`` and each defence ``experiment`` scores."""
        return [self._row(item, defence, experiment, error=message)
                for item in batch for defence in self.scored_defences(experiment)]

    def _row(self, item: LabelledImage, defence: Defence, experiment: Experiment,
             pred_clean: int = NO_PREDICTION, pred_clean_defended: int = NO_PREDICTION,
             pred_adv: int = NO_PREDICTION, pred_defended_adv: int = NO_PREDICTION, l2: float = 0.0,
             linf: float = 0.0, seconds: float = 0.0, defence_ms: float = 0.0,
             error: str | None = None, nl2: float | None = None, draws: Draws | None = None) -> ResultRow:
        return ResultRow(
            item.key, item.label, self.classifier.name, defence.name, defence.params_json, defence.digest,
            experiment.digest, experiment.purpose, experiment.attack, experiment.params_json, experiment.eps,
            experiment.eps_label, experiment.threat, experiment.approximation, experiment.target,
            pred_clean, pred_clean_defended, pred_adv, pred_defended_adv, l2, linf, seconds, defence_ms,
            error, experiment.budget, nl2, experiment.eot, experiment.source,
            *(draws if draws is not None else (1, None, None)),
        )

    def record_plan(self, store: ResultStore, units_total: int | None = None) -> None:
        """Store the plan's size (images, units of the whole run) and the refused sweep points, for reports."""
        store.set_meta("images", str(len(self.images)))
        store.set_meta("invalid_defences", json.dumps(self.invalid, sort_keys=True))
        store.set_meta("units_total", str(units_total or len(self.units())))
        store.record_planned_experiments(self.classifier.name, [experiment.digest for experiment in self.experiments])

    def run(self, store: ResultStore, units_total: int | None = None) -> None:
        """Run every pending unit, writing each unit's rows in one transaction.

        ``units_total`` is the whole run's (every model's) count, for reports; default: this model's.
        """
        work = self.pending(store)
        bar = self.progress(len(work)) if self.progress else None
        try:
            self.record_plan(store, units_total)
            for experiment, index, batch in work:
                if bar is not None:
                    bar.set_postfix_str(f"{self.classifier.name}: {experiment.describe()}")
                store.write(self.run_unit_or_error_rows(experiment, batch),
                            unit=(self.classifier.name, experiment.digest, index))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()


def tqdm_progress(total: int) -> ProgressBar:
    return tqdm_bar(total, "evaluate", "batch")
