"""Cascaded diffusion (Ho et al. 2021, "CDM"): a base model, then super-resolution stages, as one model.

    cascade = difflab.load_cascade(["runs/base16", "runs/sr32"])     # or a cascade TOML file
    images = cascade(16, seed=0, classes=[3], stages=[{}, {"steps": 10, "aug_level": 0.1}])

Stage k+1 is an image model with cond source "lowres" whose low-resolution input is stage k's
output size. Stage k's samples (float pixels) condition stage k+1; with noise-conditioning
augmentation the SR stage sees them noised to its `aug_level` (CDM §3.2 non-truncated), or, with
`truncate=True`, stage k's reverse process stops at σ = aug_level and its noisy state z_s is the
condition as it is (CDM §3.2 truncated). A cascade TOML lists the stage checkpoints:

    truncate = false
    [[stages]]
    model = "runs/base16"          # relative to the TOML file
    steps = 20
    [[stages]]
    model = "runs/sr32"
    sampler = "dpmpp_2m"
    aug_level = 0.1
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from difflab.core.config import tomllib
from difflab.core.errors import UsageError
from difflab.core.imageio import pixels_to_uint8
from difflab.core.schedules import discretize
from difflab.inference.pipeline import Pipeline, load

STAGE_OPTIONS = ("sampler", "steps", "discretization", "guidance", "aug_level")
STAGE_SEEDS = 2**20  # stage k draws sample i's noise from seed + k·2²⁰ + i (independent stages)


def check_chain(stages: Sequence[Pipeline]) -> None:
    """UsageError unless each stage after the first is a lowres image model whose low-res
    input is the previous stage's output size."""
    if not stages:
        raise UsageError("a cascade needs at least one stage; pass the base model first")
    for k in range(1, len(stages)):
        prev, pipe = stages[k - 1], stages[k]
        c = pipe.conditioner
        if getattr(c, "source", None) != "lowres":
            raise UsageError(
                f"cascade stage {k + 1} is not a super-resolution model (it {pipe_summary(pipe)}); "
                'every stage after the first must be trained with cond = {name = "image", '
                'source = "lowres"}'
            )
        C, H, W = pipe.image_shape
        low = [C, H // c.factor, W // c.factor]
        if list(prev.image_shape) != low:
            raise UsageError(
                f"cascade stage {k} makes {list(prev.image_shape)} images but stage {k + 1} takes "
                f"low-resolution {low} inputs ({c.factor}× below {[C, H, W]}); order the stages "
                "base → SR so each output size is the next stage's input size"
            )


def pipe_summary(pipe: Pipeline) -> str:
    c = pipe.conditioner
    if c is None:
        return "is unconditional"
    return f"has image source {c.source!r}" if hasattr(c, "source") else c.summary


def _stage_options(options: Mapping, k: int) -> dict:
    bad = sorted(set(options) - set(STAGE_OPTIONS))
    if bad:
        raise UsageError(f"cascade stage {k + 1} option(s) {bad} unknown; choose from "
                         + ", ".join(STAGE_OPTIONS))  # fmt: skip
    if k == 0 and options.get("aug_level"):
        raise UsageError("`aug_level` is an option of the SR stages; drop it from stage 1")
    return dict(options)


class Cascade:
    """Pipelines base → SR → … sampled as one model; `__call__` gives the final uint8 images."""

    def __init__(self, stages: Sequence[Pipeline], options: Sequence[Mapping] = (),
                 truncate: bool = False):  # fmt: skip
        check_chain(stages)
        self.stages = list(stages)
        self.options = [_stage_options(o, k) for k, o in enumerate(options)]
        self.options += [{} for _ in range(len(stages) - len(self.options))]
        self.truncate = bool(truncate)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.stages[-1].image_shape

    def to(self, device: str | torch.device) -> Cascade:
        for pipe in self.stages:
            pipe.to(device)
        return self

    def _truncated_grid(self, pipe: Pipeline, opts: dict, level: float) -> Tensor:
        """The stage's σ grid stopped at σ = level (CDM §3.2 truncated conditioning)."""
        if pipe.config["model"].get("codec") not in (None, {}, {"name": "identity"}):
            raise UsageError("`truncate=True` needs pixel-space stages; use truncate=False")
        s = pipe.settings(steps=opts.get("steps"), discretization=opts.get("discretization"))
        grid = discretize(pipe.denoiser.schedule, s.discretization, s.steps).double()
        return torch.cat([grid[grid > level], grid.new_tensor([level])])

    def sample(
        self,
        n: int | None = None,
        *,
        seed: int | None = None,
        classes: Sequence[int] = (),
        prompts: Sequence[str] = (),
        stages: Sequence[Mapping] = (),
        truncate: bool | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> list[Tensor]:
        """Each stage's samples as float pixels [n, C, H_k, W_k] in [-1, 1] (CPU), base first
        (a truncated stage gives its noisy state at σ = the next stage's aug_level).

        `stages` [{sampler, steps, discretization, guidance, aug_level}, ...] update the
        cascade's per-stage options; `classes` and `prompts` go to the base stage; sample i
        depends on seed + i only."""
        truncate = self.truncate if truncate is None else truncate
        extra = [*stages, *[{}] * (len(self.stages) - len(stages))]
        opts = [{**o, **_stage_options(p, k)} for k, (o, p) in enumerate(zip(self.options, extra))]
        seed = self.stages[0].settings(seed=seed).seed
        outputs, low, truncated = [], None, False
        for k, pipe in enumerate(self.stages):
            o = dict(opts[k])
            level = o.pop("aug_level", None)  # this SR stage's input level (None: its default)
            if k == 0:
                cond = {"classes": classes, "prompts": prompts}
            else:  # a truncated z_s already carries its noise (CDM §3.2)
                cond = {"images": low, "aug_level": level, "aug_noise": not truncated}
            nxt = self._level(k + 1, opts)
            grid = self._truncated_grid(pipe, o, nxt) if truncate and nxt else None
            step_cb = None if callback is None else (
                lambda info, k=k: callback({**info, "stage": k}))  # fmt: skip
            result = pipe.sample(n, seed=seed + k * STAGE_SEEDS, batch_size=batch_size,
                                 device=device, callback=step_cb, sigmas=grid, **o, **cond)
            truncated = grid is not None
            low = result.x if truncated else pipe.decode(result.x).clamp(-1, 1)  # [n, C, H, W]
            outputs.append(low)
        return outputs

    def _level(self, k: int, opts: list[dict]) -> float:
        """Stage k's augmentation level (0 past the last stage)."""
        if k >= len(self.stages):
            return 0.0
        return float(opts[k].get("aug_level", self.stages[k].conditioner.aug_level))

    def __call__(self, n: int | None = None, **options) -> Tensor:
        """n samples of the last stage as uint8 images [n, C, H, W] (`sample`'s options)."""
        return pixels_to_uint8(self.sample(n, **options)[-1])

    def __repr__(self) -> str:
        sizes = " → ".join("×".join(map(str, p.image_shape[1:])) for p in self.stages)
        return f"Cascade({sizes}, truncate={self.truncate})"


def load_cascade(source: str | Path | Sequence[str | Path | Pipeline], *,
                 device: str | torch.device | None = None) -> Cascade:  # fmt: skip
    """A Cascade from a cascade TOML file (see the module docstring) or a list of stage
    checkpoints / run dirs / Pipelines, base first."""
    options, truncate = [], False
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix != ".toml" or not path.is_file():
            raise UsageError(f"cascade file {path} is not an existing .toml file; pass a cascade "
                             "TOML or a list of stage checkpoints")  # fmt: skip
        try:
            spec = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"cannot parse cascade file {path}: {e}; fix the TOML") from None
        table = spec.get("stages")
        if not isinstance(table, list) or not all(isinstance(t, dict) and "model" in t
                                                  for t in table):  # fmt: skip
            raise UsageError(f"cascade file {path} needs [[stages]] tables, each with model = "
                             "\"CHECKPOINT\"; add them base first")  # fmt: skip
        truncate = bool(spec.get("truncate", False))
        source = [path.parent / t["model"] for t in table]
        options = [{k: v for k, v in t.items() if k != "model"} for t in table]
    stages = [s if isinstance(s, Pipeline) else load(s) for s in source]
    cascade = Cascade(stages, options, truncate)
    return cascade if device is None else cascade.to(device)
