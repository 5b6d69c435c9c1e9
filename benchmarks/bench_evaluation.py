"""Wall time of the issue-4 table: 100 images, gray-box and BPDA, and where the time goes.

Runs (unless --from names an existing run folder):

    ciid evaluate --data ../shared/data/imagenet-sample --limit 100 \\
        --attacks fgsm,bim,pgd,deepfool,cw --threat graybox,bpda --bpda-attacks pgd --out RUN_DIR

then prints the total wall time and the seconds spent on each experiment (from
the per-image times in results.sqlite). Target: under 30 minutes on the
project's 2-core machine.

    python benchmarks/bench_evaluation.py [--limit 100] [--out runs/bench-eval] [--from RUN_DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from common import add_data_option, checked_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--out", default="runs/bench-eval")
    parser.add_argument("--from", dest="existing", default=None, help="report on an existing run folder")
    args = parser.parse_args()
    run_dir = Path(args.existing or args.out)
    if args.existing is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data", str(checked_data(args.data)),
                   "--limit", str(args.limit), "--attacks", "fgsm,bim,pgd,deepfool,cw",
                   "--threat", "graybox,bpda", "--bpda-attacks", "pgd", "--out", str(run_dir)]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        print(f"wall time: {(time.perf_counter() - started) / 60:.1f} min for {args.limit} images")
    with sqlite3.connect(run_dir / "results.sqlite") as connection:
        # rows of one batch share its per-image time across defences: count each image once
        rows = connection.execute(
            "SELECT attack, eps_label, threat, SUM(seconds), COUNT(*) FROM ("
            "  SELECT attack, attack_params, eps_label, threat, image, MAX(seconds) AS seconds FROM results"
            "  GROUP BY attack, attack_params, eps_label, threat, image"
            ") GROUP BY attack, attack_params, eps_label, threat ORDER BY SUM(seconds) DESC"
        ).fetchall()
    total = sum(row[3] for row in rows)
    print(f"time recorded per experiment (attack + scoring every defence), total {total / 60:.1f} min:")
    for attack, eps, threat, seconds, images in rows:
        print(f"  {attack:9s} {eps:7s} {threat:20s} {seconds / 60:6.2f} min  {seconds / images:6.2f} s/img")


if __name__ == "__main__":
    main()
