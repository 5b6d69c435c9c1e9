"""The gray-box table locally and on Ray on this machine: wall times (start-up included) and the same answers.

Runs `ciid evaluate` twice on the same images (FGSM, I-FGSM and PGD at 2/255
and 4/255; none, ciid, jpeg, pixel-deflection): once in one process with all
the CPUs' threads, once with `--ray` (one worker per CPU, one thread each).
Prints both wall times, their ratio (issue target: Ray at most 1.15x) and
whether every prediction agrees (the perturbation norms may differ in their
last digits: oneDNN's sums depend on the thread count).

    python benchmarks/bench_ray.py --data ../shared/data/imagenet-sample --limit 100 [--local-threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = ["--attacks", "fgsm,bim,pgd", "--eps", "2/255,4/255", "--defences", "none,ciid,jpeg,pixel-deflection",
        "--no-sanity"]


def run(data: str, limit: int, out: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ciidefence.cli.main", "evaluate", "--data", data, "--limit", str(limit),
                    "--out", str(out), *PLAN, *extra], check=True, capture_output=True)
    return time.perf_counter() - started


def rows(out: Path) -> tuple[list[tuple], list[float]]:
    with sqlite3.connect(out / "results.sqlite") as connection:
        found = connection.execute(
            "SELECT image, defence_hash, experiment, pred_clean, pred_clean_defended, pred_adv, pred_defended_adv, l2 "
            "FROM results ORDER BY image, defence_hash, experiment").fetchall()
    return [row[:-1] for row in found], [row[-1] for row in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--local-threads", type=int, default=None,
                        help="torch threads of the local run [default: all]; 1 matches the Ray workers' numerics")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    threads = ["--threads", str(args.local_threads)] if args.local_threads else []
    try:
        local = run(args.data, args.limit, folder / "local", threads)
        distributed = run(args.data, args.limit, folder / "ray", ["--ray"])
        local_rows, local_l2 = rows(folder / "local")
        ray_rows, ray_l2 = rows(folder / "ray")
    finally:
        shutil.rmtree(folder)
    print(f"{args.limit} images, {len(local_rows)} rows")
    print(f"local: {local:.1f} s; ray: {distributed:.1f} s (start-up included); ratio {distributed / local:.2f}")
    differing = sum(a != b for a, b in zip(local_rows, ray_rows, strict=True))
    print(f"local threads: {args.local_threads or 'all'}; rows whose predictions differ: {differing}")
    print(f"every prediction the same: {local_rows == ray_rows}; largest L2 difference "
          f"{max(abs(a - b) for a, b in zip(local_l2, ray_l2, strict=True)):.2e}")


if __name__ == "__main__":
    main()
