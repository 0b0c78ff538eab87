"""Name → plugin lookup for problems, optimizers and schedules.

A plugin is one module in its package (``problems/mnist_vae.py``) whose file name is its config name; it registers
its class with ``@REGISTRY.register``. Modules are imported lazily on first use so that ``valley`` with P1 never
imports the CIFAR pipeline, and listing the valid names never imports anything.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised for a name no plugin has; the message is the one line a user sees."""


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._classes: dict[str, type[T]] = {}

    def names(self) -> list[str]:
        """Every plugin module in the package (``_*`` modules, ``base`` and sub-packages are infrastructure)."""
        pkg = importlib.import_module(self.package)
        return sorted(
            m.name for m in pkgutil.iter_modules(pkg.__path__)
            if not m.ispkg and not m.name.startswith("_") and m.name != "base"
        )

    def register(self, cls: type[T]) -> type[T]:
        name = cls.__module__.rsplit(".", 1)[-1]
        cls.name = name  # type: ignore[attr-defined]
        self._classes[name] = cls
        return cls

    def register_plugin(self, cls: type[T], name: str) -> None:
        """A plugin from outside the package (``bench.plugins``: a file or an installed entry point)."""
        cls.name = name  # type: ignore[attr-defined]
        self._classes[name] = cls

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            valid = self.names()
            if name not in valid:
                from bench import plugins

                if plugins.load_entry_point(self.kind, name) is not None:
                    return self._classes[name]
                raise UnknownNameError(f"unknown {self.kind} '{name}'; valid: {', '.join(valid)}")
            importlib.import_module(f"{self.package}.{name}")
            if name not in self._classes:
                raise UnknownNameError(f"{self.package}/{name}.py does not register a {self.kind} class")
        return self._classes[name]
