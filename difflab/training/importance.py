"""Loss-aware timestep sampling: p_t ∝ √E[L_t²] over the last `history` losses of each step,
uniform until every step has a full history (Nichol & Dhariwal 2021, §3.3, Eq. 18)."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schedules import Schedule
from difflab.training.densities import SIGMA_DENSITIES, STATEFUL_DENSITIES, SigmaDraw


class LossSecondMomentSampler:
    """Importance sampler over t ∈ {0..T−1}; `uniform_prob` of the mass stays uniform, as in
    improved-diffusion, so no step's probability reaches 0. A Density: its loss history is state."""

    def __init__(
        self, T: int, history: int = 10, uniform_prob: float = 0.001, sigmas: Tensor | None = None
    ):
        if not isinstance(history, int) or history < 1 or not 0 <= uniform_prob <= 1:
            raise UsageError(
                f"importance density needs an integer `history` >= 1 and 0 <= `uniform_prob` <= 1, "
                f"got {history!r}, {uniform_prob!r}"
            )
        self.T, self.uniform_prob = T, float(uniform_prob)
        self.sigmas = sigmas  # [T] σ_t of the schedule, for `draw`
        self.history = torch.zeros(T, history, dtype=torch.float64)  # [T, H] last losses per t
        self.counts = torch.zeros(T, dtype=torch.int64)  # [T] losses seen per t (capped at H)

    def probs(self) -> Tensor:
        """p_t [T]: uniform until filled, else ∝ the RMS of the loss history (Eq. 18)."""
        if (self.counts < self.history.shape[1]).any():
            return torch.full((self.T,), 1 / self.T, dtype=torch.float64)
        rms = self.history.pow(2).mean(1).sqrt()  # [T]
        return (1 - self.uniform_prob) * rms / rms.sum() + self.uniform_prob / self.T

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(t [n], weights 1/(T·p_t) [n]) so that mean(w·L_t) is unbiased for (1/T)·Σ_t L_t."""
        p = self.probs()
        t = torch.multinomial(p, n, replacement=True, generator=generator)  # [n]
        return t, 1 / (self.T * p[t])

    def draw(self, n: int, generator: torch.Generator) -> SigmaDraw:
        """σ_t [n] with t ~ p_t, the weights and t (Density protocol)."""
        t, weight = self.sample(n, generator)  # [n], [n]
        return SigmaDraw(self.sigmas[t].float(), weight, t)

    def observe(self, draw: SigmaDraw, losses: Tensor) -> None:
        """Feed the per-sample losses of a `draw` back into the history (Density protocol)."""
        self.update(draw.t, losses)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Push per-sample losses [n] at steps t [n] into each step's history (oldest dropped)."""
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            self.history[ti] = torch.cat(
                [self.history[ti, 1:], torch.tensor([li], dtype=torch.float64)]
            )
            self.counts[ti] = min(self.counts[ti] + 1, self.history.shape[1])

    def state_dict(self) -> dict[str, Tensor]:
        return {"history": self.history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.history.copy_(state["history"])
        self.counts.copy_(state["counts"])


def build_sampler(
    schedule: Schedule, *, history: int = 10, uniform_prob: float = 0.001
) -> LossSecondMomentSampler:
    """The stateful density for sigma_density = {name = "importance", ...}."""
    if not schedule.discrete:
        raise UsageError(
            f"sigma density 'importance' needs a discrete schedule, not {schedule.name!r}; "
            'use sigma_density = {name = "lognormal"}'
        )
    return LossSecondMomentSampler(schedule.num_timesteps, history, uniform_prob, schedule.sigmas)


@SIGMA_DENSITIES.register("importance", stateful=True)
def importance(
    schedule: Schedule, n: int, generator: torch.Generator, *, history: int = 10,
    uniform_prob: float = 0.001,
) -> Tensor:  # fmt: skip
    """Its not-yet-filled (uniform) case; training draws through `build_sampler`'s Density."""
    return SIGMA_DENSITIES.get("discrete")(schedule, n, generator)


STATEFUL_DENSITIES["importance"] = build_sampler
