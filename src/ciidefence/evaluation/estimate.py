"""What a run will cost, before it runs: its parts measured on one batch and added up per experiment.

:func:`estimate` times one gradient, one prediction and each defence on the
run's first images, and multiplies them by the gradients each attack takes
and the defences each experiment scores. It leaves out image loading, ART's
overhead and how many steps an attack really takes, so it is a lower bound;
for a run being resumed, experiments that already have rows are costed by
their own measured seconds per image instead. :func:`cluster_estimate`
turns the result into core-hours and wall time on a Ray cluster.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..attacks import attack_spec
from ..images import pixel_count
from .plan import Experiment

if TYPE_CHECKING:
    from .runner import Evaluation
    from .store import ResultStore


@dataclass(frozen=True)
class PartCosts:
    """Seconds per image of the parts a run is made of, measured on one batch."""

    gradient: float
    """One gradient of the classifier's loss with respect to its input."""
    prediction: float
    defences: dict[str, float]
    """Each defence's forward pass, by digest (the undefended one costs 0)."""
    pixels: int
    """The pixels of each image they were measured on."""


@dataclass(frozen=True)
class ExperimentCost:
    experiment: Experiment
    gradients: float
    """Gradient evaluations per image (attack steps times restarts times EOT samples)."""
    images: int
    """Images left to run (all of them for a new run)."""
    seconds: float
    measured: bool
    """Costed by the seconds per image this run measured, not by its parts."""


@dataclass(frozen=True)
class Estimate:
    images: int
    parts: PartCosts
    experiments: list[ExperimentCost]
    resumed: bool
    defence_scale: float = 1.0
    """What the defences' measured cost was multiplied by: at ``resolution="full"`` the run's mean pixels per
    image over those of the measured images (defences cost in proportion to pixels; the classifier, behind
    its resize, does not), else 1."""

    @property
    def from_parts(self) -> float:
        return sum(cost.seconds for cost in self.experiments if not cost.measured)

    @property
    def from_measurements(self) -> float:
        return sum(cost.seconds for cost in self.experiments if cost.measured)


def _seconds_per_image(function: Callable[[], object], images: int) -> float:
    function()  # warm-up: the first call sets up kernels
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) / images


def measure_parts(evaluation: Evaluation) -> PartCosts:
    """Time a gradient, a prediction and each defence on the run's first readable images of one size (see
    :func:`defence_scale` for the others)."""
    inputs = [image for image in map(evaluation.inputs.get, evaluation.batches()[0])
              if isinstance(image, torch.Tensor)]
    if not inputs:
        inputs = [torch.rand(3, evaluation.classifier.input_size, evaluation.classifier.input_size)]
    images = torch.stack([image for image in inputs if image.shape == inputs[0].shape]).to(evaluation.device)
    classifier = evaluation.classifier

    def gradient() -> None:
        leaf = images.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(classifier(leaf), torch.zeros(len(images), dtype=torch.long)).backward()

    def prediction() -> None:
        with torch.no_grad():
            classifier(images)

    defences = {defence.digest: _seconds_per_image(functools.partial(defence, evaluation.defence_input(images)),
                                                   len(images))
                for defence in evaluation.defences.values()}
    defences[evaluation.undefended.digest] = 0.0
    return PartCosts(_seconds_per_image(gradient, len(images)), _seconds_per_image(prediction, len(images)), defences,
                     images.shape[-2] * images.shape[-1])


def defence_scale(evaluation: Evaluation, parts: PartCosts) -> float:
    """The run's mean pixels per image over the measured ones' where the defences see each image at its own
    size (``resolution="full"``; read from the files' headers), else 1."""
    if evaluation.config.resolution != "full":
        return 1.0
    counts = [count for count in (pixel_count(item.path) for item in evaluation.images) if count]
    return sum(counts) / len(counts) / parts.pixels if counts else 1.0


def experiment_gradients(experiment: Experiment) -> float:
    """Gradient evaluations per image of ``experiment`` (EOT samples included)."""
    if experiment.threat == "clean":
        return 0.0
    return attack_spec(experiment.attack).gradients(dict(experiment.params)) * experiment.eot


def estimate(evaluation: Evaluation, written: ResultStore | None = None) -> Estimate:
    """Each experiment's cost for ``evaluation``; with ``written`` (the store of a run being resumed), only
    what is left, and experiments that have rows at their measured seconds per image."""
    left: Counter[str] | None = None
    measured: dict[str, float] = {}
    if written is not None:
        left = Counter()
        for experiment, _, batch in evaluation.pending(written):
            left[experiment.digest] += len(batch)
        measured = written.seconds_per_image(evaluation.classifier.name)
    parts = measure_parts(evaluation)
    scale = defence_scale(evaluation, parts)
    images = len(evaluation.images)
    draws = evaluation.config.eval_draws
    costs = []
    for experiment in evaluation.experiments:
        gradients = experiment_gradients(experiment)
        per_gradient = parts.gradient
        if experiment.approximation:  # BPDA: the defence runs forward at every gradient
            per_gradient += scale * parts.defences[evaluation.defences[str(experiment.target)].digest]
        # the adversarial images' prediction, then each defence (each of its draws) and the prediction on it
        scoring = parts.prediction + sum(
            (scale * parts.defences[d.digest] + (0.0 if d.identity else parts.prediction))
            * (draws if d.randomised else 1) for d in evaluation.scored_defences(experiment))
        todo = images if left is None else left[experiment.digest]
        if experiment.digest in measured:
            costs.append(ExperimentCost(experiment, gradients, todo, todo * measured[experiment.digest], True))
        else:
            costs.append(ExperimentCost(experiment, gradients, todo, todo * (gradients * per_gradient + scoring),
                                        False))
    return Estimate(images, parts, costs, written is not None, scale)


@dataclass(frozen=True)
class ClusterEstimate:
    units: int
    core_hours: float
    cpus: int
    workers: int
    threads_per_worker: int
    threads_here: int
    """The threads the parts were measured with."""

    @property
    def on_all_cpus(self) -> float:
        """Wall seconds if the per-image costs scale with cores and every CPU of the cluster works."""
        return self.core_hours * 3600 / self.cpus

    @property
    def on_workers(self) -> float:
        """Wall seconds on ``workers`` actors of ``threads_per_worker`` threads each (at most every CPU)."""
        return self.core_hours * 3600 / min(self.cpus, self.workers * self.threads_per_worker)


def cluster_estimate(evaluation: Evaluation, found: Estimate, cpus: int, workers: int,
                     threads_per_worker: int) -> ClusterEstimate:
    """``found`` on a cluster of ``cpus`` CPUs: parts measured here count at this process's threads, the run's
    own measured seconds at ``threads_per_worker``."""
    threads = torch.get_num_threads()
    core_seconds = found.from_parts * threads + found.from_measurements * threads_per_worker
    return ClusterEstimate(len(evaluation.units()), core_seconds / 3600, cpus, workers, threads_per_worker, threads)
