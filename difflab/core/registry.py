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

    def options(self, name: str, skip: int = 0, internal: tuple[str, ...] = ()) -> dict[str, Any]:
        """The options factory `name` takes after its first `skip` parameters, less the `internal`
        ones, with their defaults (inspect.Parameter.empty where there is none)."""
        params = list(inspect.signature(self.get(name)).parameters.values())[skip:]
        return {p.name: p.default for p in params
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and p.name not in internal}  # fmt: skip

    def check_options(self, name: str, options: Mapping[str, Any], skip: int = 0,
                      internal: tuple[str, ...] = ()) -> None:  # fmt: skip
        """Raise a UsageError if `options` holds a keyword the factory does not take (or one of
        its `internal` arguments, which no user option may set); the message lists the valid ones."""
        params = inspect.signature(self.get(name)).parameters.values()
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params)  # **options: any name goes
        valid = list(self.options(name, skip, internal))
        unknown = sorted(k for k in options if k in internal or not (open_ended or k in valid))
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
