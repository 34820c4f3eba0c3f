"""The adversarial half of autoencoder training (Esser et al. 2021, taming-transformers §3.1;
Rombach et al. 2022 App. G): a PatchGAN discriminator with the hinge loss, its own Adam optimizer,
and the adaptive weight λ = ‖∇_L L_rec‖ / (‖∇_L L_GAN‖ + δ) at the decoder's last layer L.

The discriminator steps inside the objective's `loss` (one step per micro-batch, on the current
reconstructions, before the generator's term is formed), so the engine keeps one model and one
optimizer; the discriminator's weights and optimizer are objective parts, saved and resumed with
the run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.nets.patchgan import PatchDiscriminator
from difflab.training.objectives.base import OptimizerState


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """½(E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))]) (Lim & Ye 2017; taming `hinge_d_loss`)."""
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


def adaptive_weight(rec: Tensor, gan: Tensor, last_layer: Tensor, delta: float = 1e-4) -> Tensor:
    """λ = ‖∇_L rec‖ / (‖∇_L gan‖ + δ), clamped to [0, 10⁴], no gradient (Esser et al. 2021,
    Eq. 7)."""
    g_rec = torch.autograd.grad(rec, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0.0, 1e4).detach()


class DiscOptimizerState(OptimizerState):
    """The discriminator's Adam as tensors only: its slots and its learning rate (the param groups
    are rebuilt from the objective's options), so the objective's state is all tensors."""

    def state_dict(self) -> dict:
        state = super().state_dict()
        groups = state.pop("param_groups")
        return {**state, "lr": torch.tensor([float(g["lr"]) for g in groups], dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        groups = self.opt.state_dict()["param_groups"]
        for group, lr in zip(groups, state.pop("lr").tolist()):
            group["lr"] = lr
        super().load_state_dict({**state, "param_groups": groups})


class Adversary:
    """PatchGAN + Adam; `update` trains it, `generator_loss` is the decoder's −D(x̂) per sample."""

    def __init__(self, channels: int, device: torch.device, *, start: int = 0,
                 weight: float = 0.5, lr: float = 2e-4, width: int = 32, layers: int = 2):  # fmt: skip
        if start < 0 or weight < 0 or lr <= 0:
            raise UsageError(
                f"`disc` needs start ≥ 0, weight ≥ 0 and lr > 0, got {start}, {weight}, {lr}"
            )
        self.start, self.weight = start, weight
        self.disc = PatchDiscriminator(in_channels=channels, width=width, layers=layers).to(device)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9))

    def parts(self) -> dict:
        return {"disc": self.disc, "disc_optim": DiscOptimizerState(self.opt)}

    def update(self, x: Tensor, fake: Tensor) -> float:
        """One hinge-loss step of the discriminator on real x and detached fakes; its loss."""
        self.opt.zero_grad(set_to_none=True)  # also drops grads the engine's backward left
        loss = hinge_d_loss(self.disc(x), self.disc(fake.detach()))
        loss.backward()
        self.opt.step()
        return loss.item()

    def generator_loss(self, fake: Tensor) -> Tensor:
        """−mean D(x̂) per sample [B]; the discriminator's weights stay out of the graph."""
        self.disc.requires_grad_(False)
        try:
            return -self.disc(fake).flatten(1).mean(1)
        finally:
            self.disc.requires_grad_(True)
