"""What every command sets up: threads, seeds, device, classifier, error reporting.

Nothing heavy is imported here at module level, so that ``ciid --help`` answers at once.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import sys
import threading
from typing import TYPE_CHECKING

import click

from ..errors import CIIDefenceError

if TYPE_CHECKING:
    import torch

    from ..models.base import Classifier


class CommandFailed(click.ClickException):
    """A one-line error; the exit status is 2 for bad usage, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class; ours varies

    def show(self, file=None) -> None:
        click.echo(f"ciid: error: {self.message}", err=True)


class SigtermAsInterrupt:
    """A SIGTERM handler (``kill``, a batch scheduler's time limit) that stops a command as Ctrl-C does.

    It raises ``KeyboardInterrupt`` and remembers that SIGTERM sent it: Ray turns an exception raised while it
    waits into a new ``KeyboardInterrupt``, so the exception's type cannot carry that.
    """

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum, frame) -> None:
        self.received = True
        raise KeyboardInterrupt


def report_errors(command):
    """Turn library errors, interrupts and I/O failures into one-line messages instead of tracebacks.

    SIGTERM stops the command as Ctrl-C does, with exit status 143: finished work stays written.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        sigterm = SigtermAsInterrupt()
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, sigterm) if in_main_thread else None
        try:
            return command(*args, **kwargs)
        except CIIDefenceError as error:
            raise CommandFailed(str(error), exit_code=2) from None
        except KeyboardInterrupt:
            if sigterm.received:
                raise CommandFailed("terminated", exit_code=128 + signal.SIGTERM) from None
            raise CommandFailed("interrupted", exit_code=130) from None
        except OSError as error:  # a full or read-only disk, a vanished folder
            where = f"{error.filename}: " if error.filename else ""
            raise CommandFailed(f"{where}{error.strerror or error}", exit_code=1) from None
        except sqlite3.Error as error:  # the results database: a full disk, a file changed under the run
            raise CommandFailed(f"results database: {error}", exit_code=1) from None
        finally:
            if previous is not None:  # None: not a Python handler (ray.init's, in a test process), so ours stays
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def warn(message: str) -> None:
    """One line on stderr, so stdout stays machine-readable."""
    from tqdm import tqdm

    tqdm.write(f"ciid: {message}", file=sys.stderr)


def say(message: str) -> None:
    """One line on stdout that does not break a progress bar on the terminal."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stdout)


def default_threads() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads (default: every CPU this process may use)."""
    import torch

    torch.set_num_threads(threads or default_threads())


def seed_everything(seed: int) -> None:
    """Seed the global generators; ciidefence's own draws use generators seeded from what they compute."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CommandFailed("--device cuda: no CUDA device is available", exit_code=2)
    return torch.device(name)


def open_classifier(model: str, checkpoint: str | None, random_weights: bool, device: str, seed: int,
                    threads: int | None = None) -> Classifier:
    """Set threads and seeds, pick the device and build the classifier, as every command does first."""
    from ..models import load_classifier

    set_threads(threads)
    seed_everything(seed)
    if random_weights:
        warn(f"using RANDOM weights for {model}: predictions are meaningless")
    classifier = load_classifier(model, checkpoint, random_weights)
    return classifier.to(resolve_device(device))


def progress(items, description: str):
    """A progress bar on stderr when there is enough work to watch."""
    from tqdm import tqdm

    items = list(items)
    return tqdm(items, desc=description, unit="img", file=sys.stderr, disable=len(items) < 8 or None)
