"""One small registry type for the things the paper varies (miners, generators, optimizers, search strategies, merge
methods, baselines). Where ``stm.config`` validates a name before the stage that implements it is imported, the
names are a tuple there (``MERGE_METHODS``, ``BASELINES``) and a test holds the registry to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """name -> implementation; ``lookup`` fails naming the params key and the known names (as ``error``)."""

    def __init__(self, kind: str, key: str, error: type[Exception] = ValueError):
        super().__init__()
        self.kind = kind  # "miner", "generator", ...
        self.key = key  # the params key that names an entry, for error messages
        self.error = error

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
            raise self.error(f"{self.key}: unknown {self.kind} {name!r}; known: {sorted(self)}") from None
