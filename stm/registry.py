"""One small registry type for the things the paper varies (miners, generators, optimizers, search strategies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str, key: str):
        super().__init__()
        self.kind = kind  # "miner", "generator", ...
        self.key = key  # the params key that names an entry, for error messages

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def lookup(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"{self.key}: unknown {self.kind} {name!r}; known: {sorted(self)}") from None
