"""Randomised defences scored several times (``--eval-draws K``): the first draw, the worst case over the K draws
and their majority vote, each with its interval.

Since 2023 the field reports a randomised defence this way (DiffHammer, NeurIPS
2024; DiffBreak, 2025): one draw flatters it, the worst case over K is what an
attacker who may resubmit sees, and the majority vote is what a deployment that
votes over K draws gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from .intervals import wilson_interval
from .plan import threat_label
from .store import CellKey, ResultRow


@dataclass(frozen=True)
class DrawsCell:
    """One randomised defence under one experiment: of ``images`` images, how many its first draw, all of its
    ``draws`` draws, and their majority vote classified right."""

    model: str
    defence: str
    defence_hash: str
    experiment: str
    attack: str
    eps_label: str
    threat: str
    purpose: str
    draws: int
    images: int
    first: int
    worst: int
    vote: int

    def interval(self, count: int) -> tuple[float, float]:
        return wilson_interval(count, self.images)


def draws_cells(rows: list[ResultRow]) -> list[DrawsCell]:
    """The cells of every (model, defence, experiment) whose rows were scored more than once, in row order."""
    groups: dict[tuple[CellKey, int], list[ResultRow]] = {}
    for row in rows:
        if row.error is None and row.draws > 1 and row.draws_correct is not None:
            groups.setdefault((row.key, row.draws), []).append(row)
    found = []
    for (key, draws), members in groups.items():
        first = members[0]
        found.append(DrawsCell(key.model, first.defence, key.defence_hash, key.experiment, first.attack,
                               first.eps_label,
                               threat_label(first.threat, first.approximation, first.source), first.purpose, draws,
                               len(members), sum(row.correct for row in members),
                               sum(row.draws_correct == row.draws for row in members),
                               sum(row.vote == row.label for row in members)))
    return found


def draws_markdown(cells: list[DrawsCell]) -> list[str]:
    """The table of :func:`draws_cells` (empty when no defence was scored more than once)."""
    if not cells:
        return []
    lines = ["## Randomised defences, scored several times", "",
             "Each image (clean or adversarial) scored K times by the defence, each time with its own draws: "
             "**one draw** is the figure of the tables above; **worst of K** counts an image only if every draw "
             "classifies it right (an attacker who may resubmit); **majority** takes the class most draws give "
             "(a deployment that votes). 95% Wilson intervals.", "",
             "| defence | threat | attack | eps | purpose | K | one draw | worst of K | majority | images |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        figures = []
        for count in (cell.first, cell.worst, cell.vote):
            low, high = cell.interval(count)
            figures.append(f"{100 * count / cell.images:.1f}% ({100 * low:.1f}–{100 * high:.1f})")
        lines.append(f"| {cell.defence} | {cell.threat} | {cell.attack} | {cell.eps_label} | {cell.purpose} "
                     f"| {cell.draws} | {' | '.join(figures)} | {cell.images} |")
    return lines
