"""Lazy exports of a package: names imported from their module on first use, so importing
the package stays light."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` whose `exports` map a name to the module
    (relative to the package) that defines it."""

    def getattr_(name: str) -> Any:
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = mod if mod.startswith(".") else "." + mod
        value = getattr(importlib.import_module(target, package), name)
        setattr(sys.modules[package], name, value)  # the next lookup skips this function
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return getattr_, dir_
