"""Keep a long run across sessions: pack a run folder into the repository, and unpack it to resume.

A run folder (``runs/NAME``) is ignored by git and is lost with the machine
that wrote it. ``pack`` copies a consistent snapshot of its database (SQLite's
online backup, safe while the run is still writing) compressed with xz, with
its ``config.json`` and the summaries ``ciid report`` rebuilds, into a
tracked folder; ``unpack`` restores a run folder from it, which
``ciid evaluate ... --out runs/NAME --resume`` then continues::

    python benchmarks/tables/archive.py pack runs/NAME docs/runs/issue14/NAME
    python benchmarks/tables/archive.py unpack docs/runs/issue14/NAME runs/NAME
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from ciidefence.evaluation.summary import write_report

DATABASE = "results.sqlite"
PACKED = DATABASE + ".xz"


def pack(run_dir: Path, dest: Path) -> None:
    if not (run_dir / DATABASE).is_file():
        sys.exit(f"error: {run_dir} holds no {DATABASE}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / DATABASE
        source = sqlite3.connect(f"file:{run_dir / DATABASE}?mode=ro", uri=True)
        target = sqlite3.connect(snapshot)
        with source, target:
            source.backup(target)
        source.close()
        target.close()
        with open(snapshot, "rb") as raw, lzma.open(dest / PACKED, "wb", preset=9) as packed:
            shutil.copyfileobj(raw, packed)
        # the summaries are rebuilt from the snapshot, so they describe exactly the rows packed
        shutil.copy(run_dir / "config.json", scratch)
        shutil.copy(run_dir / "config.json", dest)
        for path in write_report(scratch).values():
            shutil.copy(path, dest / path.name)
    print(f"packed {run_dir} into {dest} ({(dest / PACKED).stat().st_size / 1e6:.1f} MB)")


def unpack(source: Path, run_dir: Path) -> None:
    if not (source / PACKED).is_file():
        sys.exit(f"error: {source} holds no {PACKED}")
    if (run_dir / DATABASE).exists():
        sys.exit(f"error: {run_dir / DATABASE} exists; unpacking would overwrite a run")
    run_dir.mkdir(parents=True, exist_ok=True)
    with lzma.open(source / PACKED, "rb") as packed, open(run_dir / DATABASE, "wb") as raw:
        shutil.copyfileobj(packed, raw)
    shutil.copy(source / "config.json", run_dir / "config.json")
    print(f"unpacked {source} into {run_dir}; continue it with ciid evaluate ... --out {run_dir} --resume")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, first, second in (("pack", "run_dir", "dest"), ("unpack", "source", "run_dir")):
        command = commands.add_parser(name)
        command.add_argument(first, type=Path)
        command.add_argument(second, type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.run_dir, args.dest)
    else:
        unpack(args.source, args.run_dir)


if __name__ == "__main__":
    main()
