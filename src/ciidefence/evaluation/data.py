"""Labelled image folders: a labels.csv beside the images, or one folder per WordNet id."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class LabelledImage:
    """An image file, its class index, and its name in results (path within the data folder)."""

    path: Path
    label: int
    key: str


def dataset_digest(images: list[LabelledImage]) -> str:
    """A digest of what a data folder holds: each image's name, label and file size.

    Two folders with the same files and labels in different places have the
    same digest, so a run may resume on a copy of its data elsewhere.
    """
    listing = []
    for item in images:
        try:
            size = item.path.stat().st_size
        except OSError:
            size = -1  # an image that vanished; evaluating it records the error
        listing.append((item.key, item.label, size))
    text = json.dumps(sorted(listing), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _imagenet_wnids() -> dict[str, int]:
    from importlib import resources

    text = resources.files("ciidefence.data").joinpath("imagenet_classes.csv").read_text()
    return {row["wnid"]: int(row["class_index"]) for row in csv.DictReader(text.splitlines())}


def load_dataset(
    directory: str | os.PathLike, labels: str | os.PathLike | None = None, num_classes: int = 1000
) -> list[LabelledImage]:
    """The labelled images of a folder, sorted by file name.

    Two layouts are understood:

    - a CSV with columns ``file,class_index`` (``labels``, or ``labels.csv`` in
      the folder), naming images in the folder;
    - the ImageNet validation layout: one subfolder per WordNet id
      (``n01440764/...``), mapped to class indices by the ImageNet class list.

    Raises
    ------
    ConfigError
        If the folder holds no images, a labelled file is missing, an image has
        no label, or a class index is out of range.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such data folder")
    csv_path = Path(labels) if labels else directory / "labels.csv"
    if labels or csv_path.is_file():
        return _from_csv(directory, csv_path, num_classes)
    return _from_wnid_folders(directory)


def read_labels_csv(csv_path: str | os.PathLike, num_classes: int = 1000) -> dict[str, int]:
    """``{file: class_index}`` from a CSV with columns ``file,class_index`` (others ignored; a BOM is fine).

    Raises
    ------
    ConfigError
        If the file cannot be read, lacks either column, holds a class index
        that is not an integer in ``0..num_classes - 1``, or names one file
        twice with different classes.
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            if not {"file", "class_index"} <= set(columns):
                raise ConfigError(f"{csv_path}: not a labels CSV: needs the columns file and class_index, has "
                                  f"{', '.join(columns) or 'none'}")
            reader.fieldnames = columns
            rows = [(row["file"], row["class_index"], reader.line_num) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{csv_path}: cannot be read as a labels CSV ({error})") from None
    table: dict[str, int] = {}
    for name, text, line in rows:
        try:
            label = int((text or "").strip())
        except ValueError:
            raise ConfigError(f"{csv_path}, line {line}: class_index {text!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise ConfigError(f"{csv_path}, line {line}: class_index {label} is outside 0..{num_classes - 1}")
        if table.get(name, label) != label:
            raise ConfigError(f"{csv_path}, line {line}: {name} is labelled both {table[name]} and {label}")
        table[name] = label
    return table


def _from_csv(directory: Path, csv_path: Path, num_classes: int) -> list[LabelledImage]:
    table = read_labels_csv(csv_path, num_classes)
    images = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ConfigError(f"{directory}: holds no images")
    missing = sorted(set(table) - set(images))
    unlabelled = sorted(set(images) - set(table))
    for problem, names in (("labelled but not in the folder", missing), ("without a label", unlabelled)):
        if names:
            raise ConfigError(f"{csv_path}: {len(names)} images {problem} (e.g. {names[0]})")
    return [LabelledImage(directory / name, table[name], name) for name in images]


def _from_wnid_folders(directory: Path) -> list[LabelledImage]:
    wnids = _imagenet_wnids()
    folders = sorted(p for p in directory.iterdir() if p.is_dir())
    unknown = [f.name for f in folders if f.name not in wnids]
    if unknown:
        raise ConfigError(f"{directory}: folder {unknown[0]!r} is not an ImageNet WordNet id, "
                          "and there is no labels.csv")
    found = [
        LabelledImage(path, wnids[folder.name], f"{folder.name}/{path.name}")
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not found:
        raise ConfigError(f"{directory}: holds no images (expected labels.csv or one folder per WordNet id)")
    return found
