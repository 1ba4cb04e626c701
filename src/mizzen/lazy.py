"""Package `__init__`s that name their exports without importing them (PEP 562).

`mizzen.api` holds every kind's schema and `mizzen.model` the whole resolver: importing them eagerly made every
`mizzen` command (and every process that only needs one small module below them, such as `api.base`) pay
~2 s of imports. With `lazy_exports`, `from mizzen.api import KINDS` still works and imports `api.kinds` then,
on first use; `import mizzen.api.base` no longer drags in the rest of the package.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` resolving each name in `exports` (name -> relative module)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)  # once resolved, a plain attribute
        return value

    return __getattr__
