"""Writing files the one safe way: whole or not at all, never through a link, with the user's umask.

Every file the project writes that a killed process must not leave half
written (purified images, weights, training checkpoints, run packs) goes
through :func:`write_atomically`: a fresh, unpredictable temporary file in
the target's own folder (never a guessable name that someone could plant a
link at), renamed onto the target when complete.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import ConfigError


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process's umask: what ``open()`` would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def refuse_link(path: Path, what: str = "file") -> None:
    """Raise :class:`ConfigError` if ``path`` is a link or exists and is not a regular file."""
    if path.is_symlink():
        raise ConfigError(f"{path} is a symbolic link; refusing to write through it")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise ConfigError(f"{path} exists and is not a regular {what}; refusing to replace it")


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a fresh temporary file beside ``path``, then rename it onto ``path``.

    The temporary file is removed if ``write`` fails or the process is
    interrupted; ``path`` is never written through a link.
    """
    path = Path(path)
    refuse_link(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, umask_mode())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_writable_folder(folder: str | os.PathLike, option: str, create: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``folder`` exists (or, with ``create``, can be made) and a file can be
    created in it (checked by doing so)."""
    folder = Path(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{option}: cannot make the folder {folder} ({error.strerror or error})") from None
    if not folder.is_dir():
        raise ConfigError(f"{option}: the folder {folder} does not exist")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
    except OSError as error:
        raise ConfigError(f"{option}: cannot write in {folder} ({error.strerror or error})") from None
    os.close(descriptor)
    os.unlink(probe)


def save_safetensors(state: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write a state dict (tensors) and string ``metadata`` as a safetensors file, atomically: no code, no pickle."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    content = save(tensors, metadata=metadata)
    write_atomically(path, lambda handle: handle.write(content))
