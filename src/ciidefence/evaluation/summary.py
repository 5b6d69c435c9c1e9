"""Summaries of a run, rebuilt from its database alone: tables, sanity checks, plot."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..attacks import ATTACKS, format_eps
from ..defences import DEFENCES
from .plan import SANITY_EPS, SANITY_PGD, UNBOUNDED_EPS
from .store import canonical_json, read_run

SANITY_PARAMS = canonical_json(SANITY_PGD)


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``correct / total``."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Cell:
    """Accuracy of one defence under one (attack, eps, threat), over its images."""

    model: str
    defence: str
    defence_hash: str
    attack: str
    attack_params: str
    eps: float | None
    eps_label: str
    threat: str
    images: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    undefended_accuracy: float
    median_l2: float
    median_linf: float
    seconds_per_image: float
    defence_ms: float

    @property
    def is_sanity(self) -> bool:
        return self.attack == "pgd" and self.attack_params == SANITY_PARAMS


def cells(rows: list[dict]) -> list[Cell]:
    """Aggregate rows into one :class:`Cell` per defence x attack x params x eps x threat."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        key = (row["model"], row["defence"], row["defence_hash"], row["attack"], row["attack_params"],
               row["eps"], row["eps_label"], row["threat"])
        groups[key].append(row)
    found = []
    for key, members in groups.items():
        correct = sum(r["pred_defended_adv"] == r["label"] for r in members)
        low, high = wilson_interval(correct, len(members))
        found.append(Cell(
            *key, len(members), correct, correct / len(members), low, high,
            sum(r["pred_adv"] == r["label"] for r in members) / len(members),
            statistics.median(r["l2"] for r in members), statistics.median(r["linf"] for r in members),
            statistics.fmean(r["seconds"] for r in members), statistics.fmean(r["defence_ms"] for r in members),
        ))
    attack_order = {name: i for i, name in enumerate(("clean", *ATTACKS))}
    threat_order = {"clean": 0, "graybox": 1}
    defence_order = {name: i for i, name in enumerate(DEFENCES)}
    return sorted(found, key=lambda c: (defence_order.get(c.defence, len(defence_order)), c.defence,
                                        threat_order.get(c.threat, 2), c.threat, c.is_sanity,
                                        attack_order.get(c.attack, 99), c.eps or 0))


def attacks_the_scored_model(cell: Cell) -> bool:
    """True when the attacker targeted the model being scored (undefended gray-box, or BPDA).

    Gray-box results of a defended model come from attacks on another model,
    so the sanity checks on attack strength do not apply to them.
    """
    return cell.defence == "none" or cell.threat.startswith("bpda")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, FLAG or NOT RUN
    detail: str


def sanity_checks(table: list[Cell]) -> list[Check]:
    """The checks of Carlini et al. (2019), "On Evaluating Adversarial Robustness"."""
    checks = []

    def sanity_cell(eps):
        return next((c for c in table if c.defence == "none" and c.is_sanity and c.threat == "graybox"
                     and c.eps is not None and math.isclose(c.eps, eps)), None)

    strong = sanity_cell(SANITY_EPS)
    if strong is None:
        checks.append(Check("undefended model falls to <= 1% under PGD-20 at 8/255", "NOT RUN",
                            "run with the defence 'none' and sanity checks on"))
    else:
        checks.append(Check(
            "undefended model falls to <= 1% under PGD-20 at 8/255", "PASS" if strong.accuracy <= 0.01 else "FLAG",
            f"{strong.accuracy:.1%} of {strong.images}" + ("" if strong.accuracy <= 0.01 else
                                                           ": the attack is weak or gradients are masked"),
        ))
    unbounded = sanity_cell(UNBOUNDED_EPS)
    if unbounded is None:
        checks.append(Check("an unbounded attack reaches 0%", "NOT RUN", "run with the defence 'none'"))
    else:
        checks.append(Check(
            "an unbounded attack reaches 0% (PGD-20, eps 1, undefended)",
            "PASS" if unbounded.correct == 0 else "FLAG",
            f"{unbounded.accuracy:.1%} of {unbounded.images}" + ("" if unbounded.correct == 0 else
                                                                 ": the attack does not work as intended"),
        ))

    series: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in table:
        if cell.eps is not None and not cell.is_sanity and cell.threat != "clean" and attacks_the_scored_model(cell):
            series[(cell.defence, cell.attack, cell.attack_params, cell.threat)].append(cell)
    rises = []
    for (defence, attack, _, threat), members in series.items():
        members.sort(key=lambda c: c.eps)
        for before, after in zip(members, members[1:]):
            if after.accuracy > before.accuracy:
                rises.append(f"{defence}/{attack}/{threat}: {before.accuracy:.1%} at {before.eps_label} -> "
                             f"{after.accuracy:.1%} at {after.eps_label}")
    checks.append(Check(
        "accuracy does not rise with eps", "NOT RUN" if not any(len(m) > 1 for m in series.values())
        else ("FLAG" if rises else "PASS"),
        "; ".join(rises) + (" (possible gradient masking, or noise of few images)" if rises else ""),
    ))

    weaker = []
    compared = 0
    single = {(c.defence, c.eps_label, c.threat): c for c in table if c.attack == "fgsm"}
    for cell in table:
        spec = ATTACKS.get(cell.attack)
        if (spec is None or not spec.iterative or not spec.bounded or spec.norm != "inf" or cell.is_sanity
                or not attacks_the_scored_model(cell)):
            continue
        reference = single.get((cell.defence, cell.eps_label, cell.threat))
        if reference is None:
            continue
        compared += 1
        if cell.accuracy > reference.accuracy:
            weaker.append(f"{cell.defence}/{cell.threat}/{cell.eps_label}: {cell.attack} {cell.accuracy:.1%} > "
                          f"fgsm {reference.accuracy:.1%}")
    checks.append(Check(
        "iterative attacks do at least as well as FGSM", "NOT RUN" if compared == 0 else ("FLAG" if weaker else "PASS"),
        "; ".join(weaker) + (" (possible gradient masking or a weak attack)" if weaker else ""),
    ))
    return checks


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def _params_text(params: str) -> str:
    values = json.loads(params)
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def markdown(table: list[Cell], checks: list[Check], config: dict | None) -> str:
    lines = ["# Evaluation summary", ""]
    if config:
        lines += [f"Model `{config['model']}`, data `{config['data']}`"
                  + (f" (first {config['limit']} images)" if config.get("limit") else "")
                  + f", seed {config['seed']}, batch size {config['batch_size']}, EOT samples {config['eot_samples']}.",
                  f"CIIDefence config: `{canonical_json(config['ciid'])}`.", ""]
    lines += [
        "Threat models: **clean** = no attack; **graybox** = the attacker attacks the bare classifier "
        "and each defence is scored on the result; **bpda-identity** / **bpda-differentiable** = the "
        "attacker attacks the defended classifier, real defence forward, approximation backward. "
        "eps is the L-inf (or, for L2 attacks, L2) budget on images in [0, 1]; DeepFool and "
        "Carlini-Wagner are minimum-norm attacks without a budget. Intervals are 95% Wilson intervals. "
        "The checks on attack strength apply where the attacker targeted the scored model (the "
        "undefended model, and BPDA).",
        "",
        "## Sanity checks (Carlini et al. 2019)", "",
        "| check | status | detail |", "|---|---|---|",
    ]
    lines += [f"| {c.name} | **{c.status}** | {c.detail or '-'} |" for c in checks]
    lines += ["", "## Top-1 accuracy of each defence", "",
              "| defence | threat | attack | parameters | eps | top-1 | 95% CI | undefended top-1 on the same inputs "
              "| median L2 | median L-inf | s/img | images |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = defence_labels(table)
    for c in table:
        attack = "clean" if c.threat == "clean" else ATTACKS[c.attack].title + (" (sanity)" if c.is_sanity else "")
        lines.append(
            f"| {labels[(c.defence, c.defence_hash)]} | {c.threat} | {attack} | {_params_text(c.attack_params)} | {c.eps_label} | "
            f"{_percent(c.accuracy)} | {_percent(c.ci_low)}–{_percent(c.ci_high)} | {_percent(c.undefended_accuracy)} "
            f"| {c.median_l2:.3f} | {c.median_linf:.4f} | {c.seconds_per_image:.2f} | {c.images} |"
        )
    lines += ["", "## At a glance", ""] + _pivot(table)
    return "\n".join(lines) + "\n"


def _column(cell: Cell) -> tuple:
    return ("clean",) if cell.threat == "clean" else (cell.attack, cell.eps_label, cell.threat)


def _column_title(column: tuple) -> str:
    if column == ("clean",):
        return "clean"
    attack, eps, threat = column
    return " ".join(part for part in (ATTACKS[attack].title, eps if eps != "-" else "", threat) if part)


def defence_labels(table: list[Cell]) -> dict[tuple[str, str], str]:
    """A display label per (defence, hash): the name, or ``name@hash`` where a name has several hashes."""
    hashes = defaultdict(list)
    for c in table:
        if c.defence_hash not in hashes[c.defence]:
            hashes[c.defence].append(c.defence_hash)
    return {(name, digest): name if len(found) == 1 else f"{name}@{digest[:6]}"
            for name, found in hashes.items() for digest in found}


def pivot(table: list[Cell]) -> tuple[list[str], list[tuple], dict[tuple[str, int], Cell], dict[str, float]]:
    """Rows (defence labels), columns (``("clean",)`` or (attack, eps, threat)), cells by (row, column index),
    and each row's defence ms/img."""
    table = [c for c in table if not c.is_sanity]
    columns = list(dict.fromkeys(_column(c) for c in table))
    labels = defence_labels(table)
    rows = list(dict.fromkeys(labels[(c.defence, c.defence_hash)] for c in table))
    values = {(labels[(c.defence, c.defence_hash)], columns.index(_column(c))): c for c in table}
    cost = defaultdict(list)
    for c in table:
        cost[labels[(c.defence, c.defence_hash)]].append(c.defence_ms)
    return rows, columns, values, {k: statistics.fmean(v) for k, v in cost.items()}


def _pivot(table: list[Cell]) -> list[str]:
    rows, columns, values, cost = pivot(table)
    titles = [_column_title(column) for column in columns]
    header = ["defence", *titles, "defence ms/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells_text = [_percent(values[(row, i)].accuracy) if (row, i) in values else "n/a"
                      for i in range(len(titles))]
        lines.append("| " + " | ".join([row, *cells_text, f"{cost[row]:.1f}"]) + " |")
    return lines


def plot_table(table: list[Cell], path: Path) -> None:
    """The at-a-glance table as a heat map: a row per defence, a column per attack setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, columns, values, cost = pivot(table)
    grid = np.full((len(rows), len(columns)), np.nan)
    for (row, column), cell in values.items():
        grid[rows.index(row), column] = 100 * cell.accuracy
    figure, axis = plt.subplots(figsize=(1.6 + 0.8 * len(columns), 1.2 + 0.42 * len(rows)))
    axis.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axis.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=8,
                      color="white" if value < 60 else "black")
    short = ["clean" if c == ("clean",) else "\n".join(part for part in c if part != "-") for c in columns]
    axis.set_xticks(range(len(columns)), short, fontsize=7)
    axis.set_yticks(range(len(rows)), [f"{row} ({cost[row]:.0f} ms)" for row in rows], fontsize=8)
    axis.set_title("Top-1 accuracy (%) of each defence; defence cost per image in brackets", fontsize=9)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)


def plot(table: list[Cell], path: Path) -> None:
    """Accuracy against eps: a panel per threat model and L-inf attack, a line per defence (eps 0 = clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = {(c.defence, c.defence_hash): c.accuracy for c in table if c.threat == "clean"}
    labels = defence_labels(table)
    series: dict[tuple, dict[tuple, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for c in table:
        if c.threat != "clean" and c.eps is not None and not c.is_sanity and ATTACKS[c.attack].norm == "inf":
            series[(c.threat, c.attack)][(c.defence, c.defence_hash)].append(c)
    panels = list(series) or [("clean", "fgsm")]
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows), squeeze=False)
    handles = {}
    for axis, panel in zip(axes.flat, panels):
        for key, members in series.get(panel, {}).items():
            members.sort(key=lambda c: c.eps)
            xs = ([0.0] if key in clean else []) + [255 * c.eps for c in members]
            ys = ([clean[key]] if key in clean else []) + [c.accuracy for c in members]
            colour = plt.get_cmap("tab20")(list(labels).index(key) % 20)
            (line,) = axis.plot(xs, [100 * y for y in ys], "--" if key[0] == "none" else "-", marker="o", ms=3,
                                color=colour)
            handles.setdefault(labels[key], line)
        axis.set_title(f"{ATTACKS[panel[1]].title}, {panel[0]}", fontsize=9)
        axis.set_xlabel("eps (L-inf, x/255)")
        axis.set_ylabel("top-1 accuracy (%)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    figure.tight_layout()
    figure.suptitle("Accuracy against attack budget (eps 0 = clean)", y=1.02)
    figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Rebuild summary.md, summary.csv, summary.json and the two plots from the database."""
    run_dir = Path(run_dir)
    rows, config = read_run(run_dir)
    table = cells(rows)
    checks = sanity_checks(table)
    paths = {name: run_dir / name for name in ("summary.md", "summary.csv", "summary.json", "accuracy_vs_eps.png",
                                                "accuracy_table.png")}
    paths["summary.md"].write_text(markdown(table, checks, config))
    with open(paths["summary.csv"], "w", newline="") as handle:
        fields = list(Cell.__dataclass_fields__) + ["is_sanity"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for cell in table:
            writer.writerow({**asdict(cell), "is_sanity": cell.is_sanity})
    paths["summary.json"].write_text(json.dumps({
        "config": config,
        "cells": [{**asdict(c), "is_sanity": c.is_sanity} for c in table],
        "sanity_checks": [asdict(c) for c in checks],
    }, indent=2))
    plot(table, paths["accuracy_vs_eps.png"])
    plot_table(table, paths["accuracy_table.png"])
    return paths


__all__ = ["Cell", "Check", "cells", "format_eps", "sanity_checks", "wilson_interval", "write_report"]
