"""What a run adds to the packed repository when it is packed at every checkpoint (issue 40's target).

Replays a finished run: its rows, in the order the run wrote them, are cut
into ``--checkpoints`` growing prefixes; each prefix is packed
(``archive.py pack``, appending to the pack) and committed to a fresh git
repository, as a long table is packed every 30 to 40 minutes. Prints the
repository's packed size after ``git gc`` (``git count-objects -vH``), that
of one commit of the final pack alone, and the old format's
``results.sqlite.xz`` for comparison::

    python benchmarks/tables/archive.py unpack docs/runs/issue14/gray14-bounded-efficientnet_lite0 runs/g
    python benchmarks/pack_growth.py runs/g --checkpoints 24
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from ciidefence.evaluation.pack import DATABASE, pack_run


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def packed_kib(repo: Path) -> int:
    git(repo, "gc", "-q", "--prune=now")
    counts = dict(line.split(": ") for line in git(repo, "count-objects", "-v").splitlines())
    return int(counts["size-pack"])


def prefix_run(database: Path, fraction: float, out: Path) -> None:
    """A copy of the run as it stood when ``fraction`` of its rows (and units) were written."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(database, out / DATABASE)
    with sqlite3.connect(out / DATABASE) as connection:
        for table in ("results", "units"):
            (count,) = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            keep = round(count * fraction)
            connection.execute(f"DELETE FROM {table} WHERE rowid NOT IN "
                               f"(SELECT rowid FROM {table} ORDER BY rowid LIMIT {keep})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder (holding results.sqlite)")
    parser.add_argument("--checkpoints", type=int, default=24, help="packs committed before the final one")
    args = parser.parse_args()
    database = args.run_dir / DATABASE
    if not database.is_file():
        sys.exit(f"pack_growth: error: {database}: no such database (unpack a finished run first)")
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        repo.mkdir()
        git(repo, "init", "-q")
        git(repo, "config", "user.email", "bench@example.invalid")
        git(repo, "config", "user.name", "bench")
        git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
        empty = packed_kib(repo)
        for step in range(1, args.checkpoints + 2):
            fraction = min(1.0, step / (args.checkpoints + 1))
            stage = Path(scratch) / f"stage{step}"
            prefix_run(database, fraction, stage)
            pack_run(stage, repo / "pack")
            shutil.rmtree(stage)
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"checkpoint {step}")
        with_checkpoints = packed_kib(repo) - empty
        once = Path(scratch) / "once"
        once.mkdir()
        git(once, "init", "-q")
        pack_run(args.run_dir, once / "pack")
        git(once, "add", "-A")
        git(once, "-c", "user.email=b@example.invalid", "-c", "user.name=b", "commit", "-q", "-m", "final")
        final_only = packed_kib(once)
        xz = len(lzma.compress(database.read_bytes(), preset=9))
    rows = sqlite3.connect(database).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    print(f"{args.run_dir}: {rows:,} result rows")
    print(f"  packed {args.checkpoints} times during the run and once at the end: the repository grows by "
          f"{with_checkpoints / 1024:.2f} MiB (git count-objects size-pack after gc)")
    print(f"  the final pack committed once: {final_only / 1024:.2f} MiB")
    print(f"  the earlier format's results.sqlite.xz, one version: {xz / 2**20:.2f} MiB "
          f"(each checkpoint stored whole again)")


if __name__ == "__main__":
    main()
