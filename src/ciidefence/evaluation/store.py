"""The results database: one row per image, experiment and defence, written transactionally.

A run folder holds ``results.sqlite`` and ``config.json``; a killed run loses
at most the batch it was writing, and ``--resume`` skips every batch already
written. Each row stores what it is (the experiment's purpose, threat,
approximation, attack, parameters and budget; the defence's name,
parameters and digest) as columns, so reports never re-infer it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError
from .certificates import CertificateRow, CheckRow, column_names
from .lock import RunLock

_RESULTS_TEMPLATE = """
CREATE TABLE IF NOT EXISTS results (
    image            TEXT    NOT NULL,
    label            INTEGER NOT NULL,
    model            TEXT    NOT NULL,
    defence          TEXT    NOT NULL,
    defence_config   TEXT    NOT NULL,
    defence_hash     TEXT    NOT NULL,
    experiment       TEXT    NOT NULL,
    purpose          TEXT    NOT NULL,
    attack           TEXT    NOT NULL,
    attack_params    TEXT    NOT NULL,
    eps              REAL,
    eps_label        TEXT    NOT NULL,
    threat           TEXT    NOT NULL,
    approximation    TEXT,
    target           TEXT,
    pred_clean       INTEGER NOT NULL,
    pred_clean_defended INTEGER NOT NULL,
    pred_adv         INTEGER NOT NULL,
    pred_defended_adv INTEGER NOT NULL,
    l2               REAL    NOT NULL,
    linf             REAL    NOT NULL,
    seconds          REAL    NOT NULL,
    defence_ms       REAL    NOT NULL,
    error            TEXT,
    {added}
    UNIQUE (image, model, defence_hash, experiment)
);
"""
ADDED_COLUMNS = {
    "budget": "TEXT NOT NULL DEFAULT 'absolute'",
    "nl2": "REAL",
    "eot": "INTEGER NOT NULL DEFAULT 1",
    "source": "TEXT",
    "draws": "INTEGER NOT NULL DEFAULT 1",
    "draws_correct": "INTEGER",
    "vote": "INTEGER",
}
"""Columns added after the identities of 0.2, each with a default that describes the rows written before it."""
RESULTS_SCHEMA = _RESULTS_TEMPLATE.replace(
    "{added}", "\n    ".join(f"{name} {definition}," for name, definition in ADDED_COLUMNS.items()))
SCHEMA = RESULTS_SCHEMA + """
CREATE TABLE IF NOT EXISTS units (model TEXT NOT NULL, experiment TEXT NOT NULL, batch INTEGER NOT NULL,
                                  PRIMARY KEY (model, experiment, batch));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    image        TEXT    NOT NULL,
    label        INTEGER NOT NULL,
    model        TEXT    NOT NULL,
    setting      TEXT    NOT NULL,
    sigma        REAL    NOT NULL,
    front        TEXT    NOT NULL,
    front_config TEXT    NOT NULL,
    front_hash   TEXT    NOT NULL,
    n0           INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    alpha        REAL    NOT NULL,
    top_class    INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    p_lower      REAL    NOT NULL,
    radius       REAL    NOT NULL,
    prediction   INTEGER NOT NULL,
    correct      INTEGER NOT NULL,
    seconds      REAL    NOT NULL,
    error        TEXT,
    UNIQUE (image, model, setting)
);
CREATE TABLE IF NOT EXISTS certificate_checks (
    image      TEXT    NOT NULL,
    model      TEXT    NOT NULL,
    setting    TEXT    NOT NULL,
    certified  INTEGER NOT NULL,
    radius     REAL    NOT NULL,
    budget     REAL    NOT NULL,
    l2         REAL    NOT NULL,
    steps      INTEGER NOT NULL,
    samples    INTEGER NOT NULL,
    prediction INTEGER NOT NULL,
    flipped    INTEGER NOT NULL,
    seconds    REAL    NOT NULL,
    UNIQUE (image, model, setting)
);
"""

NO_PREDICTION = -1
"""The prediction stored in an error row (an image that could not be read)."""


@dataclass(frozen=True)
class CellKey:
    """What a result is about: the classifier, the defence (its digest: parameters, weights and source) and
    the experiment (its digest: attack, parameters, budget, threat, approximation, EOT, source model).

    Every report groups rows and matches cells across runs by this value;
    the names beside it (defence, attack, eps label, ...) describe it and are
    never part of it.
    """

    model: str
    defence_hash: str
    experiment: str


@dataclass(frozen=True)
class ResultRow:
    """One image's outcome under one experiment, scored by one defence.

    ``pred_*`` are class indices: the undefended model on the clean image
    (``pred_clean``), the defended model on the clean image, the undefended
    model on the adversarial image, and the defended model on it. For the
    defence ``none`` the defended and undefended predictions coincide. ``l2``
    and ``linf`` measure the perturbation; ``defence_ms`` is the defence's
    time on this image (its share of the batch), ``seconds`` this image's share of
    its batch's wall time. ``error`` holds the message when the image could
    not be evaluated (its predictions are then :data:`NO_PREDICTION`).
    ``budget`` says how ``eps`` is meant (``"absolute"`` or ``"nl2"``, see
    :class:`~ciidefence.evaluation.plan.Experiment`); ``nl2`` is the
    perturbation's L2 norm over the clean image's (None in rows of 0.2);
    ``eot`` the gradient samples the attack averaged per step; ``source``
    the classifier a transfer attack was made on. ``draws`` is how often a
    randomised defence scored the (adversarial) image, each time with its own
    draws, the first being ``pred_defended_adv``'s; ``draws_correct`` how many
    of them gave the label, and ``vote`` the class most of them gave (ties
    to the first draw's): the worst case over the draws counts the image
    only if ``draws_correct == draws``, the majority vote if ``vote ==
    label`` (None in rows written before 0.9, and in error rows).
    """

    image: str
    label: int
    model: str
    defence: str
    defence_config: str
    defence_hash: str
    experiment: str
    purpose: str
    attack: str
    attack_params: str
    eps: float | None
    eps_label: str
    threat: str
    approximation: str | None
    target: str | None
    pred_clean: int
    pred_clean_defended: int
    pred_adv: int
    pred_defended_adv: int
    l2: float
    linf: float
    seconds: float
    defence_ms: float
    error: str | None = None
    budget: str = "absolute"
    nl2: float | None = None
    eot: int = 1
    source: str | None = None
    draws: int = 1
    draws_correct: int | None = None
    vote: int | None = None

    @property
    def key(self) -> CellKey:
        return CellKey(self.model, self.defence_hash, self.experiment)

    @property
    def correct(self) -> bool:
        """The defended classifier gave the label: on the attacked image (on the clean one, for ``clean``)."""
        return self.error is None and self.pred_defended_adv == self.label


COLUMNS = list(ResultRow.__dataclass_fields__)


class ResultStore:
    """SQLite results of one run folder; a context manager that closes the connection.

    Opening a database written by an older release migrates it in place (one
    transaction): columns added since are filled from what the old rows say.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock: RunLock | None = None  # released on close
        self.connection = sqlite3.connect(self.path, timeout=30)
        try:
            self.connection.execute("PRAGMA journal_mode=WAL")
            columns = {row[1] for row in self.connection.execute("PRAGMA table_info(results)")}
            if columns and "experiment" not in columns:
                _migrate(self.connection)
            elif columns:
                with self.connection:
                    for name, definition in ADDED_COLUMNS.items():
                        if name not in columns:
                            self.connection.execute(f"ALTER TABLE results ADD COLUMN {name} {definition}")
            self.connection.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            self.connection.close()
            raise ConfigError(f"{self.path}: not a ciidefence results database ({error})") from None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def write(self, rows: list[ResultRow], unit: tuple[str, str, int] | None = None) -> None:
        """Insert rows, and mark ``unit`` (model, experiment digest, batch index) finished, in one transaction:
        all of it, or nothing if the process dies."""
        placeholders = ", ".join("?" for _ in COLUMNS)
        with self.connection:
            self.connection.executemany(
                f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                [tuple(asdict(row).values()) for row in rows],
            )
            if unit is not None:
                self.connection.execute("INSERT OR REPLACE INTO units (model, experiment, batch) VALUES (?, ?, ?)",
                                        unit)

    def units_done(self, planned: dict[str, set[str]] | None = None) -> int:
        """How many units (experiment x batch) are finished; with ``planned`` (model: experiment digests), only
        the plan's, so that units an earlier plan left in the same folder do not count."""
        units = self.connection.execute("SELECT model, experiment FROM units").fetchall()
        return sum(planned is None or experiment in planned.get(model, ()) for model, experiment in units)

    def record_planned_experiments(self, model: str, digests: list[str]) -> None:
        self.set_meta(f"planned_experiments:{model}", json.dumps(sorted(digests)))

    def planned_experiments(self, models: list[str]) -> dict[str, set[str]] | None:
        """The experiment digests the current plan has for each of ``models`` (None if never recorded)."""
        found = {model: self.get_meta(f"planned_experiments:{model}") for model in models}
        return {m: set(json.loads(v)) for m, v in found.items() if v} or None

    def done(self, model: str) -> set[tuple[str, str, str]]:
        """``(image, defence_hash, experiment)`` of every row written for ``model``."""
        cursor = self.connection.execute("SELECT image, defence_hash, experiment FROM results WHERE model=?", (model,))
        return set(cursor)

    def defence_hashes(self, model: str) -> set[tuple[str, str]]:
        """``(defence name, defence_hash)`` of every defence with rows for ``model``."""
        return set(self.connection.execute("SELECT DISTINCT defence, defence_hash FROM results WHERE model=?",
                                           (model,)))

    def failed(self, model: str) -> set[tuple[str, str]]:
        """``(experiment, image)`` of every error row written for ``model``."""
        cursor = self.connection.execute(
            "SELECT DISTINCT experiment, image FROM results WHERE model=? AND error IS NOT NULL", (model,))
        return set(cursor)

    def forget(self, model: str, units: list[tuple[str, int, list[str]]]) -> None:
        """Delete every row of these units (experiment digest, batch index, the batch's images) and their marks
        of being finished, in one transaction, so that they run again."""
        with self.connection:
            for experiment, batch, images in units:
                self.connection.execute(
                    f"DELETE FROM results WHERE model=? AND experiment=? AND image IN ({', '.join('?' * len(images))})",
                    (model, experiment, *images))
                self.connection.execute("DELETE FROM units WHERE model=? AND experiment=? AND batch=?",
                                        (model, experiment, batch))

    def write_certificate(self, row: CertificateRow, unit: tuple[str, str, int]) -> None:
        """Insert one certificate and mark ``unit`` (model, setting digest, image index) finished, in one
        transaction."""
        with self.connection:
            self._insert("certificates", row)
            self.connection.execute("INSERT OR REPLACE INTO units (model, experiment, batch) VALUES (?, ?, ?)", unit)

    def _insert(self, table: str, row: CertificateRow | CheckRow) -> None:
        values = astuple(row)
        self.connection.execute(f"INSERT INTO {table} ({', '.join(column_names(type(row)))}) "
                                f"VALUES ({', '.join('?' for _ in values)})", values)

    def certified(self, model: str) -> set[tuple[str, str]]:
        """``(image, setting digest)`` of every certificate written for ``model``."""
        return set(self.connection.execute("SELECT image, setting FROM certificates WHERE model=?", (model,)))

    def failed_certificates(self, model: str) -> set[tuple[str, str]]:
        """``(image, setting digest)`` of ``model``'s certificate rows that record an error."""
        return set(self.connection.execute("SELECT image, setting FROM certificates WHERE model=? AND error IS NOT "
                                           "NULL", (model,)))

    def forget_certificates(self, model: str, units: list[tuple[str, int, str]]) -> None:
        """Delete these units' certificates (setting digest, image index, image) and their marks, in one
        transaction, so that they run again."""
        with self.connection:
            for setting, index, image in units:
                self.connection.execute("DELETE FROM certificates WHERE model=? AND setting=? AND image=?",
                                        (model, setting, image))
                self.connection.execute("DELETE FROM units WHERE model=? AND experiment=? AND batch=?",
                                        (model, setting, index))

    def write_check(self, row: CheckRow) -> None:
        """Insert one SmoothAdv check of a certificate, in one transaction."""
        with self.connection:
            self._insert("certificate_checks", row)

    def checked(self, model: str) -> set[tuple[str, str]]:
        """``(image, setting digest)`` of every certificate already checked for ``model``."""
        return set(self.connection.execute("SELECT image, setting FROM certificate_checks WHERE model=?", (model,)))

    def certificate_rows(self) -> list[CertificateRow]:
        """Every certificate, in the order written."""
        return [CertificateRow(*values) for values in self.connection.execute(
            f"SELECT {', '.join(column_names(CertificateRow))} FROM certificates ORDER BY rowid")]

    def check_rows(self) -> list[CheckRow]:
        """Every SmoothAdv check, in the order written."""
        return [CheckRow(*values) for values in self.connection.execute(
            f"SELECT {', '.join(column_names(CheckRow))} FROM certificate_checks ORDER BY rowid")]

    def images_and_labels(self) -> list[tuple[str, int]]:
        """Every ``(image, label)`` the rows hold, once."""
        return self.connection.execute("SELECT DISTINCT image, label FROM results").fetchall()

    def seconds_per_image(self, model: str) -> dict[str, float]:
        """Mean wall seconds per image of each experiment (by digest) that has rows for ``model``.

        Every row of an image holds the same share of its batch's time, so
        each image counts once; images that could not be read do not count.
        """
        cursor = self.connection.execute(
            "SELECT experiment, AVG(seconds) FROM (SELECT experiment, image, MAX(seconds) AS seconds FROM results "
            "WHERE model=? AND error IS NULL GROUP BY experiment, image) GROUP BY experiment", (model,))
        return dict(cursor)

    def get_meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def result_rows(self) -> list[ResultRow]:
        """Every result row, typed, in the order written."""
        cursor = self.connection.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY rowid")
        return [ResultRow(*values) for values in cursor]

    def close(self) -> None:
        self.connection.close()
        if self.lock is not None:
            self.lock.release()


def _migrate(connection: sqlite3.Connection) -> None:
    """Rebuild a results table from before experiment identities were stored.

    Old rows spelled BPDA as ``bpda-<approximation>`` in ``threat`` and did not
    store the purpose: a PGD row with the sanity check's parameters and budget
    is taken for a sanity row (what old reports did), the rest for the run's
    own (``sweep`` when the run scored sweep points).
    """
    from .plan import SANITY_EPS, SANITY_PGD, UNBOUNDED_EPS, Experiment

    has_meta = connection.execute("SELECT name FROM sqlite_master WHERE name='meta'").fetchone()
    stored = connection.execute("SELECT value FROM meta WHERE key='config'").fetchone() if has_meta else None
    run_purpose = "sweep" if stored and json.loads(stored[0]).get("sweep") else "main"
    sanity_params = canonical_json(SANITY_PGD)
    names = [row[1] for row in connection.execute("PRAGMA table_info(results)")]
    cursor = connection.execute("SELECT * FROM results ORDER BY rowid")
    old = [dict(zip(names, values, strict=True)) for values in cursor]
    rows = []
    for row in old:
        threat, _, approximation = row["threat"].partition("-")
        is_sanity = (row["attack"] == "pgd" and row["attack_params"] == sanity_params and row["eps"] is not None
                     and any(math.isclose(row["eps"], eps) for eps in (SANITY_EPS, UNBOUNDED_EPS)))
        purpose = "sanity" if is_sanity else run_purpose
        params = tuple(sorted(json.loads(row["attack_params"]).items()))
        target = row["defence"] if threat == "bpda" else None
        experiment = Experiment(row["attack"], params, row["eps"], threat, approximation or None, target, purpose)
        rows.append(ResultRow(
            row["image"], row["label"], row["model"], row["defence"], row["defence_config"], row["defence_hash"],
            experiment.digest, purpose, row["attack"], row["attack_params"], row["eps"], row["eps_label"], threat,
            approximation or None, target, row["pred_clean"], row["pred_clean_defended"], row["pred_adv"],
            row["pred_defended_adv"], row["l2"], row["linf"], row["seconds"], row.get("defence_ms", 0.0),
        ))
    with connection:
        connection.execute("ALTER TABLE results RENAME TO results_before_migration")
        connection.execute(RESULTS_SCHEMA)
        placeholders = ", ".join("?" for _ in COLUMNS)
        connection.executemany(f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                               [tuple(asdict(row).values()) for row in rows])
        connection.execute("DROP TABLE results_before_migration")


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
