"""A diffusers scheduler config ↔ difflab's schedule, parameterization and sampling defaults.

The training schedule (`beta_schedule`, `num_train_timesteps`, `rescale_betas_zero_snr`) becomes a
difflab DiscreteVP schedule, `prediction_type` a parameterization; the scheduler class picks the
default sampler and its `timestep_spacing` / `steps_offset` the "diffusers" discretization, which
reproduces each scheduler family's timesteps (DDIM/DDPM, Euler, DPM-Solver multistep differ).
Options that change the model's meaning and have no difflab counterpart are a UsageError.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schedules import DISCRETIZATIONS, Schedule, respaced_timesteps

BETAS = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SPACINGS = ("leading", "trailing", "linspace")
# scheduler class → (difflab sampler, timestep family, diffusers' default timestep_spacing)
SAMPLERS = {
    "DDIMScheduler": ("ddim", "ddim", "leading"),
    "DDPMScheduler": ("ddpm", "ddim", "leading"),
    "PNDMScheduler": ("plms", "ddim", "leading"),
    "EulerDiscreteScheduler": ("euler", "euler", "linspace"),
    "EulerAncestralDiscreteScheduler": ("euler_ancestral", "euler", "linspace"),
    "HeunDiscreteScheduler": ("heun", "euler", "linspace"),
    "LMSDiscreteScheduler": ("lms", "euler", "linspace"),
    "DPMSolverMultistepScheduler": ("dpmpp_2m", "dpm", "linspace"),
    "UniPCMultistepScheduler": ("unipc", "dpm", "linspace"),
}
FAMILIES = ("ddim", "euler", "dpm")
CLASS_OF = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
            "dpmpp_2m": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler"}  # fmt: skip


def unsupported(config: dict) -> list[str]:
    """The options of a scheduler config that difflab cannot reproduce, as `key=value`."""
    bad = {
        "beta_schedule": config.get("beta_schedule", "linear") not in BETAS,
        "prediction_type": config.get("prediction_type", "epsilon") not in PREDICTIONS,
        "timestep_spacing": config.get("timestep_spacing", "leading") not in SPACINGS,
        "trained_betas": config.get("trained_betas") is not None,
        "thresholding": bool(config.get("thresholding")),
        "use_exponential_sigmas": bool(config.get("use_exponential_sigmas")),
        "use_beta_sigmas": bool(config.get("use_beta_sigmas")),
        "timestep_type": config.get("timestep_type", "discrete") != "discrete",
        "clip_sample_range": bool(config.get("clip_sample"))
        and config.get("clip_sample_range", 1.0) != 1.0,
        "variance_type": str(config.get("variance_type") or "fixed_small").startswith("learned"),
    }
    return [f"{k}={config.get(k)!r}" for k, flag in bad.items() if flag]


def translate_scheduler(config: dict) -> tuple[dict, str, dict, list[str]]:
    """(schedule spec, parameterization, sample section, notes) of a scheduler config."""
    bad = unsupported(config)
    if bad:
        raise UsageError(
            f"scheduler config option(s) {', '.join(bad)} have no difflab counterpart; edit "
            "scheduler/scheduler_config.json (beta_schedule linear/scaled_linear/"
            "squaredcos_cap_v2, prediction_type epsilon/v_prediction/sample, timestep_spacing "
            "leading/trailing/linspace, thresholding false)"
        )
    T = int(config.get("num_train_timesteps", 1000))
    name = BETAS[config.get("beta_schedule", "linear")]
    schedule = {"name": name, "T": T}
    if name != "cosine":
        schedule |= {"beta_start": float(config.get("beta_start", 1e-4)),
                     "beta_end": float(config.get("beta_end", 0.02))}  # fmt: skip
    if config.get("rescale_betas_zero_snr"):
        schedule["zero_snr"] = True
    cls = config.get("_class_name", "DDPMScheduler")
    notes = []
    if cls not in SAMPLERS:
        notes.append(f"scheduler {cls} has no difflab twin; default sampler euler")
    sampler, family, spacing = SAMPLERS.get(cls, ("euler", "euler", "linspace"))
    sampler = {"name": sampler}
    if cls == "DPMSolverMultistepScheduler":
        order, algo = (
            int(config.get("solver_order", 2)),
            config.get("algorithm_type", "dpmsolver++"),
        )
        sampler["name"] = {(2, "sde-dpmsolver++"): "dpmpp_2m_sde", (3, "dpmsolver++"): "dpmpp_3m"
                           }.get((order, algo), "dpmpp_2m")  # fmt: skip
        sampler["lower_order_final"] = bool(config.get("lower_order_final", True))
    final = "zero"
    if config.get("set_alpha_to_one") is False or config.get("final_sigmas_type") == "sigma_min":
        final = "sigma_min"  # the last step lands on t = 0, not on x̂0
    discretization = {"name": "diffusers", "family": family, "final": final,
                      "spacing": config.get("timestep_spacing", spacing),
                      "offset": int(config.get("steps_offset", 0))}  # fmt: skip
    if config.get("use_karras_sigmas"):
        discretization = {"name": "karras"}
    guidance = ["static_threshold"] if config.get("clip_sample", cls in ("DDIMScheduler",
                                                   "DDPMScheduler")) else []  # fmt: skip
    sample = {"sampler": sampler, "steps": 50, "discretization": discretization,
              "guidance": guidance}  # fmt: skip
    return schedule, PREDICTIONS[config.get("prediction_type", "epsilon")], sample, notes


def family_timesteps(T: int, steps: int, family: str, spacing: str, offset: int) -> np.ndarray:
    """Decreasing (possibly fractional) timesteps of a diffusers scheduler family's
    `set_timesteps` (Lin et al. 2024, Table 2 spacings; DPM-Solver takes steps + 1 points)."""
    if family not in FAMILIES:
        raise UsageError(
            f"unknown timestep family {family!r}; choose one of: {', '.join(FAMILIES)}"
        )
    if spacing not in SPACINGS:
        raise UsageError(f"unknown spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if family == "euler" and spacing == "linspace":
        return np.linspace(0, T - 1, steps)[::-1].copy()  # fractional: σ interpolated in σ
    if family != "dpm" or spacing == "trailing":
        return respaced_timesteps(T, steps, spacing, offset).astype(np.float64)
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].copy()
    ratio = T // (steps + 1)
    return (np.arange(steps + 1) * ratio).round()[::-1][:-1] + offset


@DISCRETIZATIONS.register("diffusers")
def diffusers_grid(schedule: Schedule, steps: int, *, family: str = "euler",
                   spacing: str = "leading", offset: int = 0, final: str = "zero") -> Tensor:  # fmt: skip
    """σ at a diffusers scheduler's timesteps (linear in σ between integer steps, like its
    np.interp), ending at 0 or, with `final`="sigma_min", at σ(t=0) (DDIM set_alpha_to_one=False,
    final_sigmas_type="sigma_min")."""
    if not getattr(schedule, "discrete", False):
        raise UsageError("discretization 'diffusers' needs a discrete (DDPM-style) schedule")
    if final not in ("zero", "sigma_min"):
        raise UsageError(f"unknown final {final!r}; choose one of: zero, sigma_min")
    ts = family_timesteps(schedule.num_timesteps, steps, family, spacing, offset)
    table = schedule.sigmas.numpy()
    sigmas = torch.from_numpy(np.interp(ts, np.arange(len(table)), table))
    last = 0.0 if final == "zero" or sigmas[-1] <= table[0] else table[0]
    return torch.cat([sigmas.double(), torch.tensor([last], dtype=torch.float64)])


def export_scheduler(model: dict, sample: dict) -> dict:
    """A diffusers scheduler config for a difflab model config (schedule + parameterization) and
    its default sampler; what does not map is a UsageError naming it."""
    spec = model["schedule"] if isinstance(model["schedule"], dict) else {"name": model["schedule"]}
    names = {v: k for k, v in BETAS.items()}
    predictions = {v: k for k, v in PREDICTIONS.items()}
    if spec["name"] not in names:
        raise UsageError(
            f"schedule {spec['name']!r} has no diffusers scheduler config (diffusers' DDPM-family "
            f"schedulers take: {', '.join(sorted(names))})"
        )
    if model["parameterization"] not in predictions:
        raise UsageError(
            f"parameterization {model['parameterization']!r} has no diffusers prediction_type "
            f"(it has: {', '.join(sorted(predictions))})"
        )
    if spec["name"] == "cosine" and (spec.get("s", 0.008), spec.get("max_beta", 0.999)) != (
        0.008, 0.999,
    ):  # fmt: skip
        raise UsageError("cosine schedule options s / max_beta differ from squaredcos_cap_v2's")
    from difflab.core.schedules import build_schedule

    schedule = build_schedule(spec)
    betas = schedule.betas.numpy()
    sampler = (sample.get("sampler") or {}).get("name", "euler")
    disc = sample.get("discretization") or {}
    config = {
        "_class_name": CLASS_OF.get(sampler, "EulerDiscreteScheduler"),
        "num_train_timesteps": int(schedule.num_timesteps),
        "beta_schedule": names[spec["name"]],
        "beta_start": float(spec.get("beta_start", betas[0] if spec["name"] != "cosine" else 1e-4)),
        "beta_end": float(spec.get("beta_end", betas[-1] if spec["name"] != "cosine" else 0.02)),
        "prediction_type": predictions[model["parameterization"]],
        "rescale_betas_zero_snr": bool(spec.get("zero_snr", False)),
        "timestep_spacing": disc.get("spacing", "trailing"),
        "steps_offset": int(disc.get("offset", 0)),
        "clip_sample": False,
        "set_alpha_to_one": True,
        "use_karras_sigmas": disc.get("name") == "karras",
    }
    if spec["name"] == "scaled_linear":
        config["beta_start"] = float(spec.get("beta_start", 0.00085))
        config["beta_end"] = float(spec.get("beta_end", 0.012))
    return config
