"""σ training densities: a registry of stateless draws, and the Density an objective owns."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.schedules import Schedule

SIGMA_DENSITIES = Registry("sigma density")
STATEFUL_DENSITIES: dict = {}  # name → build(schedule, **options) of a density that keeps state


@SIGMA_DENSITIES.register("discrete")
def discrete(schedule: Schedule, n: int, generator: torch.Generator) -> Tensor:
    """t ~ Uniform{0..T−1}, σ = σ_t (Ho et al. 2020, Algorithm 1)."""
    if not schedule.discrete:
        raise UsageError(
            f"sigma density 'discrete' needs a discrete schedule, not {schedule.name!r}; "
            'use sigma_density = {name = "lognormal"}'
        )
    t = torch.randint(0, schedule.num_timesteps, (n,), generator=generator)
    return schedule.sigmas[t].float()  # [n]


@SIGMA_DENSITIES.register("lognormal", schedule_free=True)
def lognormal(
    schedule: Schedule, n: int, generator: torch.Generator, *, p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:  # fmt: skip
    """ln σ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1, training row)."""
    return (p_mean + p_std * torch.randn(n, generator=generator)).exp()  # [n]


@SIGMA_DENSITIES.register("log_uniform", schedule_free=True)
def log_uniform(
    schedule: Schedule | None, n: int, generator: torch.Generator, *, sigma_min: float = 0.002,
    sigma_max: float = 80.0,
) -> Tensor:  # fmt: skip
    """ln σ ~ U(ln σ_min, ln σ_max): every noise level equally often on a log scale (the noise-aware
    classifier's σ at all noise levels, Dhariwal & Nichol 2021 §4)."""
    if not 0 < sigma_min < sigma_max:
        raise UsageError(
            f"density needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}; fix them"
        )
    u = torch.rand(n, generator=generator, dtype=torch.float64)  # [n]
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return torch.exp(lo + u * (hi - lo)).float()  # [n]


@SIGMA_DENSITIES.register("uniform_t")
def uniform_t(schedule: Schedule, n: int, generator: torch.Generator) -> Tensor:
    """t ~ U(t(σ_min), t(σ_max)) for continuous schedules (Song et al. 2021, Eq. 7)."""
    lo = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64))
    hi = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64))
    t = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return schedule.t_to_sigma(t).float()  # [n]


def sample_sigmas(spec: str | dict, schedule: Schedule, n: int, generator: torch.Generator):
    """σ [n] drawn from the density named in `spec`."""
    return SIGMA_DENSITIES.build(spec, schedule, n, generator)


@dataclass
class SigmaDraw:
    """σ [n] for a batch; with an importance density also t [n] and the weights 1/(T·p_t) [n]."""

    sigma: Tensor
    weight: Tensor | None = None
    t: Tensor | None = None


class Density:
    """A stateless density from SIGMA_DENSITIES: draw σ, learn nothing from the losses."""

    def __init__(self, spec: dict, schedule: Schedule):
        self.spec, self.schedule = spec, schedule

    def draw(self, n: int, generator: torch.Generator) -> SigmaDraw:
        return SigmaDraw(sample_sigmas(self.spec, self.schedule, n, generator))  # [n]

    def observe(self, draw: SigmaDraw, losses: Tensor) -> None:
        """Feed per-sample losses back (stateless densities ignore them)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def as_spec(spec: str | dict) -> dict:
    """{"name": spec} for a bare name; a copy of a table, which must have a name."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise UsageError(f"spec {spec!r} has no 'name'; add name = \"...\"")
    return spec


def build_density(spec: str | dict, schedule: Schedule):
    """The Density for `spec` (train.sigma_density), checked now; a stateful one (e.g.
    "importance") from its STATEFUL_DENSITIES builder."""
    options = as_spec(spec)
    name = options.pop("name")
    SIGMA_DENSITIES.check_options(name, options, skip=3)
    if name in STATEFUL_DENSITIES:
        return STATEFUL_DENSITIES[name](schedule, **options)
    density = Density({"name": name, **options}, schedule)
    density.draw(1, torch.Generator())  # a schedule the density cannot use fails here
    return density


# Noise-aware nets (classifier, encoder) depend on no schedule: σ log-uniform or log-normal.
NOISE_AWARE_DENSITY = {
    "name": "log_uniform", "sigma_min": 0.002, "sigma_max": 80.0, "p_mean": -1.2, "p_std": 1.2,
}  # fmt: skip


def sample_sigma(density: dict[str, Any], n: int, generator: torch.Generator) -> Tensor:
    """σ [n] for a noise-aware net from a density that needs no diffusion schedule (registered
    schedule_free: log_uniform, lognormal); options it does not take are ignored."""
    d = {**NOISE_AWARE_DENSITY, **density}
    name = d.pop("name")
    free = [k for k in SIGMA_DENSITIES.names() if SIGMA_DENSITIES.meta(k).get("schedule_free")]
    if name not in free:
        raise UsageError(
            f"sigma density {name!r} is unknown for noise-aware nets; use density.name = one of "
            f"{', '.join(free)}"
        )
    takes = inspect.signature(SIGMA_DENSITIES.get(name)).parameters
    options = {k: v for k, v in d.items() if k in takes}
    return SIGMA_DENSITIES.build({"name": name, **options}, None, n, generator)  # [n]


def sigma_range(density: dict[str, Any]) -> list[float]:
    """[σ_min, σ_max] the net was trained on (log-normal: its ±3 std interval)."""
    d = {**NOISE_AWARE_DENSITY, **density}
    if d["name"] == "log_uniform":
        return [d["sigma_min"], d["sigma_max"]]
    return [math.exp(d["p_mean"] - 3 * d["p_std"]), math.exp(d["p_mean"] + 3 * d["p_std"])]
