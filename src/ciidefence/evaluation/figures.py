"""The summary's figures: accuracy against budget, the accuracy table as a heat map, and the convergence plot."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS
from .cells import Cell, defence_labels, pivot, telling_variants
from .checks import Convergence


def plot_convergence(checks: list[Convergence], path: Path) -> None:
    """Save :func:`convergence_figure` to ``path``."""
    convergence_figure(checks).savefig(path, dpi=130)


def convergence_figure(checks: list[Convergence]) -> Any:
    """Accuracy against steps and (where a randomised defence was attacked) against EOT samples, a line per
    BPDA attack."""
    from matplotlib.figure import Figure

    panels: list[tuple[str, Any]] = [("attack steps", lambda c: c.steps)]
    if any(c.eot for c in checks):
        panels.append(("EOT samples per step", lambda c: c.eot))
    figure = Figure(figsize=(9 if len(panels) > 1 else 5, 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (name, series_of) in zip(axes, panels, strict=True):
        for index, c in enumerate(checks):
            if series := series_of(c):
                label = f"{c.defence} ({c.approximation}), {c.title} {c.eps_label}" + (
                    "" if c.converged else f": {c.verdict.upper()}")
                axis.plot([x for x, _ in series], [100 * a for _, a in series],
                          marker=_MARKERS[index % len(_MARKERS)], label=label)
        ticks = sorted({x for c in checks for x, _ in series_of(c)})
        axis.set_xscale("log")
        axis.set_xticks(ticks, [str(t) for t in ticks], minor=False)
        axis.set_xticks([], minor=True)
        axis.set_xlabel(name)
        axis.set_ylabel("top-1 accuracy under BPDA (%)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    figure.suptitle("Convergence of the BPDA attacks", fontsize=10)
    return figure


def plot_table(table: list[Cell], path: Path) -> None:
    """Save :func:`table_figure` of ``table`` to ``path``."""
    table_figure(table).savefig(path, dpi=130, bbox_inches="tight")


def table_figure(table: list[Cell]) -> Any:
    """The at-a-glance table as a heat map: a row per defence, a column per attack setting, with n.

    A threat model shared by every attacked column (a transfer run's source, say) is named once in the title.
    """
    import numpy as np
    from matplotlib.figure import Figure

    rows, columns, values, cost = pivot(table)
    grid = np.full((len(rows), len(columns)), np.nan)
    counts = np.zeros((len(rows), len(columns)), dtype=int)
    for (row, column), cell in values.items():
        grid[rows.index(row), column] = 100 * cell.accuracy
        counts[rows.index(row), column] = cell.images
    threats = {threat for _, _, threat, *_ in (c for c in columns if c != ("clean",))}
    shared = threats.pop() if len(threats) == 1 else None  # named once in the title, not under every column
    labels = [_tick_label(column, shared) for column in columns]
    widest = max(len(line) for label in labels for line in label.split("\n"))
    column_width = max(0.85, 0.06 * widest)  # inches; about 0.055 in per character at 7 pt
    figure = Figure(figsize=(1.6 + column_width * len(columns), 1.2 + 0.46 * len(rows)))
    axis = figure.subplots()
    axis.imshow(grid, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axis.text(c, r, f"{value:.0f}\nn={counts[r, c]}", ha="center", va="center", fontsize=6.5,
                      color="white" if value < 60 else "black")
    axis.set_xticks(range(len(columns)), labels, fontsize=7)
    axis.set_yticks(range(len(rows)), [f"{row} ({cost[row]:.0f} ms)" for row in rows], fontsize=8)
    axis.set_title("Top-1 accuracy (%) of each defence" + (f", every attack {shared}" if shared else "")
                   + "; defence cost per image in brackets", fontsize=9)
    return figure


def _tick_label(column: tuple, shared_threat: str | None) -> str:
    """A heat-map column's label, one part a line, leaving out a threat the title already names."""
    if column == ("clean",):
        return "clean"
    attack, eps, threat, *params = column
    return "\n".join(part for part in (attack, eps, threat if threat != shared_threat else "-", *params) if part != "-")


_MARKERS = "osD^vP*Xh<>p"


def plot(table: list[Cell], path: Path) -> None:
    """Save :func:`eps_figure` of ``table`` to ``path``."""
    eps_figure(table).savefig(path, dpi=130, bbox_inches="tight")


_BUDGET_AXES = {"inf": (255.0, "eps (L-inf, x/255)"), "2": (1.0, "eps (L2)"),
                "nl2": (1.0, "eps (normalised L2, ||d||/||x||)")}
"""Per budget kind, in panel order: the factor from ``eps`` to the eps plot's x axis, and the axis label."""


def _budget_kind(cell: Cell) -> str:
    return "nl2" if cell.budget == "nl2" else ATTACKS[cell.attack].norm


def panel_key(cell: Cell) -> tuple[str, str, str]:
    return (cell.threat_label, _budget_kind(cell), cell.attack)


def eps_figure(table: list[Cell]) -> Any:
    """Accuracy against eps: a panel per threat model, attack and budget kind, a line per defence (eps 0 = clean).

    Where one attack was run with several sets of parameters (e.g. with and
    without a random start), each set gets its own panel, titled with the
    parameters that tell them apart, so no line joins two variants.

    L-inf budgets are drawn in 1/255 steps, L2 budgets as they are, and
    normalised L2 budgets (``nl2``) as the fraction of each image's norm.
    Each defence has its own colour and marker; points are drawn only where
    measured, with 95% Wilson intervals as bands. The undefended model is dashed.
    A defence attacked at a single budget gets markers with error bars and no
    line, since nothing between clean and that budget was measured, set a
    little apart from the other defences' so that none hides another.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    clean = {(c.defence, c.defence_hash): c for c in table if c.threat == "clean"}
    labels = defence_labels(table)
    attacked = [c for c in table if c.threat != "clean" and c.eps is not None and c.in_table]
    series: dict[tuple, dict[tuple, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    for c, telling in zip(attacked, telling_variants(attacked, panel_key), strict=True):
        series[(*panel_key(c), telling)][(c.defence, c.defence_hash)].append(c)
    threats = list(dict.fromkeys(threat for threat, *_ in series))
    panels = sorted(series, key=lambda p: (threats.index(p[0]), list(_BUDGET_AXES).index(p[1])))
    panels = panels or [("clean", "inf", "fgsm", "")]
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.6 * columns, 3.8 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    palette = colormaps["tab10"] if len(labels) <= 10 else colormaps["tab20"]
    order = list(labels)
    handles: dict[str, Any] = {}
    for axis, panel in zip(axes.flat, panels, strict=False):
        threat, kind, attack, telling = panel
        scale, x_label = _BUDGET_AXES[kind]
        for key, members in series.get(panel, {}).items():
            members.sort(key=lambda c: c.eps or 0.0)
            points = ([(0.0, clean[key])] if key in clean else []) + [(scale * (c.eps or 0.0), c) for c in members]
            xs = [x for x, _ in points]
            index = order.index(key)
            colour = palette(index % palette.N)
            ys = [100 * c.accuracy for _, c in points]
            marker = _MARKERS[index % len(_MARKERS)]
            if len({c.eps for c in members}) > 1:
                (line,) = axis.plot(xs, ys, "--" if key[0] == "none" else "-", marker=marker, ms=4,
                                    color=colour, lw=1.2)
                axis.fill_between(xs, [100 * c.ci_low for _, c in points], [100 * c.ci_high for _, c in points],
                                  color=colour, alpha=0.12, lw=0)
            else:  # one budget: a line to it from clean would draw values that were never measured
                errors = [[y - 100 * c.ci_low for y, (_, c) in zip(ys, points, strict=True)],
                          [100 * c.ci_high - y for y, (_, c) in zip(ys, points, strict=True)]]
                span = max(xs) or 1.0  # defences side by side at each x, so that none hides another
                xs = [x + span * 0.03 * (index - (len(order) - 1) / 2) for x in xs]
                line = axis.errorbar(xs, ys, yerr=errors, fmt=marker, ms=4, color=colour, capsize=2,
                                     mfc="none" if key[0] == "none" else colour, lw=1)
            handles.setdefault(labels[key], line)
        axis.set_title(f"{ATTACKS[attack].title}, {threat}" + (f" ({telling})" if telling else ""), fontsize=9)
        axis.set_xlabel(x_label)
        axis.set_ylabel("top-1 accuracy (%)")
        axis.set_ylim(-2, 102)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    figure.suptitle("Accuracy against attack budget (eps 0 = clean; bands and bars: 95% intervals)", y=1.02)
    figure.tight_layout()
    return figure
