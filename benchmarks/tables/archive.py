"""Keep a long run across sessions: pack a run folder into the repository, and unpack it to resume.

A run folder (``runs/NAME``) is ignored by git and is lost with the machine
that wrote it. ``pack`` writes its database as append-only JSON lines
(``ciidefence.evaluation.pack``) into a tracked folder: packing a run that
grew appends its new rows, so git stores each checkpoint by what it added.
``unpack`` rebuilds the run folder, which ``ciid evaluate ... --out
runs/NAME --resume`` then continues, and ``ciid report runs/NAME`` rebuilds
the summaries and figures. Give ``--final`` once, when the table is
finished, to write its summaries and figures beside the pack for readers::

    python benchmarks/tables/archive.py pack runs/NAME docs/runs/issue41/NAME
    python benchmarks/tables/archive.py pack --final runs/NAME docs/runs/issue41/NAME
    python benchmarks/tables/archive.py unpack docs/runs/issue41/NAME runs/NAME

Packs of the earlier format (``results.sqlite.xz``) still unpack.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ciidefence.errors import CIIDefenceError
from ciidefence.evaluation.pack import DEFAULT_MAX_BYTES, MANIFEST, pack_run, unpack_run


def pack(run_dir: Path, dest: Path, final: bool) -> None:
    outcome = pack_run(run_dir, dest)
    if final:
        from ciidefence.evaluation.certify_report import is_certification_run, write_certification_report
        from ciidefence.evaluation.summary import write_report

        with tempfile.TemporaryDirectory() as scratch:  # the report of exactly the rows packed
            unpacked = Path(scratch) / "run"
            unpack_run(dest, unpacked)
            write = write_certification_report if is_certification_run(unpacked) else write_report
            for path in write(unpacked).values():
                shutil.copy(path, dest / path.name)
    manifest = json.loads((dest / MANIFEST).read_text())
    rows = sum(entry["lines"] for name, entry in manifest["files"].items() if name.startswith("results."))
    changed = {name: what for name, what in outcome.items() if what != "unchanged"}
    print(f"packed {run_dir} into {dest} ({rows:,} result rows; "
          + (", ".join(f"{name} {what}" for name, what in changed.items()) or "nothing new") + ")")


def unpack(source: Path, run_dir: Path, max_bytes: int) -> None:
    unpack_run(source, run_dir, max_bytes)
    print(f"unpacked {source} into {run_dir}; continue it with ciid evaluate ... --out {run_dir} --resume, "
          f"or rebuild its summaries with ciid report {run_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="pack RUN_DIR into DEST (appending to the pack there)")
    packing.add_argument("run_dir", type=Path)
    packing.add_argument("dest", type=Path)
    packing.add_argument("--final", action="store_true",
                         help="the table is finished: also write its summaries and figures into DEST")
    unpacking = commands.add_parser("unpack", help="rebuild RUN_DIR (new or empty) from the pack SOURCE")
    unpacking.add_argument("source", type=Path)
    unpacking.add_argument("run_dir", type=Path)
    unpacking.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                           help="refuse a pack whose database or files exceed this many bytes [%(default)s]")
    args = parser.parse_args()
    try:
        if args.command == "pack":
            pack(args.run_dir, args.dest, args.final)
        else:
            unpack(args.source, args.run_dir, args.max_bytes)
    except CIIDefenceError as error:
        sys.exit(f"archive: error: {error}")


if __name__ == "__main__":
    main()
