"""``lazy_import(name)``: a module that is imported on first attribute access.

A heavy third-party library (torch) is declared once at the top of a module that uses it —
``torch = lazy_import("torch")`` — instead of inside each function, so the module itself
stays cheap to import: ``launch --help``, the launcher and workers running the simulated
objective never load torch, while training code reads as if it imported torch normally.
Only for modules whose top level does not touch the library (no ``nn.Module`` subclasses).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    """Stands in for module ``name`` until an attribute is read, then becomes a view of it."""

    def _load(self) -> types.ModuleType:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return module

    def __getattr__(self, item: str) -> Any:
        # Called only for attributes not yet copied in, i.e. on first use.
        return getattr(self._load(), item)


def lazy_import(name: str) -> Any:
    """A stand-in for ``import name`` that imports it on first use."""
    return _LazyModule(name)
