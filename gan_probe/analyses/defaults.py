"""Where a default is stated: the parameter dataclasses. The command line and the Python API read it from there."""

from __future__ import annotations

import dataclasses
from typing import Any


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass ``cls``'s field ``name`` (a field with a default factory: the factory's value).

    Raises ``TypeError`` for a field without a default: a command-line or API default must come from somewhere.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise TypeError(f"{cls.__name__} has no field {name!r}")
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{name} has no default")


__all__ = ["default_of"]
