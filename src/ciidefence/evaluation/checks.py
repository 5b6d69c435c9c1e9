"""The checks a run's figures must pass before they are believed: the sanity checks on attack strength (Carlini
et al. 2019) and the convergence check of each BPDA attack (more steps, more EOT samples)."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass

from ..attacks import ATTACKS
from ..defences.registry import DEFENCES
from .cells import Cell, attacks_the_scored_model, column_keys, telling_params
from .plan import SANITY_EPS, UNBOUNDED_EPS, convergence_points


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
            f"{cell.images}" for cell, column in zip(minimum_norm, column_keys(minimum_norm), strict=True)
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
                                 telling_params(dict(others), variants[setting]), partial, missing, model,
                                 defence_hash))
    return found
