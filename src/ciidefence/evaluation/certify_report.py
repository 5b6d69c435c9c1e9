"""The certification run's report: certified top-1 against radius, per noise level and front, with intervals.

Certified accuracy at radius ``r`` is the share of the images whose smoothed
prediction is their label with a certified radius of at least ``r``
(abstains count as wrong; images that could not be read are left out and
counted). Intervals are Wilson's 95%.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .certificates import CertificateRow, CheckRow
from .intervals import paired_difference, wilson_interval
from .store import NO_PREDICTION, ResultStore

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The radii of the table (L2, in [0, 1] pixel units at the classifier's view)."""
VIEW_DIMENSIONS = 3 * 224 * 224
SCALE_NOTE = ("An L2 radius r covers every L-inf perturbation of size up to r / sqrt(3 x 224 x 224) = r / 388 "
              "(r = 0.5 covers 0.33/255): a certificate and the 4/255 tables answer different threats.")


@dataclass(frozen=True)
class SettingSummary:
    """One setting's figures: ``certified[r]`` is ``(share, low, high)`` at each radius of :data:`RADII`."""

    setting: str
    sigma: float
    front: str
    front_hash: str
    n0: int
    n: int
    alpha: float
    images: int
    errors: int
    abstain: float
    seconds: float
    certified: dict[float, tuple[float, float, float]]
    radii: tuple[float, ...]
    correct: tuple[bool, ...]


def certified_right(row: CertificateRow, radius: float) -> bool:
    """Whether the smoothed prediction is the image's label, certified at ``radius`` or more."""
    return bool(row.correct) and row.radius >= radius


def summarise(rows: list[CertificateRow]) -> list[SettingSummary]:
    """One summary per setting, in the order the settings were first written."""
    by_setting: dict[str, list[CertificateRow]] = {}
    for row in rows:
        by_setting.setdefault(row.setting, []).append(row)
    found = []
    for setting, members in by_setting.items():
        scored = [r for r in members if r.error is None]
        count = len(scored)
        certified = {}
        for radius in RADII:
            right = sum(certified_right(r, radius) for r in scored)
            low, high = wilson_interval(right, count) if count else (0.0, 0.0)
            certified[radius] = (right / count if count else 0.0, low, high)
        first = members[0]
        found.append(SettingSummary(
            setting, first.sigma, first.front, first.front_hash, first.n0, first.n, first.alpha,
            count, len(members) - count, sum(r.prediction == NO_PREDICTION for r in scored) / count if count else 0.0,
            sum(r.seconds for r in scored) / count if count else 0.0, certified,
            tuple(r.radius for r in scored), tuple(bool(r.correct) for r in scored)))
    return found


def _percent(value: tuple[float, float, float]) -> str:
    share, low, high = value
    return f"{100 * share:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def _certified_at(rows: dict[str, CertificateRow], radius: float) -> dict[str, bool]:
    """Each image: whether it counts as certified right at ``radius`` (:func:`certified_right`)."""
    return {image: certified_right(row, radius) for image, row in rows.items()}


def comparison_lines(rows: list[CertificateRow]) -> list[str]:
    """Each front against the bare classifier (front ``none``) at the same σ, image by image: the difference of
    their certified top-1 at each radius with its paired 95% interval (every front sees the same noise draws)."""
    outcomes: dict[tuple[float, str], dict[str, CertificateRow]] = {}
    for row in rows:
        if row.error is None:
            outcomes.setdefault((row.sigma, row.front), {})[row.image] = row
    lines = []
    for (sigma, front), mine in outcomes.items():
        bare = outcomes.get((sigma, "none"))
        if front == "none" or not bare:
            continue
        cells, images = [], 0
        for radius in RADII:
            paired = paired_difference(_certified_at(mine, radius), _certified_at(bare, radius))
            images = paired.images
            cells.append(f"{100 * paired.difference:+.1f} ({100 * paired.low:+.1f} to {100 * paired.high:+.1f})"
                         + (" **" if paired.differs else ""))
        lines.append(f"| {sigma:g} | {front} | {images} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["## Each front against the bare classifier", "",
            "Certified top-1 of the front minus the bare classifier's, in points, on the images both certified "
            "(same noise draws), with the paired 95% interval (Newcombe); ** where it excludes 0.", "",
            "| σ | front | images | " + " | ".join(f"r = {r:g}" for r in RADII) + " |",
            "|---|---|---|" + "---|" * len(RADII), *lines, ""]


def check_lines(summaries: list[SettingSummary], checks: list[CheckRow]) -> list[str]:
    """The SmoothAdv check: per setting, the certified images attacked inside their radius and how many flipped."""
    if not checks:
        return []
    lines = ["## The certificates checked by attack", "",
             "SmoothAdv (Salman et al. 2019: L2 PGD on the Monte-Carlo soft smoothed classifier) attacked each "
             "certified image with a budget a hair under its certified radius; the smoothed classifier (PREDICT, "
             "fresh noise) was then asked about the adversarial image. A sound certificate is never flipped (save "
             "with probability α).", "",
             "| σ | front | certified images attacked | flipped inside their radius | mean budget | s/image |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        mine = [c for c in checks if c.setting == s.setting]
        if mine:
            lines.append(f"| {s.sigma:g} | {s.front} | {len(mine)} | **{sum(c.flipped for c in mine)}** | "
                         f"{sum(c.budget for c in mine) / len(mine):.3f} | "
                         f"{sum(c.seconds for c in mine) / len(mine):.1f} |")
    return [*lines, ""]


def markdown(summaries: list[SettingSummary], meta: dict[str, str | None], checks: list[CheckRow] | None = None,
             rows: list[CertificateRow] | None = None) -> str:
    stored = meta.get("config")
    config = json.loads(stored) if stored else {}
    lines = ["# Certification summary", ""]
    done, total = meta.get("units_done"), meta.get("units_total")
    if total and done != total:
        lines += [f"**Incomplete: {done} of {total} certificates written**; `ciid certify ... --resume` "
                  f"continues it.", ""]
    if config:
        lines += [f"Model `{config['model']}`, data `{config['data']}`"
                  + (f" (first {config['limit']} images)" if config.get("limit") else "")
                  + f", seed {config['seed']}; CERTIFY with N0 = {config['n0']}, N = {config['n']}, "
                  f"α = {config['alpha']} (Cohen et al. 2019): noise at the classifier's 224 px view, in [0, 1] "
                  f"pixel units.", ""]
    if not summaries:
        return "\n".join([*lines, "No certificate written yet.", ""])
    lines += ["Certified top-1 (95% interval) at L2 radius r: the share of images whose smoothed prediction is "
              "their label, certified at radius r or more; abstains count as wrong.", ""]
    lines += ["| σ | front | images | " + " | ".join(f"r = {r:g}" for r in RADII) + " | abstain | s/image |",
              "|---|---|---|" + "---|" * len(RADII) + "---|---|"]
    for s in summaries:
        lines.append(f"| {s.sigma:g} | {s.front} | {s.images}" + (f" ({s.errors} unreadable)" if s.errors else "")
                     + " | " + " | ".join(_percent(s.certified[r]) for r in RADII)
                     + f" | {100 * s.abstain:.1f}% | {s.seconds:.1f} |")
    return "\n".join([*lines, "", SCALE_NOTE, "", *comparison_lines(rows or []),
                      *check_lines(summaries, checks or [])])


def is_certification_run(run_dir: str | Path) -> bool:
    """Whether ``ciid certify`` wrote the run folder (its report is :func:`write_certification_report`)."""
    with ResultStore(Path(run_dir) / "results.sqlite") as store:
        return store.get_meta("kind") == "certify"


def write_certification_report(run_dir: str | Path) -> dict[str, Path]:
    """Write certify.md, certify.csv, certify.json and certified_accuracy.png into ``run_dir``."""
    run_dir = Path(run_dir)
    with ResultStore(run_dir / "results.sqlite") as store:
        rows = store.certificate_rows()
        checks = store.check_rows()
        meta = {key: store.get_meta(key) for key in ("config", "units_total")}
        meta["units_done"] = str(store.units_done())
    summaries = summarise(rows)
    paths = {name: run_dir / name for name in ("certify.md", "certify.csv", "certify.json",
                                               "certified_accuracy.png")}
    paths["certify.md"].write_text(markdown(summaries, meta, checks, rows))
    with open(paths["certify.csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sigma", "front", "front_hash", "n0", "n", "alpha", "images", "errors", "radius",
                         "certified", "low", "high", "abstain", "seconds_per_image"])
        for s in summaries:
            for radius in RADII:
                writer.writerow([s.sigma, s.front, s.front_hash, s.n0, s.n, s.alpha, s.images, s.errors, radius,
                                 *s.certified[radius], s.abstain, s.seconds])
    document = [{key: value for key, value in asdict(s).items() if key not in ("radii", "correct")}
                | {"certified": {str(r): list(v) for r, v in s.certified.items()},
                   "checked": sum(c.setting == s.setting for c in checks),
                   "flipped": sum(c.flipped for c in checks if c.setting == s.setting)} for s in summaries]
    paths["certify.json"].write_text(json.dumps(document, indent=2) + "\n")
    plot_certified_accuracy(summaries, paths["certified_accuracy.png"])
    return paths


def plot_certified_accuracy(summaries: list[SettingSummary], path: Path) -> None:
    """Certified top-1 against radius, one curve per (σ, front), with its 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    largest = max((max(s.radii, default=0.0) for s in summaries), default=1.0)
    grid = np.linspace(0, max(largest, 1.0) * 1.05, 200)
    fronts = list(dict.fromkeys(s.front for s in summaries))
    sigmas = sorted({s.sigma for s in summaries})
    colours = plt.get_cmap("tab10")
    for s in summaries:
        if not s.images:
            continue
        right = [sum(c and r >= x for r, c in zip(s.radii, s.correct, strict=True)) for x in grid]
        share = np.array(right) / s.images
        bands = np.array([wilson_interval(k, s.images) for k in right])
        colour = colours(fronts.index(s.front) % 10)
        style = ("-", "--", ":", "-.")[sigmas.index(s.sigma) % 4]
        axis.step(grid, 100 * share, where="post", color=colour, linestyle=style, linewidth=1.6,
                  label=f"σ = {s.sigma:g}, {s.front} (n = {s.images})")
        axis.fill_between(grid, 100 * bands[:, 0], 100 * bands[:, 1], step="post", alpha=0.08, color=colour,
                          linewidth=0)
    axis.set_xlabel("L2 radius (pixels in [0, 1], at the 224 px view)")
    axis.set_ylabel("certified top-1 (%)")
    axis.set_ylim(0, 100)
    axis.set_xlim(0, grid[-1])
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title("Certified accuracy of the smoothed classifier (95% Wilson bands)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
