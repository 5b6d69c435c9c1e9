"""Summaries of a run, rebuilt from its database alone: tables, sanity checks, plot."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..attacks import ATTACKS, format_eps
from ..defences.registry import DEFENCES
from .draws import draws_cells, draws_markdown
from .intervals import wilson_interval
from .plan import SANITY_EPS, UNBOUNDED_EPS, convergence_points, threat_label
from .store import ResultRow, Run, canonical_json, planned_models, read_run
from .worst_case import THREAT_GROUPS, WorstCase, worst_cases


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


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def scored_rows(rows: list[dict], protocol: str = "all") -> list[dict]:
    """The rows a protocol scores: all, or (``"paper"``) those of images the undefended model classifies right.

    Under the paper's protocol the other images are not attacked; their rows
    stay in the database, outside every accuracy.
    """
    if protocol == "all":
        return rows
    return [row for row in rows if row["error"] is not None or row["pred_clean"] == row["label"]]


def cells(rows: list[dict], protocol: str = "all") -> list[Cell]:
    """Aggregate rows into one :class:`Cell` per model, defence and experiment (see :func:`scored_rows`)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        key = (row["model"], row["defence"], row["defence_hash"], row["experiment"], row["purpose"], row["attack"],
               row["attack_params"], row["eps"], row["eps_label"], row["threat"], row["approximation"])
        groups[key].append(row)
    found = []
    for key, everything in groups.items():
        members = scored_rows(everything, protocol)
        if not members:
            continue
        scored = [r for r in members if r["error"] is None]
        total = len(scored)
        correct = sum(r["pred_defended_adv"] == r["label"] for r in scored)
        low, high = wilson_interval(correct, total)

        def mean_or_nan(values: list[float]) -> float:
            return statistics.fmean(values) if values else math.nan

        found.append(Cell(
            *key, total, len(members) - total, correct, correct / total if total else math.nan, low, high,
            mean_or_nan([r["pred_adv"] == r["label"] for r in scored]),
            statistics.median(r["l2"] for r in scored) if scored else math.nan,
            statistics.median(r["linf"] for r in scored) if scored else math.nan,
            mean_or_nan([r["seconds"] for r in scored]), mean_or_nan([r["defence_ms"] for r in scored]),
            _median([r["nl2"] for r in scored if r.get("nl2") is not None]),
            next((r.get("budget", "absolute") for r in members), "absolute"),
            next((r.get("eot", 1) for r in members), 1),
            next((r.get("source") for r in members), None),
            len(everything),
            everything[0].get("defence_config", ""),
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


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS, FLAG or NOT RUN
    detail: str


def sanity_checks(table: list[Cell], config: dict | None = None, complete: bool = True) -> list[Check]:
    """The checks of Carlini et al. (2019), "On Evaluating Adversarial Robustness".

    ``config`` (the run's) and ``complete`` only say why a check could not run.
    """
    checks = []
    if config is not None and not config.get("sanity", True):
        why_not = "the run was made with --no-sanity"
    elif not complete:
        why_not = "the run is incomplete: its sanity attacks run last (--resume it)"
    else:
        why_not = "no sanity rows in this run"

    def sanity_cell(eps):
        return next((c for c in table if c.defence == "none" and c.is_sanity and c.threat == "graybox"
                     and c.eps is not None and math.isclose(c.eps, eps)), None)

    strong = sanity_cell(SANITY_EPS)
    if strong is None:
        checks.append(Check("undefended model falls to <= 1% under PGD-20 at 8/255", "NOT RUN", why_not))
    else:
        checks.append(Check(
            "undefended model falls to <= 1% under PGD-20 at 8/255", "PASS" if strong.accuracy <= 0.01 else "FLAG",
            f"{strong.accuracy:.1%} of {strong.images}" + ("" if strong.accuracy <= 0.01 else
                                                           ": the attack is weak or gradients are masked"),
        ))
    unbounded = sanity_cell(UNBOUNDED_EPS)
    if unbounded is None:
        checks.append(Check("an unbounded attack reaches 0% (PGD-20, eps 1, undefended)", "NOT RUN", why_not))
    else:
        checks.append(Check(
            "an unbounded attack reaches 0% (PGD-20, eps 1, undefended)",
            "PASS" if unbounded.correct == 0 else "FLAG",
            f"{unbounded.accuracy:.1%} of {unbounded.images}" + ("" if unbounded.correct == 0 else
                                                                 ": the attack does not work as intended"),
        ))

    series: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in table:
        if cell.eps is not None and cell.in_table and cell.threat != "clean" and attacks_the_scored_model(cell):
            series[(cell.defence, cell.attack, cell.attack_params, cell.threat_label)].append(cell)
    rises = []
    for (defence, attack, _, threat), members in series.items():
        members.sort(key=lambda c: c.eps or 0.0)
        for before, after in itertools.pairwise(members):
            if after.accuracy > before.accuracy:
                rises.append(f"{defence}/{attack}/{threat}: {before.accuracy:.1%} at {before.eps_label} -> "
                             f"{after.accuracy:.1%} at {after.eps_label}")
    measured = any(len(m) > 1 for m in series.values())
    checks.append(Check(
        "accuracy does not rise with eps", "NOT RUN" if not measured else ("FLAG" if rises else "PASS"),
        "; ".join(rises) + (" (possible gradient masking, or noise of few images)" if rises else "")
        if measured else "needs one attack at two or more budgets on the undefended model (or under BPDA)",
    ))

    weaker = []
    compared = 0
    single = {(c.defence, c.eps_label, c.threat_label): c for c in table if c.attack == "fgsm" and c.in_table}
    for cell in table:
        spec = ATTACKS.get(cell.attack)
        if (spec is None or not spec.iterative or not spec.bounded or spec.norm != "inf" or not cell.in_table
                or not attacks_the_scored_model(cell)):
            continue
        reference = single.get((cell.defence, cell.eps_label, cell.threat_label))
        if reference is None:
            continue
        compared += 1
        if cell.accuracy > reference.accuracy:
            weaker.append(f"{cell.defence}/{cell.threat_label}/{cell.eps_label}: {cell.attack} {cell.accuracy:.1%} > "
                          f"fgsm {reference.accuracy:.1%}")
    checks.append(Check(
        "iterative attacks do at least as well as FGSM", "NOT RUN" if compared == 0 else ("FLAG" if weaker else "PASS"),
        "; ".join(weaker) + (" (possible gradient masking or a weak attack)" if weaker else "")
        if compared else "needs FGSM and an iterative L-inf attack at the same budget on the undefended model",
    ))

    minimum_norm = [cell for cell in table if cell.defence == "none" and cell.in_table and cell.threat != "clean"
                    and attacks_the_scored_model(cell) and cell.attack in ATTACKS and not ATTACKS[cell.attack].bounded]
    left = [f"{cell.attack}/{cell.threat_label}{''.join(f' ({p})' for p in column[3:])}: {cell.accuracy:.1%} of "
            f"{cell.images}" for cell, column in zip(minimum_norm, _columns(minimum_norm), strict=True)
            if cell.accuracy > MINIMUM_NORM_LEFT]
    checks.append(Check(
        f"minimum-norm attacks leave the undefended model at <= {MINIMUM_NORM_LEFT:.0%}",
        "NOT RUN" if not minimum_norm else ("FLAG" if left else "PASS"),
        "; ".join(left) + (": too weak to score defences with; raise its iterations or constant" if left else "")
        if minimum_norm else "needs DeepFool or C&W on the undefended model",
    ))
    return checks


MINIMUM_NORM_LEFT = 0.05
"""An attack without a budget (DeepFool, C&W) should fool nearly every image; above this share left it is too weak."""


def percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def params_text(params: str) -> str:
    values = json.loads(params)
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


STILL_FALLING_POINTS = 1.0
"""A convergence series is still falling when its last point is more than this many percentage points (and more
than one image) below the one before."""


def still_falling(accuracies: list[float], images: int, tolerance_points: float = STILL_FALLING_POINTS) -> bool:
    """Whether a series of accuracies (more steps or samples to the right) still falls at its last point."""
    if len(accuracies) < 2:
        return False
    drop = accuracies[-2] - accuracies[-1]
    return drop * 100 > tolerance_points and drop * images > 1


@dataclass(frozen=True)
class Convergence:
    """The convergence check of one BPDA attack: accuracy against steps and against EOT samples.

    ``steps`` holds (steps, accuracy) at the main experiment's EOT count;
    ``eot`` holds (samples, accuracy) at its step count (empty for a
    deterministic defence). ``partial`` and ``missing`` name the points, as
    ``(series, x)`` with series ``"steps"`` or ``"eot"``, that have fewer
    images than the run and that have none yet.
    """

    defence: str
    approximation: str
    attack: str
    eps_label: str
    images: int
    steps: list[tuple[int, float]]
    eot: list[tuple[int, float]]
    variant: str = ""
    """The parameters that tell this attack from another check of the same setting (e.g. ``"restarts=0"``)."""
    partial: tuple[tuple[str, int], ...] = ()
    missing: tuple[tuple[str, int], ...] = ()
    model: str = ""
    defence_hash: str = ""
    """With ``defence``, which classifier and which configuration of the defence (two sweep points, or two
    classifiers, each have their own check)."""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What the check is of: (model, defence digest, approximation, attack, eps), as a cell names it."""
        return (self.model, self.defence_hash, self.approximation, self.attack, self.eps_label)

    @property
    def title(self) -> str:
        return ATTACKS[self.attack].title + (f" ({self.variant})" if self.variant else "")

    @property
    def verdict(self) -> str:
        """``"incomplete"`` while a point is partial or missing, else ``"not converged"`` when a series is
        still falling at its last point (:func:`still_falling`), else ``"converged"``."""
        if self.partial or self.missing:
            return "incomplete"
        falling = any(still_falling([a for _, a in series], self.images) for series in (self.steps, self.eot))
        return "not converged" if falling else "converged"

    @property
    def converged(self) -> bool:
        return self.verdict == "converged"


def convergence(table: list[Cell], images: int | None = None) -> list[Convergence]:
    """The convergence checks of a run: one per BPDA attack that has convergence experiments.

    A check's series differ only in steps and EOT samples: an attack run with other parameters (a default
    changed between two parts of a resumed run) is a check of its own, named by the parameters that differ.
    Its points are those :func:`~ciidefence.evaluation.plan.convergence_points` plans; a point with rows for
    fewer than ``images`` images (the run's; by default, the most any point of the check has) is partial.
    """
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for c in table:
        if c.threat == "bpda" and c.purpose in ("main", "convergence"):
            others = tuple(sorted((k, v) for k, v in json.loads(c.attack_params).items() if k != "max_iter"))
            setting = (c.model, c.defence, c.defence_hash, c.approximation, c.attack, c.eps_label)
            groups[(setting, others)].append(c)
    variants: dict[tuple, list[dict]] = defaultdict(list)
    for setting, others in groups:
        variants[setting].append(dict(others))
    found = []
    for (setting, others), members in groups.items():
        model, defence, defence_hash, approximation, attack, eps_label = setting
        main = next((c for c in members if c.purpose == "main"), None)
        if main is None or not any(c.purpose == "convergence" for c in members):
            continue
        randomised = DEFENCES[defence].randomised if defence in DEFENCES else any(c.eot != main.eot for c in members)
        planned = dict(zip(("steps", "eot"), convergence_points(main.steps, main.eot, randomised), strict=True))
        points = {"steps": {c.steps: c for c in members if c.eot == main.eot},
                  "eot": {c.eot: c for c in members if c.steps == main.steps}}
        expected = images if images is not None else max(c.rows_covered for c in members)
        partial = tuple((series, x) for series, cells_at in points.items() for x, c in sorted(cells_at.items())
                        if c.short_of(expected))
        missing = tuple((series, x) for series, xs in planned.items() for x in xs if x not in points[series])
        found.append(Convergence(defence, approximation or "", attack, eps_label, main.images,
                                 [(x, c.accuracy) for x, c in sorted(points["steps"].items())],
                                 [(x, c.accuracy) for x, c in sorted(points["eot"].items())] if randomised else [],
                                 _telling(dict(others), variants[setting]), partial, missing, model,
                                 defence_hash))
    return found


def _telling(params: dict, variants: list[dict]) -> str:
    """``params``' values of the keys on which ``variants`` (sets of parameters of one setting) differ."""
    differing = sorted({k for v in variants for k in v if any(v.get(k) != w.get(k) for w in variants)})
    return ", ".join(f"{k}={params[k]}" if k in params else f"no {k}" for k in differing)


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


def _progress_line(run: Run, table: list[Cell]) -> list[str]:
    """``**incomplete: N of M batches**`` for an unfinished run, else nothing."""
    if run.complete:
        return []
    return [f"**Incomplete: {run.units_done} of {run.units_total} batches written**; cells marked † have fewer "
            f"images than the run's {run.images}. `ciid evaluate ... --resume` continues it.", ""]


def _failures_lines(rows: list[dict]) -> list[str]:
    """Per experiment, the images whose rows record an error (unreadable, or the unit failed), with a message."""
    failed: dict[str, tuple[str, set[str], str]] = {}
    for row in rows:
        if row["error"] is not None:
            threat = threat_label(row["threat"], row["approximation"], row["source"])
            name = "clean" if row["threat"] == "clean" else " ".join(
                [row["attack"], row["eps_label"], threat, *(["on", row["target"]] if row["target"] else [])])
            failed.setdefault(row["experiment"], (name, set(), row["error"]))[1].add(row["image"])
    if not failed:
        return []
    lines = ["**Errors**: these images are left out of every accuracy of their experiment (messages in the "
             "`error` column of results.sqlite); `ciid evaluate ... --resume --retry-errors` reruns their batches.",
             "", "| experiment | images | first message |", "|---|---|---|"]
    lines += [f"| {name} | {len(images)} | {message.splitlines()[0][:200]} |"
              for name, images, message in failed.values()]
    return [*lines, ""]


def markdown(table: list[Cell], checks: list[Check], run: Run, model: str | None = None) -> str:
    """The summary of one model's table (``model``: its name, when the run has several)."""
    config = run.config
    rows = [r for r in run.rows if model is None or r["model"] == model]
    lines = [f"# Evaluation summary{f': {model}' if model else ''}", ""]
    lines += _progress_line(run, table)
    if config and config.get("protocol", "all") == "paper":
        images = {r["image"] for r in rows if r["error"] is None and r["attack"] == "clean"}
        right = {r["image"] for r in rows if r["error"] is None and r["attack"] == "clean"
                 and r["pred_clean"] == r["label"]}
        lines += [f"**Paper protocol**: only the {len(right)} of {len(images)} images the undefended model "
                  "classifies correctly are attacked and scored (as in Pixel Deflection and CIIDefence); "
                  "accuracy is the share of them each defence keeps.", ""]
    if config:
        lines += [f"Model `{model or config['model']}`, data `{config['data']}`"
                  + (f" (first {config['limit']} images)" if config.get("limit") else "")
                  + f", seed {config['seed']}, batch size {config['batch_size']}, EOT samples {config['eot_samples']}.",
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
    drawn = draws_markdown(draws_cells([ResultRow(**row) for row in rows]))
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


def _column(cell: Cell) -> tuple:
    return ("clean",) if cell.threat == "clean" else (cell.attack, cell.eps_label, cell.threat_label)


def _variants(table: list[Cell], key: Callable[[Cell], tuple]) -> list[str]:
    """Per cell, the attack parameters that tell its set apart from the other sets of parameters run under the
    same ``key`` (e.g. ``"initial_const=1.0"``), or ``""`` where that key was run with one set."""
    found: dict[tuple, list[dict]] = defaultdict(list)
    params = [json.loads(c.attack_params) for c in table]
    for c, p in zip(table, params, strict=True):
        if p not in found[key(c)]:
            found[key(c)].append(p)
    return [_telling(p, found[key(c)]) for c, p in zip(table, params, strict=True)]


def _columns(table: list[Cell]) -> list[tuple]:
    """Each cell's column: its attack setting, and where one setting was run with several sets of parameters,
    the parameters that tell them apart (e.g. ``"initial_const=1.0"``)."""
    return [(*_column(c), telling) if telling else _column(c)
            for c, telling in zip(table, _variants(table, _column), strict=True)]


def _column_title(column: tuple) -> str:
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
    keys = _columns(table)
    columns = list(dict.fromkeys(keys))
    labels = defence_labels(table)
    rows = list(dict.fromkeys(labels[(c.defence, c.defence_hash)] for c in table))
    values = {(labels[(c.defence, c.defence_hash)], columns.index(key)): c for c, key in zip(table, keys, strict=True)}
    cost = defaultdict(list)
    for c in table:
        cost[labels[(c.defence, c.defence_hash)]].append(c.defence_ms)
    return rows, columns, values, {k: statistics.fmean(v) for k, v in cost.items()}


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
    titles = [_column_title(column) for column in columns]
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


def paper_layout(table: list[Cell], rows: list[dict]) -> list[str]:
    """The table as Pixel Deflection's Table 1 lays it out: a row per attack with the median normalised L2 it
    reached, a column per defence, and in each cell the share of the images the undefended model classifies
    right that the defence keeps right (``table``: the cells of those images, :func:`cells` with ``"paper"``).

    Where the defences of a row were attacked separately (BPDA), each cell gives its own median normalised L2.
    """
    unattacked = [r for r in rows if r["error"] is None and r["threat"] == "clean"]
    clean = {r["image"] for r in unattacked}
    right = {r["image"] for r in unattacked if r["pred_clean"] == r["label"]}
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
        title = _column_title(column)
        if column != ("clean",) and shared and distances:
            title += f" (nl2 {distances.pop():.4f})"
        texts = ["n/a" if c is None else percent(c.accuracy) + (" †" if c.images < len(right) else "")
                 + ("" if shared else f" (nl2 {c.median_nl2:.4f})") for c in found]
        lines.append("| " + " | ".join([title, *texts]) + " |")
    return lines


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


def _panel(cell: Cell) -> tuple[str, str, str]:
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
    for c, telling in zip(attacked, _variants(attacked, _panel), strict=True):
        series[(*_panel(c), telling)][(c.defence, c.defence_hash)].append(c)
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


def models_of(run: Run) -> list[str]:
    """The run's classifiers, in plan order (one table each)."""
    planned = planned_models(run.config)
    found = list(dict.fromkeys(row["model"] for row in run.rows))
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
        "draws": [asdict(c) for c in draws_cells([ResultRow(**row) for row in run.rows])],
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


__all__ = ["Cell", "Check", "at_a_glance", "cells", "format_eps", "glance_text", "sanity_checks", "wilson_interval",
           "write_report"]
