"""Running an evaluation's units on a Ray cluster, with the driver as the only writer.

Each worker is a Ray actor that builds the run's :class:`Evaluation` once
(classifier, data list, defences) and keeps it; the driver hands it one unit
at a time (a batch of images under one experiment, scored by every defence
the experiment concerns), waits for whichever unit finishes first
(``ray.wait``), and writes its rows in one transaction. At most
``in_flight`` units are outstanding, so the driver's memory stays flat
however large the run.

A unit's rows depend only on its identity (every random draw is seeded from
it), so a Ray run writes the same rows as a local one (bit for bit at the
same torch threads per process; oneDNN's sums depend on the thread count). A
worker that dies takes only its unit with it: the driver gives the unit to
another worker (nothing was written for it) and starts a replacement worker
when the cluster has a free CPU, so a run goes on when a node leaves; a unit
that fails for good (an error, or a worker dying under it
:data:`MAX_ATTEMPTS` times) is recorded as error rows with the message; a
killed driver loses only the units in flight, and ``--resume`` continues.

A certification run (:func:`certify_on_ray`) goes through the same
scheduler, one unit being one image under one setting.

Ray is an optional dependency (``pip install 'ciidefence[ray]'``), imported
only here.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError, one_line
from ..progress import ProgressBar
from .plan import RunConfig
from .runner import Evaluation, Unit
from .store import ResultRow, ResultStore

MAX_ATTEMPTS = 4
"""How often a unit is started on a worker that then dies, before it is recorded as an error."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide a run goes.

    Attributes
    ----------
    address : str
        ``"local"`` (start or join a Ray instance on this machine), ``"auto"``
        (join the running cluster) or a cluster address (``HOST:PORT``,
        ``ray://HOST:PORT``).
    workers : int, optional
        Actors; default one per ``threads_per_worker`` CPUs the cluster reports.
    threads_per_worker : int
        Torch threads (and Ray CPUs) per actor.
    ship_data : bool
        The driver decodes each unit's images and ships them (the classifier's
        views, or the images themselves at ``resolution="full"``) through the
        object store, for workers that cannot see the data folder.
    in_flight : int, optional
        Units outstanding at once; default twice the workers.
    """

    address: str = "local"
    workers: int | None = None
    threads_per_worker: int = 1
    ship_data: bool = False
    in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.threads_per_worker < 1 or (self.workers is not None and self.workers < 1):
            raise ConfigError("--workers and --threads-per-worker must be positive")

    def worker_count(self, cpus: int) -> int:
        """The actors to start on a cluster of ``cpus`` CPUs: ``workers``, or one per ``threads_per_worker``."""
        return self.workers or max(1, cpus // self.threads_per_worker)

    def actor_class(self, cls: type):
        """``cls`` as a Ray actor class holding ``threads_per_worker`` CPUs, never restarted by Ray (the
        scheduler replaces dead workers itself)."""
        import ray

        return ray.remote(num_cpus=self.threads_per_worker, max_restarts=0, max_task_retries=0)(cls)


class Worker:
    """The state a Ray actor keeps: one model's evaluation, built once."""

    def __init__(self, config: RunConfig, device: str, threads: int, model: str) -> None:
        torch.set_num_threads(threads)
        self.evaluation = Evaluation(config, torch.device(device), model=model)
        self.experiments = {experiment.digest: experiment for experiment in self.evaluation.experiments}
        self.batches = self.evaluation.batches()

    def pid(self) -> int:
        return os.getpid()

    def run(self, digest: str, index: int, views: dict[str, torch.Tensor | str] | None = None) -> list[ResultRow]:
        if views:
            self.evaluation.inputs.add(views)
        return self.evaluation.run_unit_or_error_rows(self.experiments[digest], self.batches[index])


REACH_TIMEOUT_S = 10.0
"""How long ``--ray HOST:PORT`` waits for the address to answer before giving up (Ray itself retries for minutes)."""


def check_reachable(address: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Raise :class:`ConfigError` unless something listens at ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({error}); start one with `ray start "
                          f"--head` (docs/SCALING.md) or check the address") from None


def connect(address: str) -> None:
    """Start or join Ray (once per process); a cluster that cannot be reached is a one-line :class:`ConfigError`,
    found before anything is written."""
    import ray

    if ray.is_initialized():
        return
    if address not in ("local", "auto"):
        check_reachable(address)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConfigError(f"--ray {address}: {str(error).strip().splitlines()[0] if str(error).strip() else error!r}"
                          ) from None
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)  # ray.init put a handler there that dumps a stack and exits


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def run_on_ray(evaluations: list[Evaluation], store: ResultStore, options: ClusterOptions, device: str,
               progress: Callable[[int], ProgressBar] | None = None) -> None:
    """Run every pending unit of ``evaluations`` (one per model) on Ray, writing each unit's rows as it finishes.

    ``progress(total_units)`` makes one bar over the whole cluster.
    """

    connect(options.address)
    workers = options.worker_count(cluster_cpus())
    actor_class = options.actor_class(Worker)
    pending = [(evaluation, unit) for evaluation in evaluations for unit in evaluation.pending(store)]
    total = sum(len(evaluation.units()) for evaluation in evaluations)
    bar = progress(len(pending)) if progress else None
    for evaluation in evaluations:
        evaluation.record_plan(store, total)
    try:
        for evaluation in evaluations:
            units = [unit for owner, unit in pending if owner is evaluation]
            if units:
                _schedule(_evaluation_job(evaluation, store, options, device, actor_class), units, options, workers,
                          bar)
    finally:
        if bar is not None:
            bar.close()


def _evaluation_job(evaluation: Evaluation, store: ResultStore, options: ClusterOptions, device: str,
                    actor_class) -> Job:
    model = evaluation.classifier.name
    config = evaluation.config.located()  # a worker's folder is not the driver's: it gets absolute paths

    def submit(actor, unit: Unit):
        experiment, index, batch = unit
        views = evaluation.inputs.shipped(batch) if options.ship_data else None
        return actor.run.remote(experiment.digest, index, views)

    def write(unit: Unit, rows: list[ResultRow]) -> None:
        experiment, index, _ = unit
        store.write(rows, unit=(model, experiment.digest, index))

    return Job(start_worker=lambda: actor_class.remote(config, device, options.threads_per_worker, model),
               submit=submit, failed=lambda unit, message: evaluation.error_rows(unit[0], unit[2], message),
               write=write, describe=lambda unit: f"{model}: {unit[0].describe()}")


class CertifyWorker:
    """The state a Ray actor keeps for a certification run: its :class:`Certification`, built once."""

    def __init__(self, config, device: str, threads: int) -> None:
        from .certification import Certification

        torch.set_num_threads(threads)
        self.certification = Certification(config, torch.device(device))
        self.settings = {setting.digest: setting for setting in self.certification.settings}

    def run(self, digest: str, index: int, view: torch.Tensor | str | None = None):
        return self.certification.run_unit(self.settings[digest], self.certification.images[index], view)


def certify_on_ray(certification, store: ResultStore, options: ClusterOptions, device: str,
                   progress: Callable[[int], ProgressBar] | None = None) -> None:
    """Certify every pending unit of ``certification`` on Ray, writing each certificate as it finishes.

    A certificate depends only on its unit's identity (its noise is seeded by
    seed, model, σ and image), so a Ray run certifies the radii a local run
    does.
    """

    connect(options.address)
    workers = options.worker_count(cluster_cpus())
    actor_class = options.actor_class(CertifyWorker)
    config = certification.config.located()
    model = certification.classifier.name
    units = certification.pending(store)
    certification.record_plan(store)

    def submit(actor, unit):
        setting, index, item = unit
        return actor.run.remote(setting.digest, index, certification.read_view(item) if options.ship_data else None)

    def write(unit, row) -> None:
        setting, index, _ = unit
        store.write_certificate(row, unit=(model, setting.digest, index))

    job = Job(start_worker=lambda: actor_class.remote(config, device, options.threads_per_worker),
              submit=submit, failed=lambda unit, message: certification.error_row(unit[0], unit[2], message),
              write=write, describe=lambda unit: f"{model}: {unit[0].describe()}")
    bar = progress(len(units)) if progress else None
    try:
        if units:
            _schedule(job, units, options, workers, bar)
    finally:
        if bar is not None:
            bar.close()


@dataclass(frozen=True)
class Job:
    """What the scheduler needs from one kind of run: how to start a worker, hand it a unit, make the result of
    a unit that failed on the cluster, write a result (on the driver), and name a unit on the progress bar."""

    start_worker: Callable[[], Any]
    submit: Callable[[Any, Any], Any]
    failed: Callable[[Any, str], Any]
    write: Callable[[Any, Any], None]
    describe: Callable[[Any], str]


def _schedule(job: Job, units: list[tuple], options: ClusterOptions, workers: int, bar: ProgressBar | None) -> None:
    """Run ``units`` on up to ``workers`` actors, at most ``in_flight`` outstanding, writing each result as it
    finishes; a unit whose worker dies goes to another (up to :data:`MAX_ATTEMPTS` times)."""
    import ray

    threads = options.threads_per_worker
    in_flight = options.in_flight or 2 * workers
    actors = [job.start_worker() for _ in range(min(workers, len(units)))]
    idle = list(actors)
    queue = list(units)
    attempts: dict[int, int] = {}
    running: dict[Any, tuple[Any, Any]] = {}
    try:
        while queue or running:
            if not actors or (len(actors) < workers and ray.available_resources().get("CPU", 0) >= threads):
                actors.append(job.start_worker())  # a replacement, where the cluster has room (or none is left)
                idle.append(actors[-1])
            while queue and idle and len(running) < in_flight:
                unit = queue.pop(0)
                actor = idle.pop(0)
                running[job.submit(actor, unit)] = (unit, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            unit, actor = running.pop(done[0])
            try:
                result = ray.get(done[0])
                idle.append(actor)
            except ray.exceptions.RayActorError as error:  # the worker died: its unit goes to another
                actors.remove(actor)
                attempts[id(unit)] = attempts.get(id(unit), 0) + 1
                if attempts[id(unit)] < MAX_ATTEMPTS:
                    queue.insert(0, unit)
                    continue
                result = job.failed(unit, f"workers died {attempts[id(unit)]} times running this unit "
                                          f"({one_line(error)})")
            except ray.exceptions.RayTaskError as error:  # not the unit (it records its own failure): its transport
                idle.append(actor)
                result = job.failed(unit, f"unit failed on the cluster: {one_line(error)}")
            job.write(unit, result)
            if bar is not None:
                bar.set_postfix_str(job.describe(unit))
                bar.update(1)
    finally:
        for actor in actors:
            ray.kill(actor)
