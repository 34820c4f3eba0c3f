"""Run configuration: dataclasses ⇄ TOML/JSON, dotted overrides, validation (unknown keys are errors)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from difflab.core.errors import UsageError
from difflab.core.schema import check_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).parent.parent / "configs"


LR_DECAYS = ("none", "cosine")
SPECS = ("data.dataset", "model.net", "model.schedule", "model.cond", "model.codec",
         "train.sigma_density", "train.loss", "sample.sampler", "sample.discretization")


@dataclass
class DataConfig:
    dataset: dict = field(default_factory=lambda: {"name": "digits"})
    hflip: bool = False  # random horizontal flips during training


@dataclass
class ModelConfig:
    net: dict = field(default_factory=lambda: {"name": "unet"})
    schedule: dict = field(default_factory=lambda: {"name": "edm"})
    parameterization: str = "edm"
    sigma_data: float = 0.5
    learned_variance: bool = False
    cond: dict = field(
        default_factory=dict
    )  # {} | {name="class", p_uncond=0.1} | {name="text", ...}
    shape: list = field(default_factory=list)  # per-item pixel shape, filled in from the data
    codec: dict = field(default_factory=lambda: {"name": "identity"})  # pixels ↔ the net's space


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    accumulate: int = 1  # gradient accumulation micro-batches per step
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup: int = 0  # linear learning-rate warm-up steps
    lr_decay: str = "none"  # after warm-up: "none" (constant) or "cosine" (to 0 at train.steps)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    # AdamW kernels: "foreach" (multi-tensor, bit-identical to "loop"), "fused" (one CPU/GPU
    # kernel, ≤ 1e-7 relative from "loop") or "loop" (PyTorch's per-parameter default)
    adamw: str = "foreach"
    ema_decay: float = 0.999
    bf16: bool = False  # bf16 autocast for the network
    sigma_density: dict = field(default_factory=lambda: {"name": "lognormal"})
    # the objective (training.objectives.OBJECTIVES): {name = "denoising"} or {name = "hybrid"}
    loss: dict = field(default_factory=lambda: {"name": "denoising"})
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 0  # 0: only at the end
    keep: int = 3  # checkpoints kept
    max_seconds: float = 0.0  # stop after this much training time, summed over resumes (0: none)
    on_nonfinite: str = "stop"  # "stop" or "skip" the update when loss/grad is NaN or inf
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    eval_every: int = 0  # FD of EMA samples vs a held-out reference every K steps (0: off)
    eval_ref: str = ""  # reference .npz from `difflab ref-stats` of held-out data
    eval_features: str = "raw"  # the feature net of that reference: "raw" or a domain .safetensors
    eval_n: int = 256  # samples per in-loop evaluation (cheap, and logged with its n)
    grid_every: int = 0  # sample grid + loss plot in the run dir every K steps (0: at checkpoints)
    grid_n: int = 36  # samples per progress grid (0: no grids or loss plots)


@dataclass
class SampleConfig:
    sampler: dict = field(default_factory=lambda: {"name": "heun"})
    steps: int = 18
    discretization: dict = field(default_factory=lambda: {"name": "karras"})
    guidance: list = field(
        default_factory=list
    )  # default guidance specs, e.g. ["static_threshold"]
    n: int = 64
    batch_size: int = 64
    seed: int = 0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> Config:
        """Raise a UsageError for a value of the wrong type or out of range (core.schema), or a
        spec without a name."""
        check_config(self, skip=SPECS)  # specs: checked below with their own messages
        cond = self.model.cond
        if cond and not (isinstance(cond, dict) and isinstance(cond.get("name"), str)):
            raise UsageError(
                "config model.cond must be {} (unconditional) or a table with a name, e.g. "
                '{name = "class", p_uncond = 0.1}'
            )
        for section in ("dataset", "net", "schedule", "codec", "sigma_density", "sampler",
                        "discretization"):
            spec = _spec_field(self, section)
            if section == "codec" and isinstance(spec, dict) and isinstance(spec.get("ckpt"), str):
                continue  # a codec file: {ckpt = "ae.safetensors"} (difflab.storage.codecs)
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise UsageError(
                    f"config {section} must be a table with a name, e.g. {{name = ...}}"
                )
        return self


def _spec_field(cfg: Config, name: str) -> Any:
    for part in (cfg.data, cfg.model, cfg.train, cfg.sample):
        if hasattr(part, name):
            return getattr(part, name)
    raise KeyError(name)


def from_dict(data: dict, cls: type = Config, where: str = "") -> Any:
    """Build a (nested) config dataclass; unknown keys raise a UsageError listing the valid ones."""
    if not isinstance(data, dict):
        raise UsageError(f"config section {where or 'top level'} must be a table, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(
            f"unknown config key {where + unknown[0]!r}; valid keys here: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        sub = fields[name].type
        sub_cls = globals().get(sub) if isinstance(sub, str) else sub
        if dataclasses.is_dataclass(sub_cls):
            kwargs[name] = from_dict(value, sub_cls, f"{where}{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A TOML value ("3", "1e-4", "true", "[1, 2]", "{name = 'x'}"), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides to a nested dict; the top two levels must already exist."""
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override {item!r} is not of the form key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                if depth < 1 or part in node:
                    raise UsageError(f"unknown config key {key!r} in override {item!r}")
                node[part] = {}
            node = node[part]
        if len(parts) <= 2 and parts[-1] not in node:
            raise UsageError(
                f"unknown config key {key!r}; valid keys here: {', '.join(node) or '(none)'}"
            )
        node[parts[-1]] = parse_value(text.strip())
    return data


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def read_config_file(path_or_name: str | Path) -> dict:
    """Parse a TOML/JSON config file, or a built-in config by name (see `difflab list configs`)."""
    path = Path(path_or_name)
    if not path.is_file() and (BUILTIN_DIR / f"{path_or_name}.toml").exists():
        path = BUILTIN_DIR / f"{path_or_name}.toml"
    if not path.is_file():
        raise UsageError(
            f"config {str(path_or_name)!r} not found; give a TOML file or a built-in name "
            f"({', '.join(builtin_configs())})"
        )
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"config {path} is not valid {path.suffix[1:].upper()}: {err}") from None


def load_config(
    path_or_name: str | Path | dict | None = None, overrides: list[str] = ()
) -> Config:
    """Defaults ← file (or built-in name, or a config table) ← `--set` overrides, validated."""
    data = Config().to_dict()
    if path_or_name is not None:
        table = path_or_name if isinstance(path_or_name, dict) else read_config_file(path_or_name)
        _merge(data, copy.deepcopy(table), "")
    return from_dict(apply_overrides(data, list(overrides))).validate()


def _merge(base: dict, new: dict, where: str) -> None:
    """Merge `new` into the defaults: sections merge key by key, specs ({name=...}) and codec
    files ({ckpt=...}) replace."""
    for key, value in new.items():
        if key not in base:
            raise UsageError(
                f"unknown config key {where + key!r}; valid keys here: {', '.join(base)}"
            )
        spec = isinstance(value, dict) and ("name" in value or "ckpt" in value)
        if isinstance(value, dict) and isinstance(base[key], dict) and not spec:
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value


def to_toml(data: dict) -> str:
    """Render a two-level config dict as TOML (sections of scalars, lists and inline tables)."""
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + inner + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
