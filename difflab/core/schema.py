"""One schema for config values: the type from each dataclass field's hint, the range or the
allowed values from RULES; every value is checked before any work, and a bad one is one line
naming the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from difflab.core.errors import UsageError


@dataclass(frozen=True)
class Rule:
    """Allowed values: low/high bounds (open or closed) or a tuple of choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()

    def allows(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else
                                               value > self.high))  # fmt: skip

    def describe(self, kind: type) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        noun = "integer" if kind is int else "number"
        if self.low == 0 and self.low_open and self.high is None:
            return f"a positive {noun}"
        if self.high is None:
            return f"{'an' if kind is int else 'a'} {noun} >= {self.low}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {lo}{self.low}, {self.high}{hi}"


POSITIVE, NON_NEGATIVE = Rule(low=0, low_open=True), Rule(low=0)
UNIT = Rule(low=0, high=1, high_open=True)  # [0, 1): decays, momenta

RULES: dict[str, Rule] = {
    "train.steps": POSITIVE, "train.batch_size": POSITIVE, "train.accumulate": POSITIVE,
    "train.lr": POSITIVE, "train.log_every": POSITIVE, "train.keep": POSITIVE,
    "train.weight_decay": NON_NEGATIVE, "train.warmup": NON_NEGATIVE,
    "train.grad_clip": NON_NEGATIVE, "train.ckpt_every": NON_NEGATIVE,
    "train.max_seconds": NON_NEGATIVE, "train.eval_every": NON_NEGATIVE,
    "train.eval_n": NON_NEGATIVE, "train.ema_decay": UNIT,
    "train.grid_every": NON_NEGATIVE, "train.grid_n": NON_NEGATIVE,
    "train.lr_decay": Rule(choices=("none", "cosine")),
    "train.on_nonfinite": Rule(choices=("stop", "skip")),
    "train.adamw": Rule(choices=("foreach", "fused", "loop")),
    "sample.steps": POSITIVE, "sample.n": POSITIVE, "sample.batch_size": POSITIVE,
    "model.sigma_data": POSITIVE, "train.betas[]": UNIT,
}  # fmt: skip
LENGTHS = {"train.betas": 2}

_NOUNS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          dict: "a table", list: "a list"}  # fmt: skip


def check_value(key: str, value: Any, kind: type, rule: Rule | None = None,
                prefix: str = "config ") -> Any:  # fmt: skip
    """`value` as `kind` (an integral float becomes an int) if `rule` allows it, else a one-line
    UsageError naming `key`, the value and what is allowed."""
    what = rule.describe(kind) if rule else _NOUNS.get(kind, kind.__name__)
    bad = UsageError(f"{prefix}{key} must be {what}, got {value!r}")
    if kind in (int, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            if isinstance(value, str):
                raise UsageError(f"{prefix}{key} must be {what}, got the string {value!r}")
            raise bad
        if not math.isfinite(value):
            raise bad
        if kind is int:
            if value != int(value):
                raise UsageError(f"{prefix}{key} must be an integer, got {value!r}")
            value = int(value)
    elif kind is bool and not isinstance(value, bool):
        hint = " (write true or false without quotes)" if isinstance(value, str) else ""
        raise UsageError(f"{prefix}{key} must be true or false{hint}, got {value!r}")
    elif kind in (str, dict, list) and not isinstance(value, kind):
        raise UsageError(f"{prefix}{key} must be {_NOUNS[kind]}, got {value!r}")
    if rule is not None and not rule.allows(value):
        raise bad
    return value


def check_section(section: Any, name: str, rules: dict[str, Rule] = RULES,
                  skip: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Check (and normalise in place) every field of one config dataclass against its type hint
    and `rules` ("name.field", "name.field[]" for each item of a list)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        key, kind = f"{name}.{f.name}", hints[f.name]
        if key in skip:
            continue
        kind = typing.get_origin(kind) or kind
        if not isinstance(kind, type) or dataclasses.is_dataclass(kind):
            continue
        value = check_value(key, getattr(section, f.name), kind, rules.get(key))
        if kind is list and f"{key}[]" in rules:
            if key in LENGTHS and len(value) != LENGTHS[key]:
                raise UsageError(f"config {key} must be a list of {LENGTHS[key]}, got {value!r}")
            value = [check_value(f"{key}[{i}]", v, float, rules[f"{key}[]"])
                     for i, v in enumerate(value)]  # fmt: skip
        setattr(section, f.name, value)


def check_config(cfg: Any, skip: tuple[str, ...] = ()) -> None:
    """check_section over each section of a Config (keys in `skip` are checked elsewhere)."""
    for f in dataclasses.fields(cfg):
        check_section(getattr(cfg, f.name), f.name, skip=skip)
