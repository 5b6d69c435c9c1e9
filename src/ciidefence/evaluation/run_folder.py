"""A run folder: created, or reopened to resume after its configuration and data are checked; read back whole.

A run folder holds :data:`RESULTS_FILE` (the database,
:class:`~ciidefence.evaluation.store.ResultStore`) and :data:`CONFIG_FILE`
(the configuration, for people; the database holds its own copy). Both
evaluation and certification runs use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .data import load_dataset
from .lock import RunLock
from .store import ResultRow, ResultStore
from .stored import StoredConfig

RESULTS_FILE = "results.sqlite"
CONFIG_FILE = "config.json"

def open_run(run_dir: str | Path, config: StoredConfig, resume: bool) -> ResultStore:
    """Create a run folder, or reopen one to resume after checking its configuration.

    Call it only once everything the run needs has been checked (build the
    :class:`Evaluation` first): a bad option then leaves no folder behind.
    The folder is locked until the returned store is closed. A run is
    resumed wherever its data lies now: the data folder's digest is checked,
    not its path (a run from before digests were stored: its rows' images
    and labels).

    Raises
    ------
    ConfigError
        If the folder already holds results and ``resume`` is False, holds a
        run of another configuration or other data, or is in use by another
        process. Nothing is overwritten.
    """
    run_dir = Path(run_dir)
    database = run_dir / RESULTS_FILE
    if database.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out")
    if resume and not database.exists():
        raise ConfigError(f"{run_dir}: nothing to resume (no {RESULTS_FILE})")
    if config.data_digest is None:
        config = config.with_data_digest()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({error.strerror or error})") from None
    lock = RunLock(run_dir).acquire()
    try:
        store = ResultStore(database)
        store.lock = lock
        if store.get_meta("config") is None:
            store.set_meta("config", config.to_json())
            (run_dir / CONFIG_FILE).write_text(config.to_json() + "\n")
        else:
            _check_same_configuration(store, run_dir, config)
    except BaseException:
        lock.release()
        raise
    return store


def open_written(run_dir: str | Path, config: StoredConfig) -> ResultStore:
    """Reopen a run folder to read what it has written, without its lock (a dry run beside the running run).

    Raises
    ------
    ConfigError
        If there is nothing to resume, or the folder holds a run of another configuration or other data.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).exists():
        raise ConfigError(f"{run_dir}: nothing to resume (no {RESULTS_FILE})")
    store = ResultStore(run_dir / RESULTS_FILE)
    _check_same_configuration(store, run_dir, config if config.data_digest else config.with_data_digest())
    return store


def _check_same_configuration(store: ResultStore, run_dir: Path, config: StoredConfig) -> None:
    stored = store.get_meta("config")
    if stored is None:
        return
    if not config.matches(stored):
        store.close()
        raise ConfigError(
            f"{run_dir} was made by a different configuration; resume it with the same options "
            f"(see {run_dir / CONFIG_FILE}) or choose another --out"
        )
    stored_digest = json.loads(stored).get("data_digest")
    if stored_digest is not None and stored_digest != config.data_digest:
        store.close()
        raise ConfigError(f"--data {config.data} holds other images or labels than {run_dir} was made with "
                          f"(file names, sizes or labels differ); resume it with the same data")
    if stored_digest is None:  # a run from before data digests: its rows say which images and labels it used
        labels = {item.key: item.label for item in load_dataset(config.data, config.labels, num_classes=1000)}
        foreign = [image for image, label in store.images_and_labels() if labels.get(image) != label]
        if foreign:
            store.close()
            raise ConfigError(f"--data {config.data} does not hold {len(foreign)} of the images {run_dir} was made "
                              f"with, with the same labels (e.g. {foreign[0]}); resume it with the same data")


@dataclass(frozen=True)
class Run:
    """What a run folder's database holds: its rows, configuration and progress.

    ``images`` and ``units_total`` are the plan's size (None for databases
    written before they were stored); ``units_done`` the units of that plan finished;
    ``invalid`` a JSON object of the defences refused (label: reason).
    """

    rows: list[ResultRow]
    config: dict | None
    images: int | None
    units_total: int | None
    units_done: int
    invalid: str | None = None

    @property
    def complete(self) -> bool:
        return self.units_total is None or self.units_done >= self.units_total


def read_run(run_dir: str | os.PathLike) -> Run:
    """Read a run folder's database (``results.sqlite``).

    Raises
    ------
    ConfigError
        If the database is not one of ours, or its stored configuration or
        plan is not what the project writes (edited, or from another tool).
    """
    path = Path(run_dir) / "results.sqlite"
    with ResultStore(path) as store:
        config, images, units, invalid = (store.get_meta(key)
                                          for key in ("config", "images", "units_total", "invalid_defences"))
        try:
            plan = json.loads(config) if config else None
            if plan is not None and not (isinstance(plan, dict) and isinstance(plan.get("model"), str)):
                raise ValueError("the configuration is not an object naming a model")
            planned = store.planned_experiments(planned_models(plan)) if plan else None
            return Run(store.result_rows(), plan, int(images) if images else None,
                       int(units) if units else None, store.units_done(planned), invalid)
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            raise ConfigError(f"{path}: its stored plan cannot be read ({type(error).__name__}: {error}); it was "
                              f"not written by ciidefence as it is") from None


def planned_models(config: dict | None) -> list[str]:
    """The classifiers a stored run configuration plans, in order (none for databases without one)."""
    return [config["model"], *config.get("extra_models", [])] if config else []
