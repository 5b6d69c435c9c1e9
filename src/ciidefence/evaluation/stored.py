"""What every run folder's configuration shares: stored as JSON, matched on resume wherever its data lies."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Self

LOCATION_FIELDS = ("data", "labels")
"""Where a run's data lies: stored as given, not part of what the run is (``data_digest`` is)."""


class StoredConfig:
    """A mixin for the frozen dataclass that determines a run's results (fields ``data``, ``labels`` and
    ``data_digest`` included): its JSON, and whether a stored one describes the same run."""

    data: str
    labels: str | None
    data_digest: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)  # type: ignore[call-overload]

    def located(self) -> Self:
        """This configuration with the data's paths made absolute (for processes that start elsewhere)."""
        return dataclasses.replace(self, data=str(Path(self.data).resolve()),  # type: ignore[type-var]
                                   labels=str(Path(self.labels).resolve()) if self.labels else None)

    def with_data_digest(self) -> Self:
        """This configuration with ``data_digest`` computed from the data folder (reads its listing)."""
        from .data import dataset_digest, load_dataset

        return dataclasses.replace(self, data_digest=dataset_digest(  # type: ignore[type-var]
            load_dataset(self.data, self.labels)))

    def matches(self, stored: str) -> bool:
        """Whether ``stored`` (a run folder's configuration) describes this run's options.

        The data is not compared here (neither its paths nor ``data_digest``):
        :func:`~ciidefence.evaluation.run_folder.open_run` checks it, with its own
        message. Options added in later releases are absent from older run
        folders; they match when this run leaves them at their defaults.
        """
        current, previous = json.loads(self.to_json()), json.loads(stored)
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}  # type: ignore[arg-type]
        for key, value in current.items():
            if key not in previous and key in defaults and json.loads(json.dumps(defaults[key])) == value:
                previous[key] = value
        for key in (*LOCATION_FIELDS, "data_digest"):
            current.pop(key, None)
            previous.pop(key, None)
        return previous == current
