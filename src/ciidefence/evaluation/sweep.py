"""Searching CIIDefence's parameters: grid and random points, scores, the Pareto front."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..defences.config import CIIDefenceConfig
from ..errors import ConfigError
from .cells import Cell, cells, defence_labels
from .run_folder import read_run
from .store import ResultRow

_FIELDS = {field.name: field for field in dataclasses.fields(CIIDefenceConfig)}
CLEAN_TOLERANCE = 0.02
"""``light``: the most robust point whose clean accuracy is within this of the undefended model's."""
STRONG_MIN_CLEAN = 0.75
"""``strong``: the most robust point whose clean accuracy is at least this."""


def _parse_value(name: str, text: str):
    default = _FIELDS[name].default
    if text.lower() == "none" and default is None:
        return None
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int) or name == "wavelet_levels":
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"--grid {name}: {text!r} is not a valid value") from None
    return text


def parse_grid(specs: tuple[str, ...]) -> dict[str, list]:
    """``("top_k=1,3", "sigma=0.01,0.02")`` to ``{"top_k": [1, 3], "sigma": [0.01, 0.02]}``."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"--grid {spec!r}: unknown parameter; choose from: {', '.join(_FIELDS)}")
        if not values.strip():
            raise ConfigError(f"--grid {spec!r}: expected NAME=V1,V2,...")
        grid[name] = list(dict.fromkeys(_parse_value(name, v.strip()) for v in values.split(",") if v.strip()))
    return grid


def parse_point(spec: str) -> dict:
    """``"regions=none sigma=0.04"`` to ``{"regions": "none", "sigma": 0.04}``: one point's settings."""
    settings = {}
    for item in spec.split():
        name, _, value = item.partition("=")
        grid = parse_grid((f"{name}={value}",))
        (name, values), = grid.items()
        if len(values) != 1:
            raise ConfigError(f"--point {spec!r}: {name} takes one value here, got {value!r}")
        settings[name] = values[0]
    if not settings:
        raise ConfigError(f"--point {spec!r}: expected NAME=VALUE [NAME=VALUE ...]")
    return settings


def sweep_points(base: CIIDefenceConfig, grid: dict[str, list], samples: int | None = None,
                 seed: int = 0, extra: tuple[dict, ...] = ()) -> list[dict]:
    """Every grid point (or ``samples`` of them drawn without replacement), then the ``extra`` points.

    Each point is ``base`` with the grid's (or the extra point's) values, as a
    full configuration; an empty grid is ``base`` alone, or nothing when there
    are extra points. Duplicates are dropped and invalid combinations raise
    :class:`ConfigError`.
    """
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names))) if names or not extra else []
    if samples is not None and samples < len(combos):
        combos = random.Random(seed).sample(combos, samples)
    settings = [dict(zip(names, combo, strict=True)) for combo in combos] + list(extra)
    points = [dataclasses.replace(base, **values).to_dict() for values in settings]
    return list({json.dumps(p, sort_keys=True): p for p in points}.values())


@dataclass(frozen=True)
class Score:
    """One defence's clean and gray-box robust accuracy in a sweep."""

    label: str
    defence: str
    params: dict
    clean: float
    robust: dict[str, float]
    defence_ms: float

    @property
    def mean_robust(self) -> float:
        return statistics.fmean(self.robust.values()) if self.robust else float("nan")


def scores(table: list[Cell], rows: list[ResultRow]) -> list[Score]:
    """A :class:`Score` per defence configuration found in a run's cells."""
    params = {r.defence_hash: json.loads(r.defence_config) for r in rows}
    by_hash: dict[str, list[Cell]] = {}
    for cell in table:
        if cell.in_table:
            by_hash.setdefault(cell.defence_hash, []).append(cell)
    labels = defence_labels(table)
    found = []
    for digest, members in by_hash.items():
        clean = next((c.accuracy for c in members if c.threat == "clean"), float("nan"))
        robust = {f"{c.attack} {c.eps_label}": c.accuracy for c in members if c.threat == "graybox"}
        name = members[0].defence
        label = labels[(name, digest)]
        found.append(Score(label, name, params.get(digest, {}), clean, robust,
                           statistics.fmean(c.defence_ms for c in members)))
    return found


def pareto_front(points: list[Score]) -> list[Score]:
    """The points no other point beats on both clean and mean robust accuracy, by clean accuracy."""
    def beats(q: Score, p: Score) -> bool:  # with a tolerance, so that float rounding makes no ties
        at_least = q.clean >= p.clean - 1e-9 and q.mean_robust >= p.mean_robust - 1e-9
        return at_least and (q.clean > p.clean + 1e-9 or q.mean_robust > p.mean_robust + 1e-9)

    front = [p for p in points if not any(beats(q, p) for q in points)]
    return sorted(front, key=lambda p: p.clean)


def best_within(points: list[Score], undefended_clean: float, tolerance: float = CLEAN_TOLERANCE) -> Score | None:
    """The CIIDefence point of highest mean robust accuracy whose clean accuracy is within ``tolerance``."""
    eligible = [p for p in points if p.defence == "ciid" and p.clean >= undefended_clean - tolerance - 1e-9]
    return max(eligible, key=lambda p: (p.mean_robust, p.clean), default=None)


def is_full_method(score: Score) -> bool:
    """A CIIDefence point with CAM boxes and denoising, not an ablation."""
    return (score.defence == "ciid" and score.params.get("regions", "cam") == "cam"
            and score.params.get("denoise", True) is True)


def operating_points(points: list[Score], undefended_clean: float) -> dict[str, Score]:
    """The named strengths, chosen among the full-method CIIDefence points by the project's rule.

    ``light``: the most robust point within :data:`CLEAN_TOLERANCE` of the
    undefended clean accuracy; ``balanced`` (the default): the point of
    highest mean of clean and mean robust accuracy; ``strong``: the most
    robust point with clean accuracy at least :data:`STRONG_MIN_CLEAN`.
    A strength no point qualifies for is left out.
    """
    full = [p for p in points if is_full_method(p) and p.robust]
    chosen = {
        "light": best_within(full, undefended_clean),
        "balanced": max(full, key=lambda p: ((p.clean + p.mean_robust) / 2, p.clean), default=None),
        "strong": max((p for p in full if p.clean >= STRONG_MIN_CLEAN - 1e-9),
                      key=lambda p: (p.mean_robust, p.clean), default=None),
    }
    return {name: score for name, score in chosen.items() if score is not None}


def _varying(points: list[Score]) -> list[str]:
    ciid = [p.params for p in points if p.defence == "ciid"]
    return [name for name in _FIELDS if len({json.dumps(p.get(name)) for p in ciid}) > 1]


def sweep_markdown(points: list[Score], undefended: Score | None, chosen: dict[str, Score]) -> str:
    attacks = list(dict.fromkeys(k for p in points for k in p.robust))
    varying = _varying(points)
    lines = ["# Sweep of CIIDefence's parameters", "",
             "Clean and gray-box robust top-1 accuracy of every point and every other defence in the run; "
             "robust accuracy is the mean over the attack columns. A * marks the Pareto front.", ""]
    if undefended is not None:
        lines.append(f"Undefended clean accuracy: {undefended.clean:.1%}.")
    rules = {"light": f"most robust within {CLEAN_TOLERANCE:.0%} of the undefended clean accuracy",
             "balanced": "highest mean of clean and mean robust accuracy",
             "strong": f"most robust with clean accuracy at least {STRONG_MIN_CLEAN:.0%}"}
    lines += ["", "Operating points (full method, no ablations):", ""]
    for name, rule in rules.items():
        if name in chosen:
            point = chosen[name]
            lines.append(f"- {name} ({rule}): **{point.label}** "
                         f"({', '.join(f'{k}={point.params[k]}' for k in varying)}), clean {point.clean:.1%}, "
                         f"mean robust {point.mean_robust:.1%}")
        else:
            lines.append(f"- {name} ({rule}): no point qualifies")
    front = {p.label for p in pareto_front(points)}
    header = ["defence", *varying, "clean", *attacks, "mean robust", "ms/img"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in sorted(points, key=lambda p: (-p.mean_robust if p.robust else 0, -p.clean)):
        settings = [str(p.params.get(k, "")) if p.defence == "ciid" else "" for k in varying]
        lines.append("| " + " | ".join([p.label + (" *" if p.label in front else ""), *settings,
                                         f"{p.clean:.1%}", *(f"{p.robust.get(a, float('nan')):.1%}" for a in attacks),
                                         f"{p.mean_robust:.1%}", f"{p.defence_ms:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def plot_pareto(points: list[Score], path: Path, chosen: dict[str, Score] | None = None) -> None:
    """Clean against mean robust accuracy: sweep points grey, the front as a line, other defences labelled."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    axis = figure.subplots()
    sweep = [p for p in points if p.defence == "ciid"]
    axis.scatter([100 * p.clean for p in sweep], [100 * p.mean_robust for p in sweep], s=18, color="0.6",
                 label="CIIDefence sweep points")
    front = pareto_front(points)
    axis.plot([100 * p.clean for p in front], [100 * p.mean_robust for p in front], "-", color="tab:blue",
              lw=1, label="Pareto front (all defences)")
    for p in points:
        if p.defence != "ciid":
            axis.scatter(100 * p.clean, 100 * p.mean_robust, marker="D", s=30)
            axis.annotate(p.label, (100 * p.clean, 100 * p.mean_robust), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
    names_by_point: dict[str, list[str]] = {}
    for name, point in (chosen or {}).items():  # two strengths may be one point
        names_by_point.setdefault(point.label, []).append(name)
    for number, names in enumerate(names_by_point.values()):
        point = (chosen or {})[names[0]]
        axis.scatter(100 * point.clean, 100 * point.mean_robust, marker="*", s=200, color="gold",
                     edgecolors="black", linewidths=0.8, zorder=3, label="operating points" if number == 0 else None)
        axis.annotate(" = ".join(names), (100 * point.clean, 100 * point.mean_robust), fontsize=8,
                      fontweight="bold", xytext=(6, -10), textcoords="offset points")
    undefended = next((p for p in points if p.defence == "none"), None)
    if undefended is not None:
        axis.axvline(100 * (undefended.clean - CLEAN_TOLERANCE), color="tab:red", ls=":", lw=1,
                     label=f"undefended clean - {100 * CLEAN_TOLERANCE:.0f} points")
    axis.set_xlabel("clean top-1 accuracy (%)")
    axis.set_ylabel("mean gray-box robust top-1 accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.savefig(path, dpi=130)


def write_sweep_report(run_dir: str | Path) -> dict[str, Path]:
    """sweep.md, sweep.json and pareto.png, rebuilt from the run's database."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    points = scores(cells(run.rows), run.rows)
    undefended = next((p for p in points if p.defence == "none"), None)
    chosen = operating_points(points, undefended.clean) if undefended else {}
    invalid = json.loads(run.invalid) if run.invalid else {}
    paths = {name: run_dir / name for name in ("sweep.md", "sweep.json", "pareto.png")}
    text = sweep_markdown(points, undefended, chosen)
    if invalid:
        text += "\n## Points not scored\n\n" + "".join(f"- `{label}`: {why}\n" for label, why in invalid.items())
    if not run.complete:
        text = (f"**Incomplete: {run.units_done} of {run.units_total} batches written**; "
                "`ciid sweep ... --resume` continues it.\n\n") + text
    paths["sweep.md"].write_text(text)
    paths["sweep.json"].write_text(json.dumps({
        "complete": run.complete,
        "points": [{**dataclasses.asdict(p), "mean_robust": p.mean_robust} for p in points],
        "invalid": invalid,
        "operating_points": {name: point.params for name, point in chosen.items()},
    }, indent=2))
    plot_pareto(points, paths["pareto.png"], chosen)
    return paths
