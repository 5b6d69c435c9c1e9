"""A run's summary, rebuilt from its database alone: summary.md (its Markdown tables), summary.csv and .json,
and the figures (drawn by :mod:`.figures`). The cells come from :mod:`.cells`, the checks from :mod:`.checks`."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import asdict
from pathlib import Path

from ..attacks import ATTACKS
from .cells import Cell, cells, column_title, defence_labels, params_text, percent, pivot
from .checks import STILL_FALLING_POINTS, Check, Convergence, convergence, sanity_checks
from .draws import draws_cells, draws_markdown
from .figures import plot, plot_convergence, plot_table
from .plan import threat_label
from .run_folder import Run, planned_models, read_run
from .store import ResultRow, canonical_json
from .worst_case import THREAT_GROUPS, WorstCase, worst_cases


def convergence_markdown(checks: list[Convergence]) -> list[str]:
    if not checks:
        return []
    lines = ["## Convergence of the BPDA attacks", "",
             f"Accuracy after more steps and more EOT samples; **not converged** when the last point is still "
             f"more than {STILL_FALLING_POINTS:g} point (and one image) below the one before: the attack was too "
             "weak to measure robustness, whatever the accuracy says. **incomplete** while a point has fewer "
             "images than the run (†) or is not run yet (not run).", "",
             "| defence | approximation | attack | eps | accuracy by steps | accuracy by EOT samples | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in checks:
        texts = {}
        for series in ("steps", "eot"):
            points = [(x, f"{percent(a)}{' †' if (series, x) in c.partial else ''}") for x, a in getattr(c, series)]
            points += [(x, "not run") for s, x in c.missing if s == series]
            texts[series] = ", ".join(f"{x}: {text}" for x, text in sorted(points)) or "-"
        verdict = c.verdict if c.converged else f"**{c.verdict}**"
        lines.append(f"| {c.defence} | {c.approximation} | {c.title} | {c.eps_label} | {texts['steps']} "
                     f"| {texts['eot']} | {verdict} |")
    return [*lines, ""]


def _progress_line(run: Run, table: list[Cell]) -> list[str]:
    """``**incomplete: N of M batches**`` for an unfinished run, else nothing."""
    if run.complete:
        return []
    return [f"**Incomplete: {run.units_done} of {run.units_total} batches written**; cells marked † have fewer "
            f"images than the run's {run.images}. `ciid evaluate ... --resume` continues it.", ""]


def _failures_lines(rows: list[ResultRow]) -> list[str]:
    """Per experiment, the images whose rows record an error (unreadable, or the unit failed), with a message."""
    failed: dict[str, tuple[str, set[str], str]] = {}
    for row in rows:
        if row.error is not None:
            threat = threat_label(row.threat, row.approximation, row.source)
            name = "clean" if row.threat == "clean" else " ".join(
                [row.attack, row.eps_label, threat, *(["on", row.target] if row.target else [])])
            failed.setdefault(row.experiment, (name, set(), row.error))[1].add(row.image)
    if not failed:
        return []
    lines = ["**Errors**: these images are left out of every accuracy of their experiment (messages in the "
             "`error` column of results.sqlite); `ciid evaluate ... --resume --retry-errors` reruns their batches.",
             "", "| experiment | images | first message |", "|---|---|---|"]
    lines += [f"| {name} | {len(images)} | {message.splitlines()[0][:200]} |"
              for name, images, message in failed.values()]
    return [*lines, ""]


def resolution_sentence(resolution: str) -> str:
    """How a run's images were attacked and defended (:data:`~ciidefence.evaluation.plan.RESOLUTIONS`)."""
    if resolution == "full-then-view":
        return ("Resolution: **full, then the view**: each image attacked at its own size (through the "
                "classifier's resize), and each defence given the classifier's view of the attacked image.")
    if resolution == "full":
        return ("Resolution: **full**: each image attacked and defended at its own size (the attack made through "
                "the classifier's resize to its view), as `ciid purify` defends images.")
    return "Resolution: the classifier's view (each image resized and centre-cropped first; the paper's protocol)."


def markdown(table: list[Cell], checks: list[Check], run: Run, model: str | None = None) -> str:
    """The summary of one model's table (``model``: its name, when the run has several)."""
    config = run.config
    rows = [r for r in run.rows if model is None or r.model == model]
    lines = [f"# Evaluation summary{f': {model}' if model else ''}", ""]
    lines += _progress_line(run, table)
    if config and config.get("protocol", "all") == "paper":
        images = {r.image for r in rows if r.error is None and r.attack == "clean"}
        right = {r.image for r in rows if r.error is None and r.attack == "clean"
                 and r.pred_clean == r.label}
        lines += [f"**Paper protocol**: only the {len(right)} of {len(images)} images the undefended model "
                  "classifies correctly are attacked and scored (as in Pixel Deflection and CIIDefence); "
                  "accuracy is the share of them each defence keeps.", ""]
    if config:
        lines += [f"Model `{model or config['model']}`, data `{config['data']}`"
                  + (f" (first {config['limit']} images)" if config.get("limit") else "")
                  + f", seed {config['seed']}, batch size {config['batch_size']}, EOT samples {config['eot_samples']}.",
                  resolution_sentence(config.get("resolution", "view")),
                  f"CIIDefence config: `{canonical_json(config['ciid'])}`.", ""]
    lines += _failures_lines(rows)
    lines += [
        "Threat models: **clean** = no attack; **graybox** = the attacker attacks the bare classifier "
        "and each defence is scored on the result; **bpda-identity** / **bpda-differentiable** / "
        "**bpda-inpainter** = the attacker attacks the defended classifier, real defence forward, "
        "approximation backward (identity; through the wavelet shrinkage; through the inpainter too); "
        "**transfer-from-X** = the attacker attacks the bare classifier X, and each defence is scored, "
        "with this run's model, on the result (the black-box number). "
        "eps is the L-inf (or, for L2 attacks, L2) budget on images in [0, 1]; `0.03 nl2` is a normalised "
        "L2 budget, each image's L2 radius being 0.03 times its own L2 norm (the papers' convention); the "
        "median normalised L2 column gives ||x_adv - x|| / ||x|| for every attack, so both conventions "
        "sit side by side. DeepFool and "
        "Carlini-Wagner are minimum-norm attacks without a budget. Intervals are 95% Wilson intervals. "
        "The checks on attack strength apply where the attacker targeted the scored model (the "
        "undefended model under gray-box attacks, and BPDA), not to transfer.",
        "",
        "## Sanity checks (Carlini et al. 2019)", "",
        "| check | status | detail |", "|---|---|---|",
    ]
    lines += [f"| {c.name} | **{c.status}** | {c.detail or '-'} |" for c in checks]
    checks_of_convergence = convergence(table, run.images)
    lines += ["", "## At a glance", "", "Top-1 accuracy; n images per cell.", ""] + at_a_glance(
        table, run.images, checks_of_convergence, worst_cases(rows))
    lines += ["", *convergence_markdown(checks_of_convergence)]
    drawn = draws_markdown(draws_cells(rows))
    lines += ["", *drawn] if drawn else []
    lines += ["", *paper_layout(cells(rows, "paper"), rows)]
    lines += ["", "## Top-1 accuracy of each defence", "",
              "| defence | threat | attack | parameters | eps | top-1 | 95% CI | undefended top-1 on the same inputs "
              "| median L2 | median normalised L2 | median L-inf | defence ms/img | images |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    labels = defence_labels(table)
    for c in table:
        if not c.in_table:
            continue
        attack = "clean" if c.threat == "clean" else ATTACKS[c.attack].title
        lines.append(
            f"| {labels[(c.defence, c.defence_hash)]} | {c.threat_label} | {attack} | {params_text(c.attack_params)} "
            f"| {c.eps_label} | {percent(c.accuracy)} | {percent(c.ci_low)}–{percent(c.ci_high)} "
            f"| {percent(c.undefended_accuracy)} | {c.median_l2:.3f} | {c.median_nl2:.4f} | {c.median_linf:.4f} "
            f"| {c.defence_ms:.1f} "
            f"| {c.images}{' †' if c.short_of(run.images) else ''} |"
        )
    lines += ["", "## Experiments", "",
              "Each experiment's wall time per image: the attack, plus every defence scored on it.", "",
              "| purpose | threat | attack | parameters | eps | EOT samples | s/img | images |",
              "|---|---|---|---|---|---|---|---|"]
    for c in {c.experiment: c for c in table}.values():
        attack = "clean" if c.threat == "clean" else ATTACKS[c.attack].title
        target = f" on {c.defence}" if c.threat == "bpda" else ""
        lines.append(f"| {c.purpose} | {c.threat_label}{target} | {attack} | {params_text(c.attack_params)} "
                     f"| {c.eps_label} | {c.eot} | {c.attack_seconds:.2f} | {c.images} |")
    return "\n".join(lines) + "\n"


_VERDICT_FLAGS = {"not converged": " (not converged)", "incomplete": " (convergence incomplete)"}


def at_a_glance(table: list[Cell], total: int | None = None,
                checks: list[Convergence] | None = None, worst: list[WorstCase] | None = None) -> list[str]:
    """A Markdown table: a row per defence, a column per attack setting, top-1 in each cell; then, per threat
    group of ``worst``, the share of images that survive every attack of the group (the attacker's figure).

    A BPDA cell whose convergence check (``checks``) is not "converged" is marked with its verdict.
    """
    unconverged = {check.key: check.verdict for check in checks or []
                   if not check.converged}
    rows, columns, values, cost = pivot(table)
    titles = [column_title(column) for column in columns]
    labels = defence_labels(table)
    groups = [group for group in THREAT_GROUPS.values() if any(w.group == group for w in worst or [])]
    attackers = {(labels.get((w.defence, w.defence_hash)), w.group): w for w in worst or []}
    header = ["defence", *titles, *(f"worst case over every {group} attack" for group in groups), "defence ms/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        texts = []
        for i in range(len(titles)):
            cell = values.get((row, i))
            if cell is None:
                texts.append("n/a")
                continue
            verdict = unconverged.get((cell.model, cell.defence_hash, cell.approximation or "", cell.attack,
                                       cell.eps_label), "")
            texts.append(f"{percent(cell.accuracy)}{' †' if cell.short_of(total) else ''}"
                         f"{_VERDICT_FLAGS.get(verdict, '')}")
        for group in groups:
            found = attackers.get((row, group))
            texts.append("n/a" if found is None or not found.images else
                         f"{percent(found.accuracy)} of {found.images} ({found.attacks} attack"
                         f"{'s' if found.attacks != 1 else ''})")
        lines.append("| " + " | ".join([row, *texts, f"{cost[row]:.1f}"]) + " |")
    images = sorted({c.images for c in values.values()})
    if images:
        lines += ["", f"n = {images[0]}" if len(images) == 1 else f"n = {images[0]} to {images[-1]} images per cell"]
    if groups:
        lines += ["", "The worst-case columns count an image only if the defence classifies it right under every "
                      "attack and budget of that threat model in this run (the attacker keeps, per image, whichever "
                      "attack works), over the images scored under all of them."]
    return lines


def paper_layout(table: list[Cell], rows: list[ResultRow]) -> list[str]:
    """The table as Pixel Deflection's Table 1 lays it out: a row per attack with the median normalised L2 it
    reached, a column per defence, and in each cell the share of the images the undefended model classifies
    right that the defence keeps right (``table``: the cells of those images, :func:`cells` with ``"paper"``).

    Where the defences of a row were attacked separately (BPDA), each cell gives its own median normalised L2.
    """
    unattacked = [r for r in rows if r.error is None and r.threat == "clean"]
    clean = {r.image for r in unattacked}
    right = {r.image for r in unattacked if r.pred_clean == r.label}
    defences, columns, values, _ = pivot(table)
    lines = ["## The paper's protocol, laid out as Pixel Deflection's Table 1", "",
             f"Only the {len(right)} of {len(clean)} images the undefended model classifies right; each cell is "
             "the share of them the defence classifies right (for the clean row: without an attack), with the "
             "median normalised L2 ||x_adv - x|| / ||x|| of the adversarial images beside the attack; † marks a "
             "cell of fewer images (an unfinished run).", "",
             "| attack | " + " | ".join(defences) + " |", "|---|" + "---|" * len(defences)]
    for index, column in enumerate(columns):
        found = [values.get((defence, index)) for defence in defences]
        distances = {round(c.median_nl2, 4) for c in found if c is not None and not math.isnan(c.median_nl2)}
        shared = column == ("clean",) or len(distances) <= 1
        title = column_title(column)
        if column != ("clean",) and shared and distances:
            title += f" (nl2 {distances.pop():.4f})"
        texts = ["n/a" if c is None else percent(c.accuracy) + (" †" if c.images < len(right) else "")
                 + ("" if shared else f" (nl2 {c.median_nl2:.4f})") for c in found]
        lines.append("| " + " | ".join([title, *texts]) + " |")
    return lines


def models_of(run: Run) -> list[str]:
    """The run's classifiers, in plan order (one table each)."""
    planned = planned_models(run.config)
    found = list(dict.fromkeys(row.model for row in run.rows))
    return [m for m in planned if m in found] + [m for m in found if m not in planned]


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Rebuild summary.md, summary.csv, summary.json and the plots from the database.

    A run of several classifiers gets a section of summary.md and its own
    plots (``accuracy_vs_eps_<model>.png``, ...) per classifier.
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    paths = {name: run_dir / name for name in ("summary.md", "summary.csv", "summary.json")}
    if not run.rows:
        paths["summary.md"].write_text(f"# Summary\n\nNo results in {run_dir} yet ({run.units_done} of "
                                       f"{run.units_total or 'an unknown number of'} units finished): the run "
                                       f"stopped before its first batch, or has not started. `ciid evaluate ... "
                                       f"--resume` continues it.\n")
        paths["summary.json"].write_text(json.dumps({"config": run.config, "complete": False, "cells": []}))
        paths["summary.csv"].write_text(",".join(Cell.__dataclass_fields__) + "\n")
        return paths
    table = cells(run.rows, run_protocol(run))
    models = models_of(run)
    checks = sanity_checks(table, run.config, run.complete)
    if len(models) > 1:
        tables = {model: [c for c in table if c.model == model] for model in models}
        checks_by_model = {model: sanity_checks(t, run.config, run.complete) for model, t in tables.items()}
        paths["summary.md"].write_text("\n".join(markdown(tables[m], checks_by_model[m], run, m) for m in models))
        checks = [check for found in checks_by_model.values() for check in found]
        for model, own in tables.items():
            for stem, draw in (("accuracy_vs_eps", plot), ("accuracy_table", plot_table)):
                name = f"{stem}_{file_safe(model)}.png"
                paths[name] = run_dir / name
                draw(own, paths[name])
    else:
        paths["summary.md"].write_text(markdown(table, checks, run))
        for stem, draw in (("accuracy_vs_eps", plot), ("accuracy_table", plot_table)):
            paths[f"{stem}.png"] = run_dir / f"{stem}.png"
            draw(table, paths[f"{stem}.png"])
    with open(paths["summary.csv"], "w", newline="") as handle:
        fields = list(Cell.__dataclass_fields__)
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for cell in table:
            writer.writerow(asdict(cell))
    checks_of_convergence = convergence(table, run.images)
    paths["summary.json"].write_text(json.dumps({
        "config": run.config,
        "complete": run.complete,
        "units_done": run.units_done,
        "units_total": run.units_total,
        "cells": [asdict(c) for c in table],
        "draws": [asdict(c) for c in draws_cells(run.rows)],
        "sanity_checks": [asdict(c) for c in checks],
        "convergence": [{**asdict(c), "verdict": c.verdict, "converged": c.converged} for c in checks_of_convergence],
    }, indent=2))
    if checks_of_convergence:
        paths["convergence.png"] = run_dir / "convergence.png"
        plot_convergence(checks_of_convergence, paths["convergence.png"])
    return paths


def file_safe(name: str) -> str:
    """``name`` with every character but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``: a model
    name never becomes a path."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def run_protocol(run: Run) -> str:
    return run.config.get("protocol", "all") if run.config else "all"


def glance_text(run_dir: str | Path) -> str:
    """What ``ciid evaluate`` prints at the end: progress, the sanity checks in one line each, the table."""
    run = read_run(run_dir)
    table = cells(run.rows, run_protocol(run))
    lines = _progress_line(run, table)
    for model in models_of(run):
        own = [c for c in table if c.model == model]
        lines += [f"## {model}", ""] if len(models_of(run)) > 1 else []
        lines += [f"sanity: {c.status:7s} {c.name}" + (f" ({c.detail})" if c.detail and c.status != "PASS" else "")
                  for c in sanity_checks(own, run.config, run.complete)]
        lines += ["", *at_a_glance(own, run.images, convergence(own, run.images)), ""]
    return "\n".join(lines) + "\n"


__all__ = ["at_a_glance", "glance_text", "markdown", "write_report"]
