"""Objects named by import path (``package.module:attribute``): users' defences and classifiers."""

from __future__ import annotations

import importlib
import os
import sys

from .errors import ConfigError, one_line


def import_object(path: str, what: str) -> object:
    """The object ``path`` (``package.module:attribute``, the attribute possibly dotted) names.

    A module in the current folder is found, as ``python -m`` finds it.
    Raises :class:`ConfigError`, naming ``what`` (e.g. "defence 'x:y'"), when it cannot be imported or found.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what}: expected an import path package.module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(module_name)
    except Exception as error:  # whatever a user's module raises on import, said in one line
        raise ConfigError(f"{what}: cannot import {module_name} ({type(error).__name__}: {one_line(error)})"
                          ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError(f"{what}: {module_name} has no {attribute}")
        found = getattr(found, part)
    return found
