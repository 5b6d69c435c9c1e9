"""An exclusive lock on a run folder, so that two processes never write one database.

The lock is ``fcntl.flock`` on ``RUN_DIR/.lock``: the kernel takes it
atomically and drops it when its holder dies, so a dead process's lock is
never "taken over" by two successors at once. The file is opened without
following links and must be a regular file (a FIFO or a device planted there
is refused, never read). It holds the holder's host and pid, to name it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

from ..errors import ConfigError

LOCK_FILE = ".lock"
_HOLDER_BYTES = 256


class RunLock:
    """Hold ``RUN_DIR/.lock`` while a process writes the run; a live holder's lock is refused with a
    :class:`ConfigError` naming it."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> RunLock:
        for _ in range(100):
            descriptor = self._open()
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, _HOLDER_BYTES, 0).decode(errors="replace").split()
                os.close(descriptor)
                named = f"process {holder[1]} on {holder[0]}" if len(holder) == 2 else "another process"
                raise ConfigError(f"{self.path.parent} is in use by {named}; wait for it to finish (or stop it) "
                                  f"before running or resuming this run") from None
            if self._still_named(descriptor):
                os.ftruncate(descriptor, 0)
                os.pwrite(descriptor, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
                self._descriptor = descriptor
                return self
            os.close(descriptor)  # its holder released and removed it between our open and our lock: again
        raise ConfigError(f"{self.path}: could not take the run's lock")

    def _open(self) -> int:
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            reason = "a symbolic link" if self.path.is_symlink() else (error.strerror or str(error))
            raise ConfigError(f"{self.path}: cannot open the run's lock ({reason}); remove it if no run is "
                              f"using the folder") from None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise ConfigError(f"{self.path} is not a regular file; remove it if no run is using the folder")
        return descriptor

    def _still_named(self, descriptor: int) -> bool:
        """Whether ``.lock`` still names the file we locked (a releasing holder removes it)."""
        try:
            named = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(descriptor)
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._descriptor)
            self._descriptor = None
