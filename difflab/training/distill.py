"""Few-step students of a diffusion teacher, trained by the one loop: progressive distillation
round after round, consistency distillation, consistency training (ECT-initialised).

The student is an ordinary checkpoint whose config's `sample` section holds its default few-step
sampler, grid and steps, so `difflab sample`, `eval` and `difflab.load` use it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from difflab.core.config import Config, apply_overrides, from_dict
from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule
from difflab.storage import checkpoint as ckpt
from difflab.training.loop import train

METHODS = {"progressive": "progressive", "cd": "consistency_distillation",
           "ct": "consistency_training"}  # fmt: skip


def _teacher_sigma_max(config: dict) -> float:
    """σ_max of the teacher's sampling grid (its discretization's `sigma_max`, else the schedule's)."""
    grid = config["sample"].get("discretization") or {}
    if "sigma_max" in grid:
        return float(grid["sigma_max"])
    return build_schedule(config["model"]["schedule"]).sigma_max


def student_config(
    teacher: str | Path, method: str, *, steps: int | None = None, init: bool = True,
    overrides: Sequence[str] = (),
) -> Config:  # fmt: skip
    """The student's run config: the teacher's data, model and train sections (the model with the
    consistency parameterization for cd/ct), `train.loss` = the method's objective, and a `sample`
    section with the student's few-step defaults; `overrides` ("train.steps=200") come last.
    `steps`: progressive, the teacher's steps this round (default: its config's `sample.steps`),
    the student takes half; cd/ct, the student's default sampling steps (default 1)."""
    if method not in METHODS:
        raise UsageError(f"unknown distillation `method` {method!r}; choose one of: cd, ct, "
                         "progressive")  # fmt: skip
    path = ckpt.resolve_model_path(Path(teacher)).resolve()
    _, config, _ = ckpt.load_model_file(path)
    data = {k: dict(v) for k, v in config.items()}
    sigma_max = _teacher_sigma_max(config)
    grid = {"name": "few_step", "sigma_max": sigma_max}
    if method == "progressive":
        n = int(config["sample"]["steps"] if steps is None else steps)
        if n < 2 or n % 2:
            raise UsageError(
                f"progressive distillation halves an even number of teacher steps, got {n}; "
                "pass `steps` = an even number of teacher steps"
            )
        data["train"]["loss"] = {"name": "progressive", "teacher": str(path), "teacher_steps": n,
                                 "discretization": grid, "init": init}  # fmt: skip
        data["sample"] |= {"sampler": {"name": "ddim"}, "steps": n // 2, "discretization": grid}
    else:
        data["model"]["parameterization"] = "consistency"
        sigma_min = build_schedule(config["model"]["schedule"]).sigma_min
        loss = {"name": METHODS[method], "sigma_max": sigma_max}
        if method == "cd" or init:  # cd always needs it; ct only starts from it (ECT)
            loss["teacher"] = str(path)
        if method == "cd":
            loss["init"] = init
        data["train"]["loss"] = loss
        data["sample"] |= {"sampler": {"name": "consistency", "sigma_min": sigma_min},
                           "steps": 1 if steps is None else int(steps), "discretization": grid}  # fmt: skip
    data = apply_overrides(data, list(overrides))
    if method == "ct" and "K" not in data["train"]["loss"]:
        data["train"]["loss"]["K"] = data["train"]["steps"]  # the curriculum spans the run
    return from_dict(data).validate()


def finished(run: Path, steps: int) -> Path | None:
    """The run's final model checkpoint when it reached `steps`, else None."""
    last = ckpt.latest_checkpoint(run) if run.is_dir() else None
    if last is not None and ckpt.read_metadata(last).get("info", {}).get("step") == steps:
        return last
    return None


def distill(
    teacher: str | Path, out: str | Path, method: str, *, rounds: int = 1,
    steps: int | None = None, init: bool = True, overrides: Sequence[str] = (),
    resume: bool = False, callback: Callable | None = None,
) -> Path:  # fmt: skip
    """Train the student(s); returns the last student's checkpoint. Progressive distillation runs
    `rounds` rounds in out/round-1, out/round-2, ... (each a resumable run whose teacher is the
    previous round's student, halving the steps each time); with `resume` finished rounds are
    kept and the newest one continues. callback as in `difflab.training.loop.train`, plus
    {"note"} at the start of each round."""
    out, callback = Path(out), callback or (lambda record: None)
    if not isinstance(rounds, int) or rounds < 1 or (rounds > 1 and method != "progressive"):
        raise UsageError(
            f"`rounds` must be 1 for {method!r} and >= 1 for progressive, got {rounds!r}"
        )
    if method != "progressive":
        cfg = student_config(teacher, method, steps=steps, init=init, overrides=overrides)
        return train(cfg, out, resume=resume, callback=callback)
    current = teacher
    for r in range(1, rounds + 1):
        cfg = student_config(current, method, steps=steps, init=init, overrides=overrides)
        n = cfg.sample.steps
        run = out / f"round-{r}"
        done = finished(run, cfg.train.steps) if resume else None
        callback({"note": f"round {r}/{rounds}: {2 * n} teacher steps -> {n} student steps"
                          + (" (done)" if done else "")})  # fmt: skip
        current = done or train(cfg, run, resume=resume and run.exists(), callback=callback)
        steps = n
    return Path(current)
