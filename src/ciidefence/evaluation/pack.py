"""Run packs: a run folder's database as append-only text, so that git stores each new pack by its new rows.

A pack is a folder of JSON-lines files, one line per database row in insertion order:

- ``results.00000.jsonl``, ``results.00001.jsonl``, ...: each result's own fields (:data:`RESULT_FIELDS`),
  :data:`SEGMENT_ROWS` rows a file;
- ``experiments.jsonl`` and ``defences.jsonl``: each experiment's and defence's identity once, keyed by its
  digest (every result row repeats them in the database);
- ``units.jsonl`` and ``meta.jsonl``: those tables as they are;
- ``pack.json``: the format, each file's columns, line count and SHA-256, written last.

Packing a run that grew appends the new lines: finished segments never change (git stores each once,
whatever its delta heuristics do), and the last one grows by a tail; a run whose rows changed
(``--retry-errors`` replaced some) is rewritten from the first segment that differs. :func:`unpack_run`
rebuilds the database row for row, in a fresh folder renamed into place, reading only regular files, never
through links, up to a size cap, and only into the tables the project creates. Packs of the earlier format
(``results.sqlite.xz``, a compressed database snapshot) still unpack: their database is inflated under the
same cap and checked to hold only the project's tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import os
import secrets
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import CIIDefenceError
from ..files import write_atomically
from .store import COLUMNS, SCHEMA, ResultRow, ResultStore

FORMAT = "ciidefence-run-pack"
VERSION = 2
MANIFEST = "pack.json"
DATABASE = "results.sqlite"
LEGACY_PACK = DATABASE + ".xz"
CONFIG_FILE = "config.json"
DEFAULT_MAX_BYTES = 1 << 30
"""The most an unpacked database or pack file may hold (1 GiB; the largest run so far is 55 MB)."""

EXPERIMENT_FIELDS = ("experiment", "purpose", "attack", "attack_params", "eps", "eps_label", "threat",
                     "approximation", "target", "budget", "eot", "source")
"""A result row's experiment identity, keyed by its digest (the first field)."""
DEFENCE_FIELDS = ("defence_hash", "defence", "defence_config")
"""A result row's defence identity, keyed by its digest (the first field)."""
RESULT_FIELDS = tuple(c for c in COLUMNS if c in ("experiment", "defence_hash")
                      or (c not in EXPERIMENT_FIELDS and c not in DEFENCE_FIELDS))
"""What the result segments hold of each row: the image's own outcome and the two digests."""
DRAW_FIELDS = {field.name: field.default for field in dataclasses.fields(ResultRow)
               if field.name in ("draws", "draws_correct", "vote")}
"""Result fields added after the first packs, with the values that describe rows written before them."""
OLDER_RESULT_FIELDS = tuple(c for c in RESULT_FIELDS if c not in DRAW_FIELDS)
"""The result segments' columns in packs written before :data:`DRAW_FIELDS`; they unpack with those defaults."""
SEGMENT_ROWS = 10_000
"""Result rows per segment file (about 2 MB of text, 150 KB stored by git)."""
PLAIN_TABLES = ("units", "meta", "certificates", "certificate_checks")
"""Tables packed column for column."""


class PackError(CIIDefenceError):
    """A pack that cannot be written or read: a link, a torn or foreign file, a size over the cap."""


def pack_run(run_dir: str | os.PathLike, dest: str | os.PathLike) -> dict[str, str]:
    """Pack ``run_dir``'s database into the folder ``dest``, appending to the pack already there.

    The database is read from a consistent snapshot (SQLite's online backup),
    so a run may go on writing meanwhile.

    Returns
    -------
    dict
        What happened to each file: ``"written"``, ``"appended"``, ``"rewritten"`` or ``"unchanged"``.

    Raises
    ------
    PackError
        If ``run_dir`` holds no database, ``dest`` or a file in it is a link, or two rows give one digest two
        identities.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / DATABASE).is_file():
        raise PackError(f"{run_dir} holds no {DATABASE}")
    _refuse_link(dest)
    if dest.exists() and not dest.is_dir():
        raise PackError(f"{dest} exists and is not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch) / DATABASE
        source = sqlite3.connect(f"file:{run_dir / DATABASE}?mode=ro", uri=True)
        target = sqlite3.connect(snapshot)
        with source, target:
            source.backup(target)
        source.close()
        target.close()
        with ResultStore(snapshot) as store:  # brings a database of an older release to today's columns
            files = encode(store.connection)
    entries: dict[str, dict] = {}
    outcome = {}
    for name, (columns, lines) in files.items():
        outcome[name], digest = _write_lines(dest / name, lines)
        entries[name] = {"columns": list(columns), "lines": len(lines), "sha256": digest}
    manifest = {"format": FORMAT, "version": VERSION, "files": entries}
    _write_atomically(dest / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for stale in sorted(dest.glob("results.*.jsonl")):  # segments of a run that has fewer rows now
        if stale.name not in files and not stale.is_symlink() and stale.is_file():
            stale.unlink()
            outcome[stale.name] = "removed"
    return outcome


def encode(connection: sqlite3.Connection) -> dict[str, tuple[tuple[str, ...], list[str]]]:
    """Every table of a results database as JSON lines: ``{file name: (columns, lines)}``, rows in insertion order."""
    experiments: dict[str, list] = {}
    defences: dict[str, list] = {}
    results = []
    for values in connection.execute(f"SELECT {', '.join(COLUMNS)} FROM results ORDER BY rowid"):
        row = dict(zip(COLUMNS, values, strict=True))
        for identities, fields in ((experiments, EXPERIMENT_FIELDS), (defences, DEFENCE_FIELDS)):
            identity = [row[field] for field in fields]
            if identities.setdefault(identity[0], identity) != identity:
                raise PackError(f"digest {identity[0]} names two different identities ({identities[identity[0]]} "
                                f"and {identity}); this database cannot be packed by digest")
        results.append(_line([row[field] for field in RESULT_FIELDS]))
    files = {segment_name(index): (RESULT_FIELDS, results[start : start + SEGMENT_ROWS])
             for index, start in enumerate(range(0, max(len(results), 1), SEGMENT_ROWS))}
    files |= {
        "experiments.jsonl": (EXPERIMENT_FIELDS, [_line(v) for v in experiments.values()]),
        "defences.jsonl": (DEFENCE_FIELDS, [_line(v) for v in defences.values()]),
    }
    for table in PLAIN_TABLES:
        columns = tuple(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))
        rows = connection.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")
        files[f"{table}.jsonl"] = (columns, [_line(list(values)) for values in rows])
    return files


def segment_name(index: int) -> str:
    return f"results.{index:05d}.jsonl"


def unpack_run(source: str | os.PathLike, run_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Rebuild a run folder (its ``results.sqlite`` and ``config.json``) from the pack ``source``.

    The folder is built under a temporary name beside ``run_dir`` and renamed
    into place only when complete, so a bad pack leaves nothing behind.
    ``config.json`` is written from the configuration the database stores,
    never copied from the pack.

    Raises
    ------
    PackError
        If ``run_dir`` exists (other than as an empty folder) or is a link; the pack is a link, holds links,
        is torn or altered (a file whose line count or SHA-256 differs from ``pack.json``), exceeds
        ``max_bytes``, or holds tables, columns, triggers or views the project does not create.
    """
    source, run_dir = Path(source), Path(run_dir)
    _refuse_link(source)
    _refuse_link(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise PackError(f"{run_dir} exists and is not empty; unpacking would overwrite a run")
    if not source.is_dir():
        raise PackError(f"{source}: no such pack folder")
    if (source / MANIFEST).exists() or (source / MANIFEST).is_symlink():
        build = _build_from_text
    elif (source / LEGACY_PACK).exists() or (source / LEGACY_PACK).is_symlink():
        build = _build_from_snapshot
    else:
        raise PackError(f"{source} holds no {MANIFEST} (nor the earlier format's {LEGACY_PACK})")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = run_dir.parent / f".{run_dir.name}.unpacking-{secrets.token_hex(6)}"
    scratch.mkdir()  # not mkdtemp: the run folder gets the umask's mode, as any folder the user makes
    try:
        build(source, scratch / DATABASE, max_bytes)
        with ResultStore(scratch / DATABASE) as store:
            config = store.get_meta("config")
        if config is not None:
            (scratch / CONFIG_FILE).write_text(config + "\n")
        if run_dir.exists():
            run_dir.rmdir()  # empty, checked above
        os.rename(scratch, run_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def _build_from_text(source: Path, database: Path, max_bytes: int) -> None:
    manifest = _read_json(source / MANIFEST, max_bytes)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PackError(f"{source / MANIFEST}: not a {FORMAT} manifest of version {VERSION}")
    entries = manifest.get("files")
    if not isinstance(entries, dict):
        raise PackError(f"{source / MANIFEST}: lists no files")
    segments = [segment_name(index) for index in range(len(entries) - 2 - len(PLAIN_TABLES))]
    expected = {"experiments.jsonl": EXPERIMENT_FIELDS, "defences.jsonl": DEFENCE_FIELDS,
                **dict.fromkeys(segments, RESULT_FIELDS)}
    if not segments or set(entries) != {*expected, *(f"{t}.jsonl" for t in PLAIN_TABLES)}:
        raise PackError(f"{source / MANIFEST}: lists other files than a run pack's")
    budget = max_bytes
    tables: dict[str, tuple[list[str], list[list]]] = {}
    for name, entry in entries.items():
        data = _read_regular(source / name, budget)
        budget -= len(data)
        if not isinstance(entry, dict) or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise PackError(f"{source / name}: its SHA-256 differs from {MANIFEST}'s (a torn or altered pack)")
        try:
            rows = [json.loads(line) for line in data.decode().splitlines()]
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PackError(f"{source / name}: not JSON lines ({error})") from None
        columns = entry.get("columns")
        if len(rows) != entry.get("lines") or not isinstance(columns, list) or any(
                not isinstance(row, list) or len(row) != len(columns) for row in rows):
            raise PackError(f"{source / name}: its rows do not match {MANIFEST}'s columns and line count")
        if name in expected and tuple(columns) != expected[name] and not (
                expected[name] == RESULT_FIELDS and tuple(columns) == OLDER_RESULT_FIELDS):
            raise PackError(f"{source / name}: columns {columns}, expected {list(expected[name])}")
        tables[name] = (columns, rows)
    experiments = {row[0]: row for row in tables["experiments.jsonl"][1]}
    defences = {row[0]: row for row in tables["defences.jsonl"][1]}
    results = []
    for row, columns in ((row, tables[name][0]) for name in segments for row in tables[name][1]):
        own = DRAW_FIELDS | dict(zip(columns, row, strict=True))
        try:
            own.update(zip(EXPERIMENT_FIELDS, experiments[own["experiment"]], strict=True))
            own.update(zip(DEFENCE_FIELDS, defences[own["defence_hash"]], strict=True))
        except (KeyError, TypeError):
            raise PackError(f"{source}: a result names an experiment or defence the pack does not hold") from None
        results.append([own[column] for column in COLUMNS])
    connection = sqlite3.connect(database)
    try:
        connection.executescript(SCHEMA)
        with connection:
            _insert(connection, "results", COLUMNS, results)
            for table in PLAIN_TABLES:
                _insert(connection, table, *tables[f"{table}.jsonl"])
    except sqlite3.Error as error:
        raise PackError(f"{source}: its rows do not fit the results database ({error})") from None
    finally:
        connection.close()


def _insert(connection: sqlite3.Connection, table: str, columns: Iterable[str], rows: list) -> None:
    columns = list(columns)
    known = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    if not set(columns) <= known:
        raise PackError(f"table {table} has no column {sorted(set(columns) - known)[0]!r}")
    placeholders = ", ".join("?" for _ in columns)
    connection.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)


def _build_from_snapshot(source: Path, database: Path, max_bytes: int) -> None:
    """Inflate an earlier-format pack under the cap, then check it holds only what the project creates."""
    descriptor = _open_regular(source / LEGACY_PACK)
    written = 0
    try:
        with os.fdopen(descriptor, "rb") as raw, lzma.open(raw, "rb") as packed, open(database, "wb") as out:
            while chunk := packed.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise PackError(f"{source / LEGACY_PACK}: inflates past {max_bytes:,} bytes (the cap; "
                                    f"raise it with --max-bytes if the pack is yours)")
                out.write(chunk)
    except (lzma.LZMAError, EOFError) as error:
        raise PackError(f"{source / LEGACY_PACK}: not a complete xz file ({error})") from None
    check_database(database)


def check_database(database: Path) -> None:
    """Refuse a database holding anything the project does not create: other tables or columns, triggers,
    views, or indexes beyond the unique keys; or one that is damaged."""
    expected = sqlite3.connect(":memory:")
    expected.executescript(SCHEMA)
    allowed = {table: {row[1] for row in expected.execute(f"PRAGMA table_info({table})")}
               for (table,) in expected.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    expected.close()
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise PackError(f"{database}: the database is damaged")
            for kind, name, table in connection.execute("SELECT type, name, tbl_name FROM sqlite_master"):
                if kind == "index" and name.startswith("sqlite_autoindex_") and table in allowed:
                    continue
                if kind != "table" or name not in allowed:
                    raise PackError(f"{database}: holds a {kind} {name!r}, which a run database never has")
                columns = {row[1] for row in connection.execute(f"PRAGMA table_info({name})")}
                # a database of an older release may lack columns added since (ResultStore adds them)
                if extra := columns - allowed[name]:
                    raise PackError(f"{database}: table {name} has a column {sorted(extra)[0]!r} it never has")
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise PackError(f"{database}: not a results database ({error})") from None


def _line(values: list) -> str:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _write_lines(path: Path, lines: list[str]) -> tuple[str, str]:
    """Write ``lines`` to ``path``, appending when the file holds their beginning; return (what happened, SHA-256)."""
    content = "".join(line + "\n" for line in lines).encode()
    digest = hashlib.sha256(content).hexdigest()
    _refuse_link(path)
    if not path.exists():
        _write_atomically(path, content)
        return "written", digest
    old = _read_regular(path, len(content)) if path.stat().st_size <= len(content) else None
    if old == content:
        return "unchanged", digest
    if old is not None and content.startswith(old):
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "ab") as handle:
            handle.write(content[len(old):])
        return "appended", digest
    _write_atomically(path, content)
    return "rewritten", digest


def _write_atomically(path: Path, content: bytes) -> None:
    _refuse_link(path)
    write_atomically(path, lambda handle: handle.write(content))


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise PackError(f"{path} is a symbolic link; packs are never read or written through links")


def _open_regular(path: Path) -> int:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        reason = "a symbolic link" if path.is_symlink() else (error.strerror or str(error))
        raise PackError(f"{path}: cannot be read ({reason})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise PackError(f"{path}: not a regular file")
    return descriptor


def _read_regular(path: Path, max_bytes: int) -> bytes:
    with os.fdopen(_open_regular(path), "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PackError(f"{path}: larger than {max_bytes:,} bytes (the cap)")
    return data


def _read_json(path: Path, max_bytes: int) -> object:
    try:
        return json.loads(_read_regular(path, max_bytes))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{path}: not JSON ({error})") from None
