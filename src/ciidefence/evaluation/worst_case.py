"""The attacker's figure: for each defence and threat model, the images that survive every attack run against it.

An attacker runs every attack and budget they have and keeps, per image,
whichever one works; a defence keeps an image only if it survives all of
them. This is the figure to read beside the per-attack columns, which each
show one attack alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from .intervals import wilson_interval
from .store import ResultRow

THREAT_GROUPS = {"graybox": "graybox", "bpda": "adaptive", "transfer": "transfer"}
"""Threats the worst case is taken over, and the name of each group in tables (BPDA's approximations, and every
transfer source, are one group each)."""


@dataclass(frozen=True)
class WorstCase:
    """Of ``images`` images scored under every one of ``attacks`` attack settings of ``group``, how many
    ``defence`` kept right under all of them."""

    defence: str
    defence_hash: str
    group: str
    attacks: int
    images: int
    survived: int

    @property
    def accuracy(self) -> float:
        return self.survived / self.images if self.images else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.survived, self.images)


def worst_cases(rows: list[ResultRow]) -> list[WorstCase]:
    """One :class:`WorstCase` per defence and threat group with at least one attack, from one model's rows.

    Only the run's own experiments count (not its sanity or convergence
    checks); an image counts only where it was scored, without error, under
    every attack setting of the group.
    """
    outcomes: dict[tuple[str, str, str], dict[str, dict[str, bool]]] = {}
    names: dict[str, str] = {}
    for row in rows:
        group = THREAT_GROUPS.get(row.threat)
        if group is None or row.purpose not in ("main", "sweep") or row.error is not None:
            continue
        names[row.defence_hash] = row.defence
        per_attack = outcomes.setdefault((row.defence, row.defence_hash, group), {})
        per_attack.setdefault(row.experiment, {})[row.image] = row.pred_defended_adv == row.label
    found = []
    for (defence, digest, group), per_attack in outcomes.items():
        common = set.intersection(*(set(images) for images in per_attack.values()))
        survived = sum(all(per_attack[experiment][image] for experiment in per_attack) for image in common)
        found.append(WorstCase(defence, digest, group, len(per_attack), len(common), survived))
    return found
