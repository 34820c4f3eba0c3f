"""Multistep samplers on dx/dσ = (x − D)/σ: LMS, PLMS, iPNDM, UniPC and DEIS.

All five reuse past denoiser outputs instead of extra evaluations, so each costs one network call
per step. In σ-space the VP exponential integrators lose their α factors: with λ = −log σ,
DDIM/DPM-Solver-1 is the Euler step and ρ = σ/α of DEIS is σ itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.samplers.base import SAMPLERS, check_order, denoise, report, slope

# Adams–Bashforth coefficients for equal steps, newest derivative first (Liu et al. 2022, Eq. 12)
AB_COEFFS = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


def step_order(i: int, n: int, order: int, lower_order_final: bool) -> int:
    """Order of step i of n: warm up from 1, and with lower_order_final wind down to 1 at the end."""
    return min(order, i + 1, n - i) if lower_order_final else min(order, i + 1)


def lagrange_weights(nodes: list[float], lo: float, hi: float, log: bool = False) -> list[float]:
    """w_j = ∫_lo^hi L_j(τ) dτ for the Lagrange basis L_j on `nodes` (k-diffusion's LMS); with log,
    the basis lives in u = log τ (nodes are log σ) and ∫ e^u p(u) du = e^u Σ_m (−1)^m p⁽ᵐ⁾(u)
    (DEIS "tAB" in log ρ, Zhang & Chen 2023, Eq. 15)."""
    weights = []
    for j, node in enumerate(nodes):
        others = [n for k, n in enumerate(nodes) if k != j]
        basis = (
            np.polynomial.Polynomial.fromroots(others) if others else np.polynomial.Polynomial(1)
        )
        basis = basis / np.prod([node - n for n in others])
        if not log:
            prim = basis.integ()
            weights.append(float(prim(hi) - prim(lo)))
            continue
        series = sum((-1) ** m * basis.deriv(m) for m in range(len(nodes)))

        def prim(t, series=series):
            return 0.0 if t == 0 else t * float(series(math.log(t)))  # τ·p(log τ) → 0 as τ → 0

        weights.append(prim(hi) - prim(lo))
    return weights


@SAMPLERS.register("lms", order=4, stochastic=False, reversible=True, history=True)
def lms(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, order: int = 4
) -> Tensor:
    """Linear multistep: x' = x + Σ_j (∫ L_j(σ) dσ)·d_j over past d = (x − D)/σ (k-diffusion
    `sample_lms`; diffusers LMSDiscreteScheduler)."""
    check_order(order, 8)
    ds: list[Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = denoise(fn, x, sigmas[i])
        ds = [(x - denoised) / sigmas[i], *ds][:order]
        nodes = [sigmas[i - j].item() for j in range(len(ds))]
        weights = lagrange_weights(nodes, sigmas[i].item(), sigmas[i + 1].item())
        x = x + sum(w * d for w, d in zip(weights, ds))
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


def _pseudo_rk4(fn, x, d1, sigma, sigma_mid, sigma_next) -> Tensor:
    """PNDM's pseudo Runge–Kutta slope: RK4 with the DDIM transfer φ (an Euler step in σ) as the
    update and ε̂ at σ, twice at the half step σ_mid, and at σ_next (Liu et al. 2022, Eq. 11)."""
    d2 = slope(fn, x + (sigma_mid - sigma) * d1, sigma_mid)
    d3 = slope(fn, x + (sigma_mid - sigma) * d2, sigma_mid)
    d4 = slope(fn, x + (sigma_next - sigma) * d3, sigma_next)
    return (d1 + 2 * d2 + 2 * d3 + d4) / 6


def _adams_bashforth(fn, x, sigmas, callback, step_hook, order: int, heun_start: bool,
                     prk_mids: list | None = None) -> Tensor:  # fmt: skip
    """Equal-step Adams–Bashforth on d = (x − D)/σ, warmed up by Heun, by pseudo Runge–Kutta
    steps (one per half-step σ in `prk_mids`) or by lower orders."""
    ds: list[Tensor] = []  # newest first
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(fn, x, sigma)
        ds = [(x - denoised) / sigma, *ds][:order]
        if prk_mids is not None and i < len(prk_mids) and sigma_next > 0:
            d = _pseudo_rk4(fn, x, ds[0], sigma, prk_mids[i], sigma_next)
        elif heun_start and i == 0 and sigma_next > 0:
            # Pseudo improved Euler: average d at both ends (Liu et al. 2022, Eq. 13 / diffusers)
            x_euler = x + (sigma_next - sigma) * ds[0]
            d = (ds[0] + slope(fn, x_euler, sigma_next)) / 2
        else:
            d = sum(c * d for c, d in zip(AB_COEFFS[len(ds) - 1], ds))
        x = x + (sigma_next - sigma) * d
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("plms", order=4, stochastic=False, reversible=True, history=True)
def plms(fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None) -> Tensor:
    """PLMS: 4-step Adams–Bashforth on ε with a pseudo improved Euler first step (Liu et al. 2022,
    Eq. 12–13; diffusers PNDMScheduler with skip_prk_steps=True)."""
    return _adams_bashforth(fn, x, sigmas, callback, step_hook, 4, heun_start=True)


@SAMPLERS.register("pndm", order=4, stochastic=False, reversible=True, history=True)
def pndm(fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None,
         sigma_mids: list[float] | None = None) -> Tensor:  # fmt: skip
    """PNDM: three pseudo Runge–Kutta warm-up steps, then 4-step pseudo linear multistep (Liu et
    al. 2022, Alg. 1; diffusers PNDMScheduler). The warm-up's half steps are at `sigma_mids`
    (one σ per warm-up step; default the log-σ midpoints √(σ_i σ_{i+1}))."""
    n_warm = min(3, len(sigmas) - 1)
    if sigma_mids is None:
        sigma_mids = [(sigmas[i] * sigmas[i + 1]).sqrt() for i in range(n_warm)]
    elif len(sigma_mids) != n_warm:
        raise UsageError(
            f"pndm sigma_mids needs {n_warm} values (one per warm-up step), got {len(sigma_mids)}"
        )
    mids = [torch.as_tensor(m, dtype=sigmas.dtype, device=sigmas.device) for m in sigma_mids]
    return _adams_bashforth(fn, x, sigmas, callback, step_hook, 4, heun_start=False,
                            prk_mids=mids)  # fmt: skip


@SAMPLERS.register("ipndm", order=4, stochastic=False, reversible=True, history=True)
def ipndm(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, order: int = 4
) -> Tensor:
    """Improved PNDM: Adams–Bashforth on d with lower-order warm-up (Zhang & Chen 2023, §4, Eq. 21)."""
    order = check_order(order, 4)
    return _adams_bashforth(fn, x, sigmas, callback, step_hook, order, heun_start=False)


def unipc_update(
    x: Tensor,
    sigma_s: Tensor,
    sigma_t: Tensor,
    history: list[tuple[Tensor, Tensor]],
    order: int,
    variant: str,
    denoised_t: Tensor | None = None,
) -> Tensor:
    """UniP-p (denoised_t None) or UniC-p step s → t on data prediction with B(h) ∈ {h, e^h − 1}
    (Zhao et al. 2023, Algorithms 2–3; `history` is [(σ_k, D_k)], newest = (σ_s, D_s) first)."""
    m0 = history[0][1]
    ratio = sigma_t / sigma_s
    x_t = ratio * x + (1 - ratio) * m0  # first-order (DDIM) part
    if sigma_t == 0 or (order == 1 and denoised_t is None):
        return x_t  # h = ∞ at σ = 0: only the first-order limit x = D is defined
    h = torch.log(sigma_s / sigma_t)  # λ_t − λ_s with λ = −log σ
    hh = -h
    rks = [torch.log(sigma_s / s) / h for s, _ in history[1:order]]  # r_k = (λ_k − λ_s)/h
    d1s = [(m - m0) / r for r, (_, m) in zip(rks, history[1:order])]
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    h_phi_k, factorial = torch.expm1(hh) / hh - 1, 1
    rows, b = [], []
    for k in range(1, order + 1):  # R_p(h)·ρ = g_p(h)/B(h) (Zhao et al. 2023, Eq. 8)
        rows.append(torch.stack([*rks, torch.ones_like(h)]) ** (k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R, b = torch.stack(rows).double(), torch.stack(b).double()
    if denoised_t is None:  # predictor: ρ_p of the order − 1 past differences
        rhos = torch.full((1,), 0.5) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        res = sum(r * d for r, d in zip(rhos, d1s))
    else:  # corrector: includes the new difference D_t − D_s
        rhos = torch.full((1,), 0.5) if order == 1 else torch.linalg.solve(R, b)
        res = sum(r * d for r, d in zip(rhos[:-1], d1s)) + rhos[-1] * (denoised_t - m0)
    return x_t - b_h * res


@SAMPLERS.register("unipc", order=3, stochastic=False, reversible=True, history=True)
def unipc(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
) -> Tensor:
    """UniPC-p: UniP-p predictor then UniC-p corrector reusing the next evaluation, order p + 1
    (Zhao et al. 2023, Algorithm 1, data prediction; diffusers UniPCMultistepScheduler)."""
    check_order(order, 5)
    if variant not in ("bh1", "bh2"):
        raise UsageError(f"unknown unipc variant {variant!r}; choose one of: bh1, bh2")
    n = len(sigmas) - 1
    history: list[tuple[Tensor, Tensor]] = []  # [(σ_k, D_k)], newest first
    x_last = x_pred = x
    last_order = 1
    for i in range(n):
        denoised = denoise(fn, x, sigmas[i])
        if corrector and i > 0:
            x_corr = unipc_update(
                x_last, sigmas[i - 1], sigmas[i], history, last_order, variant, denoised
            )
            # a step_hook's x keeps the pending correction, like the history (history=True)
            x = x_corr if x is x_pred else x + (x_corr - x_pred)
        history = [(sigmas[i], denoised), *history][:order]
        last_order = step_order(i, n, order, lower_order_final)
        x_last = x
        x_pred = unipc_update(x, sigmas[i], sigmas[i + 1], history, last_order, variant)
        x = report(callback, step_hook, i, x_pred, sigmas, denoised)
    return x


@SAMPLERS.register("deis", order=2, stochastic=False, reversible=True, history=True)
def deis(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    order: int = 2,
    lower_order_final: bool = True,
) -> Tensor:
    """DEIS-tAB: x' = x + Σ_j ∫ L_j(log ρ) dρ · ε_j, ε interpolated in log ρ = log σ (Zhang & Chen
    2023, Eq. 15; diffusers DEISMultistepScheduler "logrho", which winds down below 15 steps)."""
    check_order(order, 4)
    n = len(sigmas) - 1
    eps: list[Tensor] = []  # newest first
    for i in range(n):
        sigma = sigmas[i]
        denoised = denoise(fn, x, sigma)
        eps = [(x - denoised) / sigma, *eps][:order]
        k = step_order(i, n, order, lower_order_final and n < 15)
        nodes = [math.log(sigmas[i - j].item()) for j in range(k)]
        weights = lagrange_weights(nodes, sigma.item(), sigmas[i + 1].item(), log=True)
        x = x + sum(w * e for w, e in zip(weights, eps))
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x
