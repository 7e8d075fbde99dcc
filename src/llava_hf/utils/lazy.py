"""Packages whose public names load on first use (PEP 562), so importing one of their light modules (a command's
settings, its `main`) does not import the heavy ones (torch, datasets) through the package's `__init__`.

    from ..utils.lazy import lazy_attributes
    __getattr__ = lazy_attributes(__name__, {"LlavaCollator": "collator", "preflight": "check"})
"""

import importlib
import sys
from collections.abc import Callable


def lazy_attributes(package: str, attributes: dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package`: `name` is imported from the submodule `attributes[name]` the first
    time it is asked for, then stored on the package."""

    def __getattr__(name: str):
        if name not in attributes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{attributes[name]}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
