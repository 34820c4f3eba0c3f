"""Score-SDE samplers (Song et al. 2021): predictor–corrector and the adaptive probability-flow ODE.

The score of the σ-space state x = x0 + σε is s = (D − x)/σ². The three forward SDEs differ only
in the native scale a(σ) of x̃ = a(σ)·x and in the diffusion g² of the reverse step:

| sde   | a(σ)            | ᾱ(σ)                  | forward process                    |
|-------|-----------------|-----------------------|------------------------------------|
| ve    | 1               | –                     | x̃ = x0 + σε                       |
| vp    | √ᾱ              | 1/(1+σ²)              | x̃ = √ᾱ·x0 + √(1−ᾱ)·ε             |
| subvp | √ᾱ              | ((√(σ²+4) − σ)/2)²    | x̃ = √ᾱ·x0 + (1−ᾱ)·ε, σ = (1−ᾱ)/√ᾱ |

Sub-VP is therefore expressible with the same σ-space denoiser: its marginal at σ is x0 + σε
rescaled by √ᾱ, only σ ↔ ᾱ differs. Predictor steps are taken on the native x̃ of the chosen SDE
and mapped back, so `sde` picks the discretisation, not the model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.samplers.base import SAMPLERS, denoise, report

SDES = ("ve", "vp", "subvp")
PREDICTORS = ("reverse_diffusion", "euler_maruyama")


def alpha_bar(sigma: Tensor, sde: str) -> Tensor:
    """ᾱ(σ) of the VP (ᾱ = 1/(1+σ²)) or sub-VP (√ᾱ·σ = 1 − ᾱ) process; 1 for VE."""
    if sde == "vp":
        return 1 / (1 + sigma**2)
    if sde == "subvp":
        return ((sigma**2 + 4).sqrt() - sigma) ** 2 / 4
    return torch.ones_like(sigma)


def reverse_coeffs(sigma: Tensor, sigma_next: Tensor, sde: str, predictor: str):
    """(c, G²) of the native reverse step x̃' = c·x̃ + G²·s̃ + G·z (Song et al. 2021, Eq. 6, 46–47)."""
    if sde == "ve":  # f = 0; g²Δt = d(σ²) exactly (reverse diffusion) or 2σΔσ (Euler–Maruyama)
        g2 = (
            sigma**2 - sigma_next**2
            if predictor == "reverse_diffusion"
            else 2 * sigma * (sigma - sigma_next)
        )
        return torch.ones_like(sigma), g2
    a, a_next = alpha_bar(sigma, sde), alpha_bar(sigma_next, sde)
    if sde == "vp" and predictor == "reverse_diffusion":  # discrete chain, β_i = 1 − ᾱ_i/ᾱ_{i−1}
        beta = 1 - a / a_next
        return 2 - (1 - beta).sqrt(), beta
    # Euler–Maruyama with ∫β dt = log(ᾱ'/ᾱ), f = −½β, g² = β (VP) or β(1 − ᾱ²) (sub-VP);
    # sub-VP's reverse diffusion is this step too (score_sde's default SDE.discretize)
    beta_dt = torch.log(a_next / a)
    return 1 + beta_dt / 2, beta_dt * (1 - a**2 if sde == "subvp" else 1)


def predictor_step(fn, x, sigma, sigma_next, noise, sde: str, predictor: str):
    """One predictor step σ → σ_next in σ-space; returns (x', D(x; σ)). No noise is added at σ' = 0."""
    denoised = denoise(fn, x, sigma)
    c, g2 = reverse_coeffs(sigma, sigma_next, sde, predictor)
    scale = alpha_bar(sigma, sde).sqrt()  # a(σ): x̃ = a·x, s̃ = s/a
    scale_next = alpha_bar(sigma_next, sde).sqrt()
    score = (denoised - x) / sigma**2
    x_native = c * scale * x + g2 * score / scale
    if sigma_next > 0:
        x_native = x_native + g2.sqrt() * noise(x)
    return x_native / scale_next, denoised


def langevin_step(fn, x, sigma, noise, snr: float, alpha: Tensor) -> Tensor:
    """Langevin corrector x += ε·s + √(2ε)·z, ε = 2α(r‖z‖/‖s‖)² (Song et al. 2021, Algorithm 5);
    norms are per sample (score_sde averages them over the batch) so samples stay batch-independent.
    A native step ε is the σ-space step ε/a², which the same rule gives since ‖s̃‖ = ‖s‖/a."""
    z = noise(x)
    score = (denoise(fn, x, sigma) - x) / sigma**2
    norm = lambda t: t.reshape(len(t), -1).norm(dim=1).reshape(-1, *([1] * (x.ndim - 1)))  # noqa: E731
    step = 2 * alpha * (snr * norm(z) / norm(score).clamp(min=1e-30)) ** 2
    return x + step * score + (2 * step).sqrt() * z


def _check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise UsageError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")


@SAMPLERS.register("pc", order=1, stochastic=True)
def pc(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    sde: str = "ve",
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    n_corrector: int = 1,
) -> Tensor:
    """Predictor–corrector sampling: n_corrector Langevin steps at σ_i, then a predictor step
    σ_i → σ_{i+1} (Song et al. 2021, Algorithms 1–3; corrector first, as in score_sde)."""
    _check_choice("sde", sde, SDES)
    _check_choice("predictor", predictor, PREDICTORS)
    _check_choice("corrector", corrector, ("langevin", "none"))
    if not snr > 0 or not isinstance(n_corrector, int) or n_corrector < 0:
        raise UsageError(
            f"pc needs snr > 0 and an integer n_corrector >= 0, got {snr}, {n_corrector}"
        )
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # α_i = 1 − β_i = ᾱ_i/ᾱ_{i−1} for VP-type SDEs, 1 for VE (Song et al. 2021, Algorithm 5)
        alpha = alpha_bar(sigma, sde) / alpha_bar(sigma_next, sde) if sde != "ve" else 1.0
        for _ in range(n_corrector if corrector == "langevin" else 0):
            x = langevin_step(fn, x, sigma, noise, snr, alpha)
        x, denoised = predictor_step(fn, x, sigma, sigma_next, noise, sde, predictor)
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("reverse_diffusion", order=1, stochastic=True)
def reverse_diffusion(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, sde: str = "ve"
):
    """Reverse-diffusion predictor alone (Song et al. 2021, Eq. 46–47)."""
    return pc(fn, x, sigmas, noise=noise, callback=callback, step_hook=step_hook, sde=sde,
              corrector="none")  # fmt: skip


@SAMPLERS.register("euler_maruyama", order=1, stochastic=True)
def euler_maruyama(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, sde: str = "ve"
):
    """Euler–Maruyama on the reverse-time SDE alone (Song et al. 2021, Eq. 6)."""
    return pc(fn, x, sigmas, noise=noise, callback=callback, step_hook=step_hook, sde=sde,
              predictor="euler_maruyama", corrector="none")  # fmt: skip


# Dormand–Prince 5(4) tableau (Dormand & Prince 1980): nodes c, stages a, 5th-order weights b
# (= the last stage row, FSAL) and error weights e = b₅ − b₄
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def dopri_interval(slope, x: Tensor, hi: float, lo: float, h, k1, *, rtol, atol, max_steps):
    """Integrate dx/ds = slope(x, s[B]) from s = hi to s = lo (either direction) by Dormand–Prince
    RK45 (Dormand & Prince 1980) with one step size per sample; returns (x, h, k1) so a caller
    can carry the step size and the FSAL slope into the next interval. UsageError past max_steps."""
    bshape = (-1, *([1] * (x.ndim - 1)))
    d = 1.0 if lo > hi else -1.0  # direction of integration
    s = torch.full((x.shape[0],), hi, dtype=torch.float64)  # [B] current s
    h = (
        torch.full_like(s, 0.01 * (lo - hi))
        if h is None
        else d * torch.minimum(d * h, d * (lo - s))
    )
    k1 = slope(x, s) if k1 is None else k1  # FSAL carries over from the previous interval
    for _ in range(max_steps):
        active = d * (lo - s) > 0  # [B]
        if not active.any():
            return x, h, k1
        step = torch.where(active, d * torch.minimum(d * h, d * (lo - s)), torch.zeros_like(h))
        hb = step.reshape(bshape).to(x.dtype)
        ks = [k1]
        for c, a in zip(DP_C[1:], DP_A[1:]):
            ks.append(slope(x + hb * sum(w * k for w, k in zip(a, ks)), s + c * step))
        x_new = x + hb * sum(w * k for w, k in zip(DP_A[-1], ks))
        err = hb * sum(w * k for w, k in zip(DP_E, ks))
        tol = atol + rtol * torch.maximum(x.abs(), x_new.abs())
        ratio = (err / tol).pow(2).reshape(len(x), -1).mean(1).sqrt().double()  # [B] Hairer's norm
        accept = active & (ratio <= 1)  # [B]
        x = torch.where(accept.reshape(bshape), x_new, x)
        k1 = torch.where(accept.reshape(bshape), ks[-1], k1)  # first same as last
        s_next = torch.where(step == lo - s, torch.full_like(s, lo), s + step)
        s = torch.where(accept, s_next, s)
        factor = (0.9 * ratio.clamp(min=1e-10) ** -0.2).clamp(0.2, 5.0)
        h = torch.where(active, step * factor, h)
    raise UsageError(
        f"the adaptive ODE solver did not converge within max_steps={max_steps} steps; "
        "raise max_steps or loosen rtol/atol"
    )


@SAMPLERS.register("ode_adaptive", order=5, stochastic=False, reversible=True)
def ode_adaptive(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10000,
) -> Tensor:
    """Probability-flow ODE dx/dσ = (x − D)/σ (Song et al. 2021, Eq. 13) by Dormand–Prince RK45
    with a step size per sample (so samples stay batch-independent), stopping at every grid σ;
    a final σ = 0 is reached by the exact last Euler step x = D. The callback gets "nfe".
    A "step" (for callback and step_hook) is one grid interval, however many RK45 sub-steps it
    took; a step_hook replacement restarts the step-size control and the FSAL slope."""
    if not (rtol > 0 and atol > 0):
        raise UsageError(f"ode_adaptive needs rtol > 0 and atol > 0, got {rtol}, {atol}")
    bshape = (-1, *([1] * (x.ndim - 1)))
    nfe = 0

    def slope(x: Tensor, sigma: Tensor) -> Tensor:  # (x − D)/σ with σ [B]
        nonlocal nfe
        nfe += 1
        return (x - fn(x, sigma.to(x.dtype))) / sigma.reshape(bshape).to(x.dtype)

    def end_step(i: int, x: Tensor, denoised: Tensor) -> Tensor:
        cb = None if callback is None else (lambda info: callback({**info, "nfe": nfe}))
        return report(cb, step_hook, i, x, sigmas, denoised)

    h, k1 = None, None
    for i in range(len(sigmas) - 1):
        lo, hi = sigmas[i + 1].item(), sigmas[i].item()  # integrate from hi to lo (either way)
        if lo == 0:  # exact last step to σ = 0: x + (0 − σ)·(x − D)/σ = D
            x = denoised = denoise(fn, x, sigmas[i])
            nfe += 1
            x = end_step(i, x, denoised)
            continue
        x_next, h, k1 = dopri_interval(
            slope, x, hi, lo, h, k1, rtol=rtol, atol=atol, max_steps=max_steps
        )
        x = end_step(i, x_next, x_next - sigmas[i + 1] * k1)
        if x is not x_next:  # replaced by step_hook: the FSAL slope and step size are stale
            h, k1 = None, None
    return x
