"""Two runs side by side (``ciid report RUN --compare OTHER``): each experiment both ran, matched by identity,
with both figures, the difference and its interval."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from ..attacks import ATTACKS
from .cells import Cell, cells, defence_labels, params_text, percent, scored_rows
from .intervals import paired_difference
from .run_folder import Run, read_run
from .store import CellKey, ResultRow
from .summary import run_protocol


def matching(key: CellKey, with_model: bool) -> CellKey:
    """What matches a cell across two runs: its key, without the model when the runs evaluated different ones
    (to compare two classifiers on the same experiments)."""
    return key if with_model else dataclasses.replace(key, model="")


def outcomes(rows: list[ResultRow], protocol: str, with_model: bool) -> dict[CellKey, dict[str, bool]]:
    """Each cell's scored images and whether the defended model got each right (its first draw)."""
    found: dict[CellKey, dict[str, bool]] = defaultdict(dict)
    for row in scored_rows(rows, protocol):
        if row.error is None:
            found[matching(row.key, with_model)][row.image] = row.correct
    return found


def compare_markdown(run_dir: str | Path, other_dir: str | Path) -> str:
    """The experiments both runs hold, one row each: A's and B's top-1, A - B with its paired 95% interval
    (image by image, :func:`paired_difference`), and whether that interval excludes 0; then what only one of
    them holds.

    Cells are matched by identity: the defence's digest and the experiment's
    (attack, parameters, budget, threat, approximation); by the model too
    when both runs evaluated the same models, so that two classifiers can be
    compared on the same experiments. Only the images both runs hold count,
    so a 100-image run is compared with the same 100 of a 500-image one.
    """
    runs = [read_run(run_dir), read_run(other_dir)]
    held = [{row.image for row in run.rows} for run in runs]
    common = held[0] & held[1]
    tables = [[c for c in cells([row for row in run.rows if row.image in common], run_protocol(run)) if c.in_table]
              for run in runs]
    same_models = {c.model for c in tables[0]} == {c.model for c in tables[1]}
    show_model = same_models and len({c.model for c in tables[0]}) > 1

    found = [{matching(c.key, same_models): c for c in table} for table in tables]
    scored = [outcomes([row for row in run.rows if row.image in common], run_protocol(run), same_models)
              for run in runs]
    labels = defence_labels(tables[0] + tables[1])
    lines = ["# Comparison", "", f"A = `{run_dir}` ({describe_run(runs[0])}); B = `{other_dir}` "
             f"({describe_run(runs[1])}).", "",
             "Top-1 accuracy of each experiment both runs hold (matched by the defence's and the experiment's "
             "identity), on the images both hold"
             + (f" ({len(common)}; A holds {len(held[0])}, B {len(held[1])})" if held[0] != held[1] else "")
             + "; **yes** where the 95% interval of A - B excludes 0 (Newcombe's paired interval, image by "
             "image: the runs share their images, so the interval is narrower than two independent samples'.)", "",
             "| defence | threat | attack | parameters | eps | A | B | A - B (95% interval) | differs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, a in found[0].items():
        b = found[1].get(name)
        if b is None:
            continue
        paired = paired_difference(scored[0].get(name, {}), scored[1].get(name, {}))
        on = "" if paired.images == a.images == b.images else f" on {paired.images} scored by both"
        lines.append(f"| {labels[(a.defence, a.defence_hash)]}{_model(a, show_model)} | {a.threat_label} "
                     f"| {_attack(a)} | {params_text(a.attack_params)} | {a.eps_label} "
                     f"| {percent(a.accuracy)} (n={a.images}) "
                     f"| {percent(b.accuracy)} (n={b.images}) | {100 * paired.difference:+.1f} "
                     f"({100 * paired.low:+.1f} to {100 * paired.high:+.1f}){on} "
                     f"| {'**yes**' if paired.differs else 'no'} |")
    for side, own, other in (("A", found[0], found[1]), ("B", found[1], found[0])):
        alone = [c for name, c in own.items() if name not in other]
        if alone:
            more = f"; and {len(alone) - ONLY_LISTED} more" if len(alone) > ONLY_LISTED else ""
            alone = alone[:ONLY_LISTED]
            lines += ["", f"Only in {side}: " + "; ".join(
                f"{labels[(c.defence, c.defence_hash)]}{_model(c, show_model)} {c.threat_label} {_attack(c)} "
                f"{params_text(c.attack_params)} {c.eps_label} {percent(c.accuracy)}" for c in alone) + more + "."]
    return "\n".join(lines) + "\n"


ONLY_LISTED = 30
"""Experiments of one run only, listed by name; the rest are counted."""


def _attack(cell: Cell) -> str:
    return "clean" if cell.threat == "clean" else ATTACKS[cell.attack].title


def _model(cell: Cell, show: bool) -> str:
    return f" ({cell.model})" if show else ""


def describe_run(run: Run) -> str:
    """The run in a line: model, images, protocol, and how far it got."""
    if not run.config:
        return "configuration not stored"
    images = f"{run.images} images" if run.images is not None else "images: unknown"
    return (f"model {run.config['model']}, {images}, protocol {run.config.get('protocol', 'all')}, resolution "
            f"{run.config.get('resolution', 'view')}") + (
        "" if run.complete else f", incomplete: {run.units_done} of {run.units_total} batches")
