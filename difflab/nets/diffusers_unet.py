"""A diffusers U-Net (UNet2DModel, UNet2DConditionModel) as a difflab net F_θ(x, c_noise, cond).

Precond calls the net with c_in·x = the native VP state √ᾱ·(x0 + σε) and c_noise = the schedule's
timestep of σ; diffusers' discrete schedulers call the same U-Net with that state and an integer
timestep, so c_noise within `SNAP` of an integer is passed as that integer (σ arrives in float32,
whose timestep is off an integer by ~1e-5). Text goes in through the "tokens" slot
(encoder_hidden_states), a class through the one-hot "vector" slot (class_labels).
diffusers is imported only when such a net is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.foreign import foreign_module
from difflab.nets.base import NETS

KINDS = ("UNet2DModel", "UNet2DConditionModel")
SNAP = 1e-3  # timesteps this close to an integer are that integer


def snap_timesteps(t: Tensor) -> Tensor:
    """t [B] with entries within SNAP of an integer rounded to it (diffusers' integer steps)."""
    rounded = t.round()
    return torch.where((t - rounded).abs() < SNAP, rounded, t)


class DiffusersUNet(nn.Module):
    """F_θ(x, t, cond) = the diffusers U-Net's `.sample` at timestep t (the ε, v or x0 output)."""

    def __init__(self, kind: str, config: dict):
        super().__init__()
        self.kind = kind
        self.unet = getattr(foreign_module("diffusers"), kind).from_config(config)
        self.num_classes = int(config.get("num_class_embeds") or 0)

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        cond = cond or {}
        t = snap_timesteps(c_noise.float())  # [B]
        if self.kind == "UNet2DConditionModel":
            if "tokens" not in cond:
                raise UsageError("this model is conditioned on text; pass `prompts`")
            return self.unet(x, t, encoder_hidden_states=cond["tokens"]).sample
        labels = None
        if self.num_classes:
            if "vector" not in cond or not bool((cond["vector"].abs().sum(1) > 0).all()):
                raise UsageError(
                    "this diffusers UNet2DModel is class-conditional and has no null class: "
                    "pass `classes` and drop cfg guidance"
                )
            labels = cond["vector"].argmax(1)  # [B] one-hot → index
        return self.unet(x, t, class_labels=labels).sample


@NETS.register("diffusers_unet")
def diffusers_unet(
    *, kind: str, config: dict, in_channels: int, out_channels: int, resolution: int | None = None,
    cond_vector_dim: int = 0, cond_token_dim: int = 0,
) -> DiffusersUNet:  # fmt: skip
    """The diffusers U-Net `kind` built from its saved `config`; the sizes difflab derives from the
    codec and conditioner must equal the config's (the net's weights fix them)."""
    if kind not in KINDS:
        raise UsageError(f"unknown diffusers U-Net {kind!r}; choose one of: {', '.join(KINDS)}")
    expect = {"in_channels": in_channels, "out_channels": out_channels}
    if cond_token_dim:
        expect["cross_attention_dim"] = cond_token_dim
    if cond_vector_dim:
        expect["num_class_embeds"] = cond_vector_dim
    for key, want in expect.items():
        have = config.get(key)
        if isinstance(have, int) and have != want:
            raise UsageError(
                f"the {kind}'s config has {key}={have} but its codec / conditioner gives {want}; "
                "load the folder's own vae / text_encoder with the unet (a model folder fits "
                "only its pipeline)"
            )
    return DiffusersUNet(kind, config)
