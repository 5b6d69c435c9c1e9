"""Typed exceptions raised by ciidefence.

Every error the library raises for bad input derives from
:class:`CIIDefenceError`, so callers can catch one type; the command-line tool
turns each into a one-line message and a non-zero exit status.
"""


class CIIDefenceError(Exception):
    """Base class of every error raised by ciidefence for bad input."""


class ImageError(CIIDefenceError):
    """An image file is missing, unreadable, corrupt, too small or too large."""


class InputError(CIIDefenceError, ValueError):
    """A tensor argument has the wrong type, shape, dtype or values."""


class ConfigError(CIIDefenceError, ValueError):
    """A configuration value is unknown or out of range."""


class ModelError(CIIDefenceError):
    """A classifier or inpainter cannot be built: unknown name or missing weights."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, unsafe, or does not fit the model."""


def one_line(error: BaseException) -> str:
    """An exception's message in one line: its last non-empty line (Ray's and chained messages end with the
    cause), at most 500 characters; its type's name where it has no message."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__
