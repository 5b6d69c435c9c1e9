"""The typed rows a certification run stores: one certificate per (image, setting), one check per attacked one.

The store writes and reads these and nothing looser, so the report and the
SmoothAdv check read the same fields the run wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class CertificateRow:
    """One image's certificate under one setting (``prediction`` -1: abstain; ``error``: why there is none)."""

    image: str
    label: int
    model: str
    setting: str
    sigma: float
    front: str
    front_config: str
    front_hash: str
    n0: int
    n: int
    alpha: float
    top_class: int
    count: int
    p_lower: float
    radius: float
    prediction: int
    correct: int
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class CheckRow:
    """SmoothAdv's attack on one certified image, inside its radius, and whether the smoothed answer flipped."""

    image: str
    model: str
    setting: str
    certified: int
    radius: float
    budget: float
    l2: float
    steps: int
    samples: int
    prediction: int
    flipped: int
    seconds: float


def column_names(row_type: type) -> list[str]:
    """The table columns of a row type, in its fields' order."""
    return [field.name for field in fields(row_type)]
