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

import torch

from ..errors import ConfigError
from ..progress import ProgressBar
from .plan import RunConfig
from .runner import Evaluation, Unit, first_line
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
        The driver decodes each unit's images and ships the classifier's views
        through the object store, for workers that cannot see the data folder.
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
            self.evaluation.add_views(views)
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
    import ray

    connect(options.address)
    workers = options.workers or max(1, cluster_cpus() // options.threads_per_worker)
    in_flight = options.in_flight or 2 * workers
    actor_class = ray.remote(num_cpus=options.threads_per_worker, max_restarts=0, max_task_retries=0)(Worker)
    pending = [(evaluation, unit) for evaluation in evaluations for unit in evaluation.pending(store)]
    total = sum(len(evaluation.units()) for evaluation in evaluations)
    bar = progress(len(pending)) if progress else None
    for evaluation in evaluations:
        evaluation.record_plan(store, total)
    try:
        for evaluation in evaluations:
            units = [unit for owner, unit in pending if owner is evaluation]
            if units:
                _run_model(evaluation, units, store, options, device, actor_class, workers, in_flight, bar)
    finally:
        if bar is not None:
            bar.close()


def _run_model(evaluation: Evaluation, units: list[Unit], store: ResultStore, options: ClusterOptions, device: str,
               actor_class, workers: int, in_flight: int, bar: ProgressBar | None) -> None:
    import ray

    model = evaluation.classifier.name
    threads = options.threads_per_worker
    config = evaluation.config.located()  # a worker's folder is not the driver's: it gets absolute paths

    def start_worker():
        return actor_class.remote(config, device, threads, model)

    actors = [start_worker() for _ in range(min(workers, len(units)))]
    idle = list(actors)
    queue = list(units)
    attempts: dict[tuple[str, int], int] = {}
    running: dict[object, tuple[Unit, object]] = {}
    try:
        while queue or running:
            if not actors or (len(actors) < workers and ray.available_resources().get("CPU", 0) >= threads):
                actors.append(start_worker())  # a replacement, where the cluster has room (or none is left)
                idle.append(actors[-1])
            while queue and idle and len(running) < in_flight:
                unit = queue.pop(0)
                actor = idle.pop(0)
                experiment, index, batch = unit
                views = evaluation.shipped_views(batch) if options.ship_data else None
                running[actor.run.remote(experiment.digest, index, views)] = (unit, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            unit, actor = running.pop(done[0])
            experiment, index, batch = unit
            try:
                rows = ray.get(done[0])
                idle.append(actor)
            except ray.exceptions.RayActorError as error:  # the worker died: its unit goes to another
                actors.remove(actor)
                key = (experiment.digest, index)
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] < MAX_ATTEMPTS:
                    queue.insert(0, unit)
                    continue
                rows = evaluation.error_rows(experiment, batch, f"workers died {attempts[key]} times running this "
                                                                f"unit ({first_line(error)})")
            except ray.exceptions.RayTaskError as error:  # not the unit (it records its own failure): its transport
                idle.append(actor)
                rows = evaluation.error_rows(experiment, batch, f"unit failed on the cluster: {first_line(error)}")
            store.write(rows, unit=(model, experiment.digest, index))
            if bar is not None:
                bar.set_postfix_str(f"{model}: {experiment.describe()}")
                bar.update(1)
    finally:
        for actor in actors:
            ray.kill(actor)
