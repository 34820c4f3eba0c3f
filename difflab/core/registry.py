"""Name → factory registries; every choice in a config is resolved through one of these."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from difflab.core.errors import UsageError


class Registry:
    """A named collection of factories with metadata; unknown names and options are UsageErrors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: register `fn` under `name` with free-form metadata (order, stochastic, ...)."""

        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            raise UsageError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def check_options(self, name: str, options: Mapping[str, Any], skip: int = 0) -> None:
        """Raise a UsageError if `options` holds a keyword the factory does not take."""
        params = list(inspect.signature(self.get(name)).parameters.values())[skip:]
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return
        valid = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UsageError(
                f"{self.kind} {name!r} takes no option {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )

    def build(self, spec: str | Mapping[str, Any], *args: Any, **extra: Any) -> Any:
        """Call the factory named by `spec` ("name" or {"name": ..., **options}) with its options."""
        if isinstance(spec, str):
            spec = {"name": spec}
        if "name" not in spec:
            raise UsageError(f"{self.kind} spec {dict(spec)!r} has no 'name'; add name = \"...\"")
        options = {k: v for k, v in spec.items() if k != "name"}
        options.update(extra)
        self.check_options(spec["name"], options, skip=len(args))
        return self.get(spec["name"])(*args, **options)
