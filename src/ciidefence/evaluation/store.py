"""The results database: one row per image and experiment, written transactionally.

A run folder holds ``results.sqlite`` and ``config.json``; a killed run loses
at most the batch it was writing, and ``--resume`` skips every batch already
written.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    image            TEXT    NOT NULL,
    label            INTEGER NOT NULL,
    model            TEXT    NOT NULL,
    defence          TEXT    NOT NULL,
    defence_config   TEXT    NOT NULL,
    defence_hash     TEXT    NOT NULL,
    attack           TEXT    NOT NULL,
    attack_params    TEXT    NOT NULL,
    eps              REAL,
    eps_label        TEXT    NOT NULL,
    threat           TEXT    NOT NULL,
    pred_clean       INTEGER NOT NULL,
    pred_clean_defended INTEGER NOT NULL,
    pred_adv         INTEGER NOT NULL,
    pred_defended_adv INTEGER NOT NULL,
    l2               REAL    NOT NULL,
    linf             REAL    NOT NULL,
    seconds          REAL    NOT NULL,
    defence_ms       REAL    NOT NULL,
    UNIQUE (image, model, defence_hash, attack, attack_params, eps_label, threat)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ResultRow:
    """One image's outcome under one (model, defence, attack, eps, threat).

    ``pred_*`` are class indices: the undefended model on the clean image
    (``pred_clean``), the defended model on the clean image, the undefended
    model on the adversarial image, and the defended model on it. For the
    defence ``none`` the defended and undefended predictions coincide. ``l2``
    and ``linf`` measure the perturbation; ``defence_ms`` is the defence's
    time on this image (its share of the batch), ``seconds`` this image's share of
    its batch's wall time.
    """

    image: str
    label: int
    model: str
    defence: str
    defence_config: str
    defence_hash: str
    attack: str
    attack_params: str
    eps: float | None
    eps_label: str
    threat: str
    pred_clean: int
    pred_clean_defended: int
    pred_adv: int
    pred_defended_adv: int
    l2: float
    linf: float
    seconds: float
    defence_ms: float


_COLUMNS = list(ResultRow.__dataclass_fields__)


class ResultStore:
    """SQLite results of one run folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.connection = sqlite3.connect(self.path)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.executescript(SCHEMA)
        columns = {row[1] for row in self.connection.execute("PRAGMA table_info(results)")}
        if "defence_ms" not in columns:  # a database written before defence times were recorded
            with self.connection:
                self.connection.execute("ALTER TABLE results ADD COLUMN defence_ms REAL NOT NULL DEFAULT 0")

    def write(self, rows: list[ResultRow]) -> None:
        """Insert rows in one transaction: all of them, or none if the process dies."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self.connection:
            self.connection.executemany(
                f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [tuple(asdict(row).values()) for row in rows],
            )

    def done_images(self, model: str, defence_hash: str, attack: str, attack_params: str, eps_label: str,
                    threat: str) -> set[str]:
        """Images already written for one experiment."""
        cursor = self.connection.execute(
            "SELECT image FROM results WHERE model=? AND defence_hash=? AND attack=? AND attack_params=? "
            "AND eps_label=? AND threat=?",
            (model, defence_hash, attack, attack_params, eps_label, threat),
        )
        return {image for (image,) in cursor}

    def get_meta(self, key: str) -> str | None:
        row = self.connection.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def rows(self) -> list[dict]:
        """Every row, as dicts keyed by column."""
        cursor = self.connection.execute(f"SELECT {', '.join(_COLUMNS)} FROM results ORDER BY rowid")
        return [dict(zip(_COLUMNS, values)) for values in cursor]

    def close(self) -> None:
        self.connection.close()


def read_run(run_dir: str | os.PathLike) -> tuple[list[dict], dict | None]:
    """Every row of a run folder's database, and the run's configuration (None if not stored)."""
    store = ResultStore(Path(run_dir) / "results.sqlite")
    try:
        stored = store.get_meta("config")
        return store.rows(), json.loads(stored) if stored else None
    finally:
        store.close()


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
