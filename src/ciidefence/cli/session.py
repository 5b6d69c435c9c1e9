"""What every command sets up: seeds, device, classifier, error reporting."""

from __future__ import annotations

import functools
import random
import sys

import click
import numpy as np
import torch

from ..errors import CIIDefenceError
from ..models import Classifier, load_classifier


class CommandFailed(click.ClickException):
    """A one-line error; the exit status is 2 for bad usage, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"ciid: error: {self.message}", err=True)


def report_errors(command):
    """Turn library errors into one-line messages instead of tracebacks."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CIIDefenceError as error:
            raise CommandFailed(str(error), exit_code=2) from None
        except KeyboardInterrupt:
            raise CommandFailed("interrupted", exit_code=130) from None

    return wrapper


def warn(message: str) -> None:
    """One line on stderr, so stdout stays machine-readable."""
    click.echo(f"ciid: {message}", err=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CommandFailed("--device cuda: no CUDA device is available", exit_code=2)
    return torch.device(name)


def open_classifier(model: str, checkpoint: str | None, random_weights: bool, device: str, seed: int) -> Classifier:
    """Seed, pick the device and build the classifier, as every command does first."""
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
