"""DPM-Solver family in σ-space with the data (x̂0) prediction: DPM2, DPM-Solver, DPM-Solver++.

In σ-space (x = x0 + σε) the VP quantities are α = 1/√(1+σ²), σ_VP = σα, so the half log-SNR is
λ = log(α/σ_VP) = −log σ and e^{−h} = σ_next/σ for a step h = λ_next − λ. The data-prediction
exponential integrator (Lu et al. 2022b, Eq. 9, divided by α_t) is then

    x_next = e^{−ĥ}·x + c1(ĥ)·D0 + c2(ĥ)·D1 + c3(ĥ)·D2,      ĥ = (1+η)·h

with D0 = x̂0, D1 ≈ h·x̂0', D2 ≈ h²·x̂0''/2 finite differences in λ, η = 0 for the ODE and η > 0 for
the SDE variant (diffusers "sde-dpmsolver++" is η = 1), which adds σ_next·√(1 − e^{−2ηh})·z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.samplers.base import SAMPLERS, check_order, denoise, report, slope
from difflab.samplers.euler import ancestral_sigmas

LOWER_ORDER_BELOW = 15  # diffusers: lower_order_final only acts on grids of fewer steps


def lam(sigma: Tensor) -> Tensor:
    """λ = −log σ: the half log-SNR log(α/σ_VP) of σ-space (Lu et al. 2022a, §3.1)."""
    return -sigma.log()


def ei_weights(h_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """c_k = h^{1−k}∫₀ʰ a·e^{−au}(h−u)^{k−1} du, ĥ = ah: weights of D0, D1, D2 (Lu 2022b, Eq. 9).

    c3 ≈ ĥ/3 is the exact weight of D2 ≈ h²x̂0''/2; diffusers' 3M uses half of it (only order 2).
    """
    em1 = torch.expm1(-h_hat)  # e^{−ĥ} − 1
    c1 = -em1
    c2 = 1 + em1 / h_hat
    c3 = 1 - 2 / h_hat - 2 * em1 / h_hat**2
    return c1, c2, c3


def ei_step(
    x: Tensor,
    sigma: Tensor,
    sigma_next: Tensor,
    d0: Tensor,
    d1: Tensor | None = None,
    d2: Tensor | None = None,
    *,
    eta: float = 0.0,
    midpoint: bool = False,
) -> Tensor:
    """x_next = e^{−ĥ}x + c1·D0 + c2·D1 + c3·D2 (Lu et al. 2022b, Eq. 9); `midpoint`: D1 weight c1/2
    (the "midpoint" solver_type of DPM-Solver-2 / 2M, Lu et al. 2022a, Alg. 1)."""
    h_hat = (1 + eta) * (lam(sigma_next) - lam(sigma))  # inf when σ_next = 0
    c1, c2, c3 = ei_weights(h_hat)
    x = torch.exp(-h_hat) * x + c1 * d0
    if d1 is not None:
        x = x + (c1 / 2 if midpoint else c2) * d1
    if d2 is not None:
        x = x + c3 * d2
    return x


def sde_noise(x: Tensor, sigma: Tensor, sigma_next: Tensor, noise, eta: float, s_noise: float):
    """Add the SDE-DPM-Solver++ noise σ_next·√(1 − e^{−2ηh})·s_noise·z unless η or σ_next is 0."""
    if eta == 0 or sigma_next == 0:
        return x
    h = lam(sigma_next) - lam(sigma)
    return x + sigma_next * (-torch.expm1(-2 * eta * h)).sqrt() * s_noise * noise(x)


# ---- DPM2 and DPM-Solver++(2S): midpoint steps in log σ, optionally ancestral -----------------


def dpm2_step(fn, x: Tensor, sigma: Tensor, sigma_to: Tensor, denoised: Tensor) -> Tensor:
    """Euler to σ_mid = √(σ·σ_to), then the full step with the slope there (k-diffusion DPM2)."""
    d = (x - denoised) / sigma
    if sigma_to == 0:
        return x - sigma * d  # Euler to σ = 0: the denoised estimate
    sigma_mid = (sigma * sigma_to).sqrt()
    x_mid = x + (sigma_mid - sigma) * d
    d_mid = slope(fn, x_mid, sigma_mid)
    return x + (sigma_to - sigma) * d_mid


def dpmpp_2s_step(fn, x: Tensor, sigma: Tensor, sigma_to: Tensor, denoised: Tensor) -> Tensor:
    """DPM-Solver++(2S), r = 1/2: first order to λ_mid, then to λ_to with x̂0 there (Lu 2022b)."""
    if sigma_to == 0:
        return denoised
    sigma_mid = (sigma * sigma_to).sqrt()
    x_mid = ei_step(x, sigma, sigma_mid, denoised)
    return ei_step(x, sigma, sigma_to, denoise(fn, x_mid, sigma_mid))


def ancestral_loop(
    fn, x, sigmas, noise, callback, step_hook, step, eta: float, s_noise: float
) -> Tensor:
    """Deterministic `step` to σ_down, then noise of std σ_up (k-diffusion's ancestral form)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(fn, x, sigmas[i])
        down, up = ancestral_sigmas(sigmas[i], sigmas[i + 1], eta)
        x = step(fn, x, sigmas[i], down, denoised)
        if sigmas[i + 1] > 0 and up > 0:
            x = x + noise(x) * s_noise * up
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("dpm2", order=2, stochastic=False, reversible=True)
def dpm2(fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None) -> Tensor:
    """DPM-Solver-2 (r = 1/2) on dx/dσ, midpoint in log σ (Lu et al. 2022a, Alg. 1; k-diffusion)."""
    return ancestral_loop(fn, x, sigmas, noise, callback, step_hook, dpm2_step, 0.0, 1.0)


@SAMPLERS.register("dpm2_ancestral", order=2, stochastic=True)
def dpm2_ancestral(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM2 step to σ_down, then noise of std σ_up (k-diffusion sample_dpm_2_ancestral)."""
    return ancestral_loop(fn, x, sigmas, noise, callback, step_hook, dpm2_step, eta, s_noise)


@SAMPLERS.register("dpmpp_2s_ancestral", order=2, stochastic=True)
def dpmpp_2s_ancestral(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2S) to σ_down, then noise of std σ_up (Lu et al. 2022b, Alg. 1; k-diffusion)."""
    return ancestral_loop(fn, x, sigmas, noise, callback, step_hook, dpmpp_2s_step, eta, s_noise)


# ---- DPM-Solver (singlestep): groups of 1, 2 or 3 grid steps -----------------------------------


def singlestep_orders(steps: int, order: int, lower_order_final: bool, to_zero: bool) -> list[int]:
    """Stage index of each grid step; a run 1, .., k is one order-k step (diffusers get_order_list).

    `lower_order_final` splits a full last group so the final step is first order; a step into
    σ = 0 is always first order (λ = ∞ there), which also makes the split moot on such grids.
    """
    full, rest = divmod(steps, order)
    cycle = list(range(1, order + 1))
    if lower_order_final and rest == 0:
        orders = cycle * (full - 1) + cycle[: order - 1] + [1]
    else:
        orders = cycle * full + cycle[:rest]
    if to_zero:
        orders[-1] = 1
    return orders


@SAMPLERS.register("dpm_solver", order=2, stochastic=False, reversible=True)
def dpm_solver(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    order: int = 2,
    lower_order_final: bool = False,
) -> Tensor:
    """Singlestep DPM-Solver-k with x̂0 (= DPM-Solver++(kS)), intermediate points on the grid
    (Lu et al. 2022a, Alg. 1–2; Lu et al. 2022b; diffusers DPMSolverSinglestep, midpoint)."""
    check_order(order, 3)
    n = len(sigmas) - 1
    to_zero = bool(sigmas[-1] == 0)
    orders = singlestep_orders(n, order, lower_order_final, to_zero)
    for i in range(n):
        if orders[i] == 1:  # a new group starts at grid point i
            start, x_s, outputs = i, x, []
        denoised = denoise(fn, x, sigmas[i])
        outputs.append(denoised)
        sigma_s, sigma_next = sigmas[start], sigmas[i + 1]
        d1 = None  # stage 1: first-order step from the group's start
        if orders[i] > 1:  # stage 2: DPM-Solver-2 (midpoint); 3: DPM-Solver-3, last stage's slope
            r = (lam(sigmas[i]) - lam(sigma_s)) / (lam(sigma_next) - lam(sigma_s))  # stage position
            d1 = (denoised - outputs[0]) / r  # ≈ h·x̂0'
        x_next = ei_step(x_s, sigma_s, sigma_next, outputs[0], d1, midpoint=orders[i] == 2)
        x = report(callback, step_hook, i, x_next, sigmas, denoised)
        if x is not x_next and i + 1 < n:  # replaced by step_hook: a fresh grid from the new x
            orders[i + 1 :] = singlestep_orders(n - i - 1, order, lower_order_final, to_zero)
    return x


# ---- DPM-Solver++ multistep (2M, 3M) and its SDE variants --------------------------------------


def multistep_orders(steps: int, order: int, lower_order_final: bool, to_zero: bool) -> list[int]:
    """Order of each step: warm-up 1, 2, ..; first order into σ = 0; diffusers lower_order_final."""
    orders = [min(order, i + 1) for i in range(steps)]
    short = lower_order_final and steps < LOWER_ORDER_BELOW
    if steps >= 2 and short:
        orders[-2] = min(orders[-2], 2)
    if to_zero or short:
        orders[-1] = 1
    return orders


def multistep_differences(lams: list[Tensor], outputs: list[Tensor], h: Tensor, k: int):
    """(D1, D2) ≈ (h·x̂0', h²·x̂0''/2) from the last k outputs (Lu et al. 2022b, Alg. 2)."""
    if k == 1:
        return None, None
    m0, m1 = outputs[-1], outputs[-2]
    r0 = (lams[-1] - lams[-2]) / h
    d1_0 = (m0 - m1) / r0
    if k == 2:
        return d1_0, None
    r1 = (lams[-2] - lams[-3]) / h
    d1_1 = (m1 - outputs[-3]) / r1
    return d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)


def multistep(
    fn, x, sigmas, noise, callback, step_hook, order: int, eta: float, s_noise: float,
    lower_order_final: bool,
) -> Tensor:  # fmt: skip
    """DPM-Solver++(kM); η > 0: its SDE variant (Lu et al. 2022b, Alg. 2; diffusers multistep)."""
    n = len(sigmas) - 1
    orders = multistep_orders(n, order, lower_order_final, bool(sigmas[-1] == 0))
    lams, outputs = [], []
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(fn, x, sigma)
        lams, outputs = (lams + [lam(sigma)])[-order:], (outputs + [denoised])[-order:]
        h = lam(sigma_next) - lam(sigma)
        d1, d2 = multistep_differences(lams, outputs, h, orders[i])
        x_next = ei_step(x, sigma, sigma_next, denoised, d1, d2, eta=eta, midpoint=orders[i] == 2)
        x = sde_noise(x_next, sigma, sigma_next, noise, eta, s_noise)
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("dpmpp_2m", order=2, stochastic=False, reversible=True, history=True)
def dpmpp_2m(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(2M), midpoint form (Lu et al. 2022b, Alg. 2)."""
    return multistep(fn, x, sigmas, noise, callback, step_hook, 2, 0.0, 1.0, lower_order_final)


@SAMPLERS.register("dpmpp_3m", order=3, stochastic=False, reversible=True, history=True)
def dpmpp_3m(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    lower_order_final: bool = True,
) -> Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022b, Alg. 2 on three outputs); exact D2 weight c3, not c3/2."""
    return multistep(fn, x, sigmas, noise, callback, step_hook, 3, 0.0, 1.0, lower_order_final)


@SAMPLERS.register("dpmpp_2m_sde", order=2, stochastic=True, history=True)
def dpmpp_2m_sde(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    lower_order_final: bool = True,
) -> Tensor:
    """SDE-DPM-Solver++(2M), midpoint; η = 1 is diffusers' sde-dpmsolver++ (Lu et al. 2022b)."""
    return multistep(fn, x, sigmas, noise, callback, step_hook, 2, eta, s_noise, lower_order_final)


@SAMPLERS.register("dpmpp_3m_sde", order=3, stochastic=True, history=True)
def dpmpp_3m_sde(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    lower_order_final: bool = True,
) -> Tensor:
    """SDE-DPM-Solver++(3M) (Lu et al. 2022b); η = 1: sde-dpmsolver++ order 3, exact D2 weight.

    diffusers weighs D2 there by (1 − e^{−2h} − 2h)/(2h)² − 1/2 ≈ −1 instead of c3(2h) ≈ 2h/3.
    """
    return multistep(fn, x, sigmas, noise, callback, step_hook, 3, eta, s_noise, lower_order_final)
