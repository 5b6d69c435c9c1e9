"""One :class:`Cell` per model, defence and experiment, aggregated from a run's rows, and how tables name
cells, columns and defences."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from ..attacks import ATTACKS
from ..defences.registry import DEFENCES
from .intervals import wilson_interval
from .plan import threat_label
from .store import CellKey, ResultRow


@dataclass(frozen=True)
class Cell:
    """Accuracy of one defence under one experiment, over its images.

    ``images`` counts the images scored; ``errors`` those that could not be
    read (left out of the accuracy). ``attack_seconds`` is the experiment's
    wall time per image (attack and every defence scored on it), the same for
    every defence of the experiment; ``defence_ms`` is this defence's own
    time per image. ``median_nl2`` is the median normalised L2 dissimilarity
    ``||x_adv - x||_2 / ||x||_2`` the attack reached (NaN for rows of 0.2).
    ``covered`` counts the images the experiment has rows for, scored or not
    (under the paper's protocol, images the undefended model gets wrong are
    covered but not scored); None where unknown.
    """

    model: str
    defence: str
    defence_hash: str
    experiment: str
    purpose: str
    attack: str
    attack_params: str
    eps: float | None
    eps_label: str
    threat: str
    approximation: str | None
    images: int
    errors: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    undefended_accuracy: float
    median_l2: float
    median_linf: float
    attack_seconds: float
    defence_ms: float
    median_nl2: float = math.nan
    budget: str = "absolute"
    eot: int = 1
    source: str | None = None
    covered: int | None = None
    defence_config: str = ""
    """The defence's full parameters (JSON), by which tables tell apart two configurations of one defence."""

    @property
    def rows_covered(self) -> int:
        """The images the experiment has rows for: ``covered``, or where unknown, those scored or unreadable."""
        return self.images + self.errors if self.covered is None else self.covered

    def short_of(self, total: int | None) -> bool:
        """Whether the experiment has rows for fewer than ``total`` images (the run's; None: unknown)."""
        return total is not None and self.rows_covered < total

    @property
    def steps(self) -> int:
        """The attack's iterations (1 for a single-step attack)."""
        return int(json.loads(self.attack_params).get("max_iter", 1))

    @property
    def is_sanity(self) -> bool:
        return self.purpose == "sanity"

    @property
    def in_table(self) -> bool:
        """A cell of the run's own table (not a sanity or convergence experiment)."""
        return self.purpose in ("main", "sweep")

    @property
    def threat_label(self) -> str:
        return threat_label(self.threat, self.approximation, self.source)

    @property
    def key(self) -> CellKey:
        return CellKey(self.model, self.defence_hash, self.experiment)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def scored_rows(rows: list[ResultRow], protocol: str = "all") -> list[ResultRow]:
    """The rows a protocol scores: all, or (``"paper"``) those of images the undefended model classifies right.

    Under the paper's protocol the other images are not attacked; their rows
    stay in the database, outside every accuracy.
    """
    if protocol == "all":
        return rows
    return [row for row in rows if row.error is not None or row.pred_clean == row.label]


def cells(rows: list[ResultRow], protocol: str = "all") -> list[Cell]:
    """Aggregate rows into one :class:`Cell` per model, defence and experiment (see :func:`scored_rows`)."""
    groups: dict[CellKey, list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[row.key].append(row)
    found = []
    for everything in groups.values():
        members = scored_rows(everything, protocol)
        if not members:
            continue
        scored = [r for r in members if r.error is None]
        total = len(scored)
        correct = sum(r.pred_defended_adv == r.label for r in scored)
        low, high = wilson_interval(correct, total)

        def mean_or_nan(values: list[float]) -> float:
            return statistics.fmean(values) if values else math.nan

        first = everything[0]
        found.append(Cell(
            first.model, first.defence, first.defence_hash, first.experiment, first.purpose, first.attack,
            first.attack_params, first.eps, first.eps_label, first.threat, first.approximation,
            total, len(members) - total, correct, correct / total if total else math.nan, low, high,
            mean_or_nan([r.pred_adv == r.label for r in scored]),
            statistics.median(r.l2 for r in scored) if scored else math.nan,
            statistics.median(r.linf for r in scored) if scored else math.nan,
            mean_or_nan([r.seconds for r in scored]), mean_or_nan([r.defence_ms for r in scored]),
            _median([r.nl2 for r in scored if r.nl2 is not None]),
            next((r.budget for r in members), "absolute"),
            next((r.eot for r in members), 1),
            next((r.source for r in members), None),
            len(everything),
            everything[0].defence_config,
        ))
    attack_order = {name: i for i, name in enumerate(("clean", *ATTACKS))}
    threat_order = {"clean": 0, "graybox": 1}
    defence_order = {name: i for i, name in enumerate(DEFENCES)}
    return sorted(found, key=lambda c: (defence_order.get(c.defence, len(defence_order)), c.defence,
                                        threat_order.get(c.threat, 2), c.threat_label, c.is_sanity,
                                        attack_order.get(c.attack, 99), c.eps or 0))


def attacks_the_scored_model(cell: Cell) -> bool:
    """True when the attacker targeted the model being scored (undefended gray-box, or BPDA).

    Gray-box results of a defended model, and every transfer result, come from
    attacks on another model, so the sanity checks on attack strength do not
    apply to them (iterative attacks, for one, transfer worse than FGSM).
    """
    return cell.threat == "bpda" or (cell.defence == "none" and cell.threat == "graybox")


def percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def params_text(params: str) -> str:
    values = json.loads(params)
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def column_key(cell: Cell) -> tuple:
    return ("clean",) if cell.threat == "clean" else (cell.attack, cell.eps_label, cell.threat_label)


def telling_variants(table: list[Cell], key: Callable[[Cell], tuple]) -> list[str]:
    """Per cell, the attack parameters that tell its set apart from the other sets of parameters run under the
    same ``key`` (e.g. ``"initial_const=1.0"``), or ``""`` where that key was run with one set."""
    found: dict[tuple, list[dict]] = defaultdict(list)
    params = [json.loads(c.attack_params) for c in table]
    for c, p in zip(table, params, strict=True):
        if p not in found[key(c)]:
            found[key(c)].append(p)
    return [telling_params(p, found[key(c)]) for c, p in zip(table, params, strict=True)]


def column_keys(table: list[Cell]) -> list[tuple]:
    """Each cell's column: its attack setting, and where one setting was run with several sets of parameters,
    the parameters that tell them apart (e.g. ``"initial_const=1.0"``)."""
    return [(*column_key(c), telling) if telling else column_key(c)
            for c, telling in zip(table, telling_variants(table, column_key), strict=True)]


def column_title(column: tuple) -> str:
    if column == ("clean",):
        return "clean"
    attack, eps, threat, *params = column
    parts = (ATTACKS[attack].title, eps if eps != "-" else "", threat, *(f"({p})" for p in params))
    return " ".join(part for part in parts if part)


def defence_labels(table: list[Cell]) -> dict[tuple[str, str], str]:
    """A display label per (defence, hash): the name, or, where a name has several configurations (a sweep's
    points), the name and the parameters in which they differ (``ciid (sigma=0.03, top_k=1)``); ``name@hash``
    where the parameters are not stored."""
    configs: dict[str, dict[str, dict]] = defaultdict(dict)
    for c in table:
        configs[c.defence].setdefault(c.defence_hash, json.loads(c.defence_config) if c.defence_config else {})
    labels = {}
    for name, found in configs.items():
        differing = sorted({key for config in found.values() for key in config
                            if any(config.get(key) != other.get(key) for other in found.values())})
        for digest, config in found.items():
            if len(found) == 1:
                labels[(name, digest)] = name
            elif differing and all(found.values()):
                labels[(name, digest)] = f"{name} ({', '.join(f'{key}={config.get(key)}' for key in differing)})"
            else:
                labels[(name, digest)] = f"{name}@{digest[:6]}"
    return labels


def pivot(table: list[Cell]) -> tuple[list[str], list[tuple], dict[tuple[str, int], Cell], dict[str, float]]:
    """Rows (defence labels), columns (``("clean",)`` or (attack, eps, threat), with the telling parameters where
    one setting has several), cells by (row, column index), and each row's defence ms/img. Sanity and convergence
    cells are left out."""
    table = [c for c in table if c.in_table]
    keys = column_keys(table)
    columns = list(dict.fromkeys(keys))
    labels = defence_labels(table)
    rows = list(dict.fromkeys(labels[(c.defence, c.defence_hash)] for c in table))
    values = {(labels[(c.defence, c.defence_hash)], columns.index(key)): c for c, key in zip(table, keys, strict=True)}
    cost = defaultdict(list)
    for c in table:
        cost[labels[(c.defence, c.defence_hash)]].append(c.defence_ms)
    return rows, columns, values, {k: statistics.fmean(v) for k, v in cost.items()}

def telling_params(params: dict, variants: list[dict]) -> str:
    """``params``' values of the keys on which ``variants`` (sets of parameters of one setting) differ."""
    differing = sorted({k for v in variants for k in v if any(v.get(k) != w.get(k) for w in variants)})
    return ", ".join(f"{k}={params[k]}" if k in params else f"no {k}" for k in differing)
