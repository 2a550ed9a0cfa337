"""Registries of named parts (methods, tasks, backbones, views), discovered, not listed.

A part is one class or function that registers itself under a name when its module is
imported. Built-in parts live one module each in a package; the registry imports every module
of that package the first time it is asked for a name, so adding a part is adding a file
(nnU-Net finds trainer classes the same way; timm registers architectures by name). Parts
defined elsewhere (a user's file, a test) register by calling :meth:`Registry.register`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from multimix.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> part, filled by ``@registry.register`` as the modules of ``package`` import."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._parts: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register()`` uses the part's ``name`` attribute."""

        def add(part: T) -> T:
            key = name or getattr(part, "name", None)
            if not key:
                raise ValueError(f"a {self.kind} needs a name to register")
            old = self._parts.get(key)
            if old is not None and _identity(old) != _identity(part):
                raise ValueError(f"{self.kind} {key!r} is already registered by {_identity(old)}")
            self._parts[key] = part  # the same part again (a module reloaded) replaces it
            return part

        return add

    def discover(self) -> None:
        """Import every module of the package once, so built-ins have registered."""
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self.discover()
        if name not in self._parts:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}")
        return self._parts[name]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._parts

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(sorted(self._parts))

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._parts[name]) for name in self]

    def pop(self, name: str, default: T | None = None) -> T | None:
        """Unregister ``name`` (tests that register a part of their own clean up with it)."""
        return self._parts.pop(name, default)


def _identity(part: object) -> str:
    return f"{getattr(part, '__module__', '?')}.{getattr(part, '__qualname__', repr(part))}"
