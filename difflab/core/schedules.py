"""Noise schedules as σ-space views (x = a(σ)·(x0 + σ·ε)) and their discretisations.

A schedule answers three questions about a noise level σ: the native input scale a(σ), the
network's noise label c_noise(σ) and, for discrete-time models, the timestep of σ. Samplers only
ever see a decreasing grid of σ values ending in 0 (see `discretize`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.registry import Registry

SCHEDULES = Registry("schedule")
DISCRETIZATIONS = Registry("discretization")


class Schedule:
    """σ-space view of a forward process; subclasses set `a`, `c_noise` and the σ↔t maps."""

    name = "schedule"
    discrete = False
    vp = False  # a(σ) = 1/√(1+σ²): the DDPM/VP family, where ᾱ = 1/(1+σ²)

    def __init__(self, sigma_min: float, sigma_max: float):
        if not 0 < sigma_min < sigma_max:
            raise UsageError(
                f"schedule needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}"
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def scale(self, sigma: Tensor) -> Tensor:
        """a(σ): native state = a(σ)·(x0 + σε) (ARCHITECTURE §1)."""
        return torch.ones_like(sigma)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The network's noise label for σ (EDM Table 1, c_noise row)."""
        raise NotImplementedError

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def t_to_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name}: sigma in [{self.sigma_min:.4g}, {self.sigma_max:.4g}]"


class DiscreteVP(Schedule):
    """Discrete-time VP (DDPM) schedule from β_1..β_T; σ_t = √((1−ᾱ_t)/ᾱ_t) (Ho et al. 2020, Eq. 4)."""

    discrete = True
    vp = True

    def __init__(self, betas: np.ndarray, name: str):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise UsageError("betas must be a 1-D array with every value in (0, 1)")
        self.name = name
        self.betas = torch.from_numpy(betas)  # [T]
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)  # [T] ᾱ_t
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()  # [T] increasing
        self.log_sigmas = self.sigmas.log()
        self.num_timesteps = len(betas)
        super().__init__(self.sigmas[0].item(), self.sigmas[-1].item())

    def scale(self, sigma: Tensor) -> Tensor:
        return (1 + sigma**2).rsqrt()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep of σ by linear interpolation of log σ between integer steps."""
        log_sigma = sigma.double().clamp(min=self.sigma_min, max=self.sigma_max).log()
        hi = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        lo = hi - 1
        w = (log_sigma - self.log_sigmas[lo]) / (self.log_sigmas[hi] - self.log_sigmas[lo])
        return (lo + w.clamp(0, 1)).to(sigma.dtype)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """σ at a fractional timestep, interpolating log σ between integer steps."""
        t = t.double().clamp(0, self.num_timesteps - 1)
        lo = t.floor().long()
        hi = t.ceil().long()
        w = t - lo
        return ((1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.sigma_to_t(sigma)

    def describe(self) -> str:
        return f"{self.name}: T={self.num_timesteps}, " + super().describe().split(": ")[1]


TERMINAL_ALPHA_BAR = 2.0**-24  # ᾱ_T after zero-SNR rescaling: diffusers' finite stand-in for 0


def zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale √ᾱ so that ᾱ_T = 0 and ᾱ_1 is kept (Lin et al. 2024, Algorithm 1); ᾱ_T is then
    set to 2⁻²⁴ (as diffusers' Euler schedulers) so that σ_T = √((1−ᾱ)/ᾱ) ≈ 4096 stays finite."""
    root = np.sqrt(np.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    alpha_bar = ((root - last) * first / (first - last)) ** 2
    alpha_bar[-1] = TERMINAL_ALPHA_BAR
    return 1.0 - alpha_bar / np.concatenate([[1.0], alpha_bar[:-1]])


def _vp(betas: np.ndarray, name: str, zero_snr: bool) -> DiscreteVP:
    return DiscreteVP(zero_terminal_snr(betas) if zero_snr else betas, name)


def _check_T(T: int) -> int:
    if not isinstance(T, int) or T < 2:
        raise UsageError(f"schedule T must be an integer >= 2, got {T!r}")
    return T


@SCHEDULES.register("linear")
def linear(*, T: int = 1000, beta_start: float | None = None, beta_end: float | None = None,
           zero_snr: bool = False):  # fmt: skip
    """Linear β from 1e-4 to 0.02, rescaled by 1000/T (Ho et al. 2020 §4; Nichol & Dhariwal 2021);
    `zero_snr` rescales to zero terminal SNR (Lin et al. 2024)."""
    T = _check_T(T)
    scale = 1000 / T
    start = beta_start if beta_start is not None else 1e-4 * scale
    end = beta_end if beta_end is not None else 0.02 * scale
    return _vp(np.linspace(start, end, T), "linear", zero_snr)


@SCHEDULES.register("cosine")
def cosine(*, T: int = 1000, s: float = 0.008, max_beta: float = 0.999, zero_snr: bool = False):
    """ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β clipped (Nichol & Dhariwal 2021, Eq. 17)."""
    T = _check_T(T)
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], max_beta)
    return _vp(betas, "cosine", zero_snr)


@SCHEDULES.register("scaled_linear")
def scaled_linear(*, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                  zero_snr: bool = False):  # fmt: skip
    """β linear in √β (latent diffusion / Stable Diffusion schedule, Rombach et al. 2022)."""
    T = _check_T(T)
    return _vp(np.linspace(beta_start**0.5, beta_end**0.5, T) ** 2, "scaled_linear", zero_snr)


class VE(Schedule):
    """Variance-exploding SDE, σ(t) = σ_min (σ_max/σ_min)^t, t ∈ [0, 1] (Song et al. 2021, Eq. 31)."""

    name = "ve"

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        return (sigma / self.sigma_min).log() / math.log(self.sigma_max / self.sigma_min)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def c_noise(self, sigma: Tensor) -> Tensor:
        """c_noise = ln(σ/2) (Karras et al. 2022, Table 1, VE column)."""
        return (0.5 * sigma).log()


@SCHEDULES.register("ve")
def ve(*, sigma_min: float = 0.01, sigma_max: float = 50.0):
    """VE (NCSN / score SDE) schedule (Song et al. 2021)."""
    return VE(sigma_min, sigma_max)


class EDM(Schedule):
    """EDM schedule: σ(t) = t, a(σ) = 1 (Karras et al. 2022, Table 1)."""

    name = "edm"

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        return sigma

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return t

    def c_noise(self, sigma: Tensor) -> Tensor:
        """c_noise = ¼ ln σ (Karras et al. 2022, Table 1)."""
        return 0.25 * sigma.log()


@SCHEDULES.register("edm")
def edm(*, sigma_min: float = 0.002, sigma_max: float = 80.0):
    """EDM noise range σ ∈ [0.002, 80] (Karras et al. 2022, §5)."""
    return EDM(sigma_min, sigma_max)


class Flow(Schedule):
    """Rectified flow x_t = (1−t)x0 + tε: a(σ) = 1/(1+σ), σ = t/(1−t) (Liu et al. 2023)."""

    name = "flow"

    def scale(self, sigma: Tensor) -> Tensor:
        return 1 / (1 + sigma)

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        return sigma / (1 + sigma)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return t / (1 - t)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The flow time t scaled to [0, 1000] like discrete timesteps."""
        return 1000 * self.sigma_to_t(sigma)


@SCHEDULES.register("flow")
def flow(*, t_min: float = 1e-4, t_max: float = 0.999):
    """Rectified-flow schedule over t ∈ [t_min, t_max] (Liu et al. 2023; Esser et al. 2024)."""
    return Flow(t_min / (1 - t_min), t_max / (1 - t_max))


def build_schedule(spec: str | dict) -> Schedule:
    """Schedule from a config spec ("cosine" or {"name": "cosine", "T": 1000})."""
    return SCHEDULES.build(spec)


# ---- discretisations: decreasing σ grids of steps+1 values ending in 0 -------------------------


def _with_zero(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.double(), sigmas.new_zeros(1, dtype=torch.float64)])


@DISCRETIZATIONS.register("karras")
def karras(
    schedule: Schedule,
    steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (Karras et al. 2022, Eq. 5)."""
    lo = schedule.sigma_min if sigma_min is None else sigma_min
    hi = schedule.sigma_max if sigma_max is None else sigma_max
    if steps == 1:
        return _with_zero(torch.tensor([hi]))
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    return _with_zero((hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho)


def respaced_timesteps(T: int, steps: int, spacing: str, offset: int = 0) -> np.ndarray:
    """Decreasing integer timesteps for DDIM respacing (Song et al. 2021 §4.2; Lin et al. 2024 Tab. 2)."""
    if steps > T:
        raise UsageError(f"steps={steps} exceeds the schedule's T={T}; use at most {T} steps")
    if spacing == "leading":
        ts = np.arange(steps) * (T // steps) + offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()
    else:
        raise UsageError(f"unknown spacing {spacing!r}; choose one of: leading, linspace, trailing")
    return np.clip(ts.astype(np.int64), 0, T - 1)[::-1].copy()


@DISCRETIZATIONS.register("uniform")
def uniform(
    schedule: Schedule, steps: int, *, spacing: str = "trailing", offset: int = 0
) -> Tensor:
    """Evenly spaced timesteps (DDPM/DDIM respacing for discrete schedules, uniform t otherwise)."""
    if schedule.discrete:
        ts = respaced_timesteps(schedule.num_timesteps, steps, spacing, offset)
        return _with_zero(schedule.sigmas[torch.from_numpy(ts)])
    t_hi = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64))
    t_lo = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64))
    return _with_zero(schedule.t_to_sigma(torch.linspace(t_hi.item(), t_lo.item(), steps)))


def discretize(schedule: Schedule, spec: str | dict, steps: int) -> Tensor:
    """σ grid [steps + 1] (float64, decreasing, last entry 0) for a sampler."""
    if not isinstance(steps, int) or steps < 1:
        raise UsageError(f"steps must be an integer >= 1, got {steps!r}")
    sigmas = DISCRETIZATIONS.build(spec, schedule, steps)
    check_sigmas(sigmas)
    return sigmas


def check_sigmas(sigmas: Tensor) -> int:
    """Raise a UsageError unless σ is a 1-D strictly monotone grid of finite σ >= 0; return its
    direction: −1 decreasing (denoising; may end at 0 or above it), +1 increasing (inversion,
    clean to noisy; must start above 0, where the ODE slope (x − D)/σ is still defined)."""
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise UsageError("the sigma grid must be 1-D with at least 2 entries")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise UsageError("the sigma grid must be finite and non-negative")
    if (sigmas[1:] < sigmas[:-1]).all():
        return -1
    if not (sigmas[1:] > sigmas[:-1]).all():
        raise UsageError(
            "the sigma grid must be strictly decreasing (noisy to clean) or strictly increasing "
            "(clean to noisy, for inversion); split it into monotone pieces, one `sample` each"
        )
    if sigmas[0] == 0:
        raise UsageError(
            "the sigma grid increases from 0: an inversion grid must start above 0 (the ODE "
            "slope (x − D)/σ is undefined at σ = 0), e.g. at the schedule's `sigma_min` with "
            "x = x0; a denoising grid must be decreasing"
        )
    return 1


def _sigma_range(schedule: Schedule, sigma_min: float | None, sigma_max: float | None):
    lo = schedule.sigma_min if sigma_min is None else sigma_min
    hi = schedule.sigma_max if sigma_max is None else sigma_max
    if not 0 < lo < hi:
        raise UsageError(f"discretization needs 0 < sigma_min < sigma_max, got {lo} and {hi}")
    return lo, hi


@DISCRETIZATIONS.register("exponential")
def exponential(
    schedule: Schedule,
    steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    """σ_i uniform in log σ from σ_max to σ_min (k-diffusion `get_sigmas_exponential`)."""
    lo, hi = _sigma_range(schedule, sigma_min, sigma_max)
    return _with_zero(torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64).exp())


@DISCRETIZATIONS.register("log_snr")
def log_snr(
    schedule: Schedule,
    steps: int,
    *,
    lambda_min: float | None = None,
    lambda_max: float | None = None,
) -> Tensor:
    """Uniform in λ = log SNR = log(ᾱ/(1−ᾱ)) = −2 log σ (DPM-Solver's "logSNR" steps, Lu et al.
    2022, §3.3); in σ-space this is the `exponential` grid, here bounded in λ."""
    lam_lo = -2 * math.log(schedule.sigma_max) if lambda_min is None else lambda_min
    lam_hi = -2 * math.log(schedule.sigma_min) if lambda_max is None else lambda_max
    if not lam_lo < lam_hi:
        raise UsageError(f"log_snr needs lambda_min < lambda_max, got {lam_lo} and {lam_hi}")
    lam = torch.linspace(lam_lo, lam_hi, steps, dtype=torch.float64)  # increasing λ = noisy → clean
    return _with_zero((-lam / 2).exp())


@DISCRETIZATIONS.register("quadratic")
def quadratic(schedule: Schedule, steps: int, *, fraction: float | None = None) -> Tensor:
    """t_i = (i·√(fraction·T)/(N−1))², truncated to integers (DDIM "quad", Song et al. 2021a,
    App. D.2); continuous schedules use t_lo + fraction·(t_hi − t_lo)·(i/(N−1))². `fraction`
    defaults to DDIM's 0.8 on discrete schedules and 1 on continuous ones."""
    frac = (0.8 if schedule.discrete else 1.0) if fraction is None else float(fraction)
    if not 0 < frac <= 1:
        raise UsageError(f"quadratic fraction must be in (0, 1], got {fraction}")
    ramp = np.linspace(0, 1, steps) ** 2
    if schedule.discrete:
        c = math.sqrt(frac * schedule.num_timesteps)
        ts = (np.linspace(0, c, steps) ** 2).astype(np.int64)  # DDIM: int((i·c/(N−1))²)
        if len(np.unique(ts)) < steps:
            raise UsageError(
                f"quadratic spacing repeats timesteps at steps={steps} on T={schedule.num_timesteps}; "
                "use fewer steps"
            )
        return _with_zero(schedule.sigmas[torch.from_numpy(ts[::-1].copy())])
    t_hi = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64)).item()
    t_lo = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64)).item()
    t = t_lo + frac * (t_hi - t_lo) * torch.from_numpy(ramp[::-1].copy())
    return _with_zero(schedule.t_to_sigma(t))
