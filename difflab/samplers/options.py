"""One-line meanings of the samplers' user options (`base.sampler_options`), for listings.

A key "sampler.option" overrides "option" where one name means different things to two samplers;
every user option of every registered sampler has a meaning (tests/test_sampler_contract.py).
"""

from __future__ import annotations

from difflab.samplers.base import sampler_options

OPTION_HELP = {
    "eta": "ancestral noise fraction η: 0 = deterministic, 1 = full ancestral step",
    "ddim.eta": "DDIM η (Song et al. 2021, Eq. 16): 0 = deterministic DDIM, 1 = DDPM-like",
    "s_noise": "scale of the fresh noise, S_noise (Karras et al. 2022, Alg. 2)",
    "s_churn": "stochasticity S_churn: noise re-added per step (0 = deterministic Heun)",
    "s_tmin": "add churn only for σ >= s_tmin",
    "s_tmax": "add churn only for σ <= s_tmax",
    "order": "solver order (more = more accurate per step, less stable with few steps)",
    "lower_order_final": "drop to lower order in the last steps (stabler with few steps)",
    "variance": "reverse-step variance: small (β̃), large (β) or learned (default: the head)",
    "sigma_min": "the model's smallest σ: re-noise to √(σ² − sigma_min²) (Song et al. 2023)",
    "sde": "the SDE the model is read as: ve, vp or subvp (Song et al. 2021)",
    "predictor": "predictor step: reverse_diffusion or euler_maruyama",
    "corrector": "corrector step: langevin or none",
    "unipc.corrector": "apply the UniC corrector after each predictor step",
    "snr": "Langevin corrector's signal-to-noise ratio r (Song et al. 2021, Alg. 5)",
    "n_corrector": "Langevin corrector steps per noise level",
    "variant": "UniPC's B(h): bh1 or bh2 (Zhao et al. 2023)",
    "sigma_mids": "σ of the warm-up half steps (default: geometric means of the grid's pairs)",
    "rtol": "relative tolerance of the adaptive RK45 step",
    "atol": "absolute tolerance of the adaptive RK45 step",
    "max_steps": "RK45 step budget (an error when exceeded)",
}


def option_help(name: str, option: str) -> str | None:
    """The one-line meaning of sampler `name`'s `option`, or None when it has none."""
    return OPTION_HELP.get(f"{name}.{option}", OPTION_HELP.get(option))


def describe_options(name: str) -> list[tuple[str, object, str]]:
    """(option, default, meaning) for each user option of sampler `name`."""
    return [(k, v, option_help(name, k) or "") for k, v in sampler_options(name).items()]
