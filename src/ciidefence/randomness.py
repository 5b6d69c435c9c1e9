"""Random draws seeded by what is being computed, never by global state or the order of work.

Every random stage of ciidefence (random defences, random boxes, EOT, attack
random starts) takes a ``generator``. The evaluation seeds each generator from
a stable hash of what it computes: the run's seed, the experiment's identity,
the image and the defence. The same image under the same experiment then
gets the same draws however the work is batched, ordered, resumed or spread
over machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import TypeAlias

import numpy as np
import torch

Generators: TypeAlias = torch.Generator | Sequence[torch.Generator] | None
"""A ``generator=`` argument: one generator for the whole batch, one per image, or None for torch's default."""


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a SHA-256 of ``parts`` (JSON-serialisable values), the same on every machine and run."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`stable_seed` of ``parts``."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def per_image(generator: Generators, batch: int) -> list[torch.Generator | None]:
    """One generator per image of a batch of ``batch``.

    A single generator (or None) serves every image in turn; a sequence must
    hold exactly one generator per image.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch
    generators: list[torch.Generator | None] = list(generator)
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch} images")
    return generators


def randint(low: int, high: int, size: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.randint`` drawn on the CPU from ``generator`` and moved to ``device``.

    Drawing on the CPU makes the draws the same on every device.
    """
    return torch.randint(low, high, size, generator=generator).to(device)


def rand(size: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.rand`` drawn on the CPU from ``generator`` and moved to ``device``."""
    return torch.rand(size, generator=generator).to(device)


@contextlib.contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's and torch's global generators for a block, then restore their state.

    Only for third-party code that draws from the global generators and takes
    no generator (the random starts of ART's attacks); the seed still comes
    from what is computed, so the draws do not depend on the order of work.
    """
    numpy_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        torch.random.set_rng_state(torch_state)


GeneratorState: TypeAlias = list[torch.Tensor]
"""What :func:`generator_state` saves: the state of each generator of a ``generator=`` argument."""


def _each(generator: Generators) -> list[torch.Generator | None]:
    """The generators of a ``generator=`` argument, None standing for torch's default CPU generator."""
    return [generator] if generator is None or isinstance(generator, torch.Generator) else list(generator)


def generator_state(generator: Generators) -> GeneratorState:
    """The present state of ``generator`` (of each one of a sequence; of torch's default CPU generator for None)."""
    return [torch.random.get_rng_state() if each is None else each.get_state() for each in _each(generator)]


@contextlib.contextmanager
def drawing_again(generator: Generators, state: GeneratorState) -> Iterator[None]:
    """Run a block with ``generator`` set back to ``state``, then return it to where it was before the block.

    The block draws the same random numbers as the computation that followed
    ``state`` (a randomised defence's BPDA approximation makes the same
    transformation as its forward pass), and what comes after the block draws
    as if the block had not run.
    """
    generators = _each(generator)
    now = generator_state(generator)
    if len(state) != len(now):
        raise ValueError(f"a state of {len(state)} generators for {len(now)} generators")
    _set_states(generators, state)
    try:
        yield
    finally:
        _set_states(generators, now)


def _set_states(generators: list[torch.Generator | None], states: GeneratorState) -> None:
    for each, state in zip(generators, states, strict=True):
        if each is None:
            torch.random.set_rng_state(state)
        else:
            each.set_state(state)
