"""An advisory lock on a run folder, so that two processes never write one database."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import ConfigError

LOCK_FILE = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Hold ``RUN_DIR/.lock`` (the holder's host and pid) while a process writes the run.

    A lock left by a process that no longer runs on this host is stale and
    taken over; a live holder's lock is refused with a :class:`ConfigError`
    naming it.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def acquire(self) -> RunLock:
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise ConfigError(
                        f"{self.path.parent} is in use by process {holder[1]} on {holder[0]}; wait for it to "
                        f"finish (or stop it) before running or resuming this run"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(me + "\n")
            self.held = True
            return self
        raise ConfigError(f"{self.path}: could not take the run's lock")

    def _holder(self) -> tuple[str, int] | None:
        """The live holder (host, pid), or None when the lock is stale or unreadable."""
        try:
            host, pid_text = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host != socket.gethostname():
            return host, pid  # another machine's process: cannot be checked, so respected
        return (host, pid) if _alive(pid) and pid != os.getpid() else None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
