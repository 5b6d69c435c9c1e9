"""Progress bars for long work, on stderr so that stdout stays machine-readable."""

from __future__ import annotations

import sys
from typing import Protocol


class ProgressBar(Protocol):
    """What long jobs need of a bar (tqdm's interface)."""

    def update(self, n: int = 1) -> object: ...
    def set_postfix_str(self, text: str) -> object: ...
    def close(self) -> object: ...


def tqdm_bar(total: int, description: str, unit: str, initial: int = 0) -> ProgressBar:
    """A tqdm bar on stderr with ``total`` steps, starting at ``initial``."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "42 s", "12.5 min", "3.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
