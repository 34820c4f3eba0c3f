"""The two trainers of bench/time_to_quality.py, behind one interface: step, snapshot, sample.

`difflab`: the config's own recipe through the training engine (`difflab train`'s objective,
AdamW, warm-up, EMA, bf16), sampled with 20 steps of its best sampler (the config's default
DPM-Solver++(2M) SDE, DPM-Solver++(2M), ancestral DDPM or DDIM).
`diffusers`: the loop of diffusers' examples/unconditional_image_generation/train_unconditional.py
with its default arguments: `UNet2DModel` + `DDPMScheduler` (linear β, 1000 steps), L_simple
(ε-MSE), AdamW(lr 1e-4, β = (0.95, 0.999), weight decay 1e-6, ε 1e-8), 500 warm-up steps then
cosine decay, grad-norm clip 1.0, `EMAModel` (inv_gamma 1, power 3/4, max decay 0.9999);
sampled with 20 steps of its best scheduler (DPM-Solver++(2M), SDE-DPM-Solver++, DDPM or DDIM).
The cosine decay runs over wall-clock time (to 0 at the largest budget), since a time budget has
no step count.
Both nets see the same data loader (same batch size, flips and seed) and the same precision.
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.training_utils import EMAModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts
from unet_throughput import Config, build_diffusers, num_params  # noqa: E402

from difflab.core.config import load_config  # noqa: E402
from difflab.core.imageio import pixels_to_uint8  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.data.loader import InfiniteLoader  # noqa: E402
from difflab.inference.pipeline import Pipeline  # noqa: E402
from difflab.storage.codecs import build_codec  # noqa: E402
from difflab.storage.models import build_denoiser  # noqa: E402
from difflab.training import dist  # noqa: E402
from difflab.training.encoded import EncodedBatches  # noqa: E402
from difflab.training.loop import build_engine, resolve_model  # noqa: E402

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Preset:
    """A dataset of the bench: difflab's config, its labelled spec (feature net) and reference."""

    config: str
    features: dict  # labelled dataset the domain feature net trains on
    reference: dict  # dataset the generated images are compared with


PRESETS = {
    "fashion16": Preset(
        "fashion_mnist16",
        {"name": "fashion_mnist", "split": "train", "size": 16, "resize": "bilinear"},
        {"name": "fashion_mnist", "split": "test", "size": 16, "resize": "bilinear"},
    ),
    "emoji32": Preset(  # 1,870 emoji in all: the reference is every one of them
        str(BENCH / "ttq_emoji32.toml"),
        {"name": "emoji", "split": "train", "size": 32, "label": "group"},
        {"name": "emoji", "split": "all", "size": 32},
    ),
}


def matched_diffusers_config(net: dict, shape: list[int], batch: int) -> Config:
    """unet_throughput's Config of the diffusers UNet2DModel matching a difflab U-Net spec."""
    ch, mult = net["model_channels"], tuple(net["channel_mult"])
    res = shape[-1]
    attn = tuple(net.get("attention_resolutions", ()))
    level = [res // 2**i for i in range(len(mult))].index(attn[0]) if attn else 0
    head = ch * mult[level] // net.get("num_heads", 1)
    groups = min(32, ch)
    return Config("diffusers", res, shape[0], batch, ch, mult, attn, head,
                  net.get("num_res_blocks", 2), norm_groups=groups)  # fmt: skip


class DifflabArm:
    """difflab's default recipe of a config, through training.engine.Engine."""

    name = "difflab"

    def __init__(self, preset: Preset, budget_s: float, lr: float | None = None):
        self.cfg = cfg = load_config(preset.config)  # `lr`: the config's own (the recipe's)
        torch.manual_seed(cfg.train.seed)
        dataset = load_dataset(cfg.data.dataset)
        resolve_model(cfg, dataset)
        self.denoiser = build_denoiser(cfg.model).train()
        self.engine = build_engine(cfg, self.denoiser, dist.World())
        loader = InfiniteLoader(dataset, cfg.train.batch_size, seed=cfg.train.seed,
                                hflip=cfg.data.hflip)  # fmt: skip
        self.batches = EncodedBatches(loader, build_codec(cfg.model.codec))
        self.params = num_params(self.denoiser)
        self.batch_size, self.bf16 = cfg.train.batch_size, cfg.train.bf16

    def step(self, k: int, elapsed_s: float) -> float:
        return self.engine.step(k, self.batches).loss

    def snapshot(self) -> dict:
        return copy.deepcopy(self.engine.ema.model.state_dict())

    # 20-NFE candidates: the config's default (None) and difflab's other 1-NFE-per-step solvers
    samplers = {"default": None, "dpmpp_2m": "dpmpp_2m", "ddpm": "ddpm", "ddim": "ddim"}

    @torch.inference_mode()
    def sample(self, state: dict, n: int, batch_size: int, sampler: str = "default",
               seed: int = 0) -> torch.Tensor:  # fmt: skip
        """n uint8 images [n, C, H, W] of the EMA weights `state`, 20 steps of `sampler`."""
        denoiser = copy.deepcopy(self.engine.ema.model)
        denoiser.load_state_dict(state)
        return Pipeline(denoiser.eval(), self.cfg)(n, seed=seed, batch_size=batch_size, steps=20,
                                                   sampler=self.samplers[sampler])  # fmt: skip


class DiffusersArm:
    """diffusers' train_unconditional.py loop on a UNet2DModel of difflab's size."""

    name = "diffusers"
    warmup_steps, lr = 500, 1e-4

    def __init__(self, preset: Preset, budget_s: float, lr: float | None = None):
        self.lr = self.lr if lr is None else lr  # the script's 1e-4 unless asked otherwise
        cfg = load_config(preset.config)  # the same data, batch, flips, seed and precision
        torch.manual_seed(cfg.train.seed)
        dataset = load_dataset(cfg.data.dataset)
        self.shape = list(dataset.shape)
        self.batch_size, self.bf16 = cfg.train.batch_size, cfg.train.bf16
        self.loader = InfiniteLoader(dataset, self.batch_size, seed=cfg.train.seed,
                                     hflip=cfg.data.hflip)  # fmt: skip
        self.net = build_diffusers(matched_diffusers_config(cfg.model.net, self.shape, 0)).train()
        self.params = num_params(self.net)
        self.ddpm = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, betas=(0.95, 0.999),
                                     weight_decay=1e-6, eps=1e-8)  # fmt: skip
        self.ema = EMAModel(self.net.parameters(), decay=0.9999, use_ema_warmup=True,
                            inv_gamma=1.0, power=0.75)  # fmt: skip
        self.budget_s = budget_s
        self.generator = torch.Generator().manual_seed(cfg.train.seed)

    def lr_at(self, k: int, elapsed_s: float) -> float:
        """Linear warm-up over 500 steps, then cosine to 0 at the largest budget (in seconds)."""
        ramp = min(1.0, (k + 1) / self.warmup_steps)
        return self.lr * ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed_s / self.budget_s)))

    def step(self, k: int, elapsed_s: float) -> float:
        x0 = next(self.loader)[0]  # [B, C, H, W] in [-1, 1]
        noise = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, 1000, (len(x0),), generator=self.generator)
        x_t = self.ddpm.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            eps = self.net(x_t, t, return_dict=False)[0]
        loss = F.mse_loss(eps.float(), noise)  # L_simple (Ho et al. 2020, Eq. 14)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(k, elapsed_s)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.net.parameters())
        return loss.item()

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.ema.shadow_params]

    # 20-NFE candidates of diffusers; DDPM and DDIM clip x̂0 to [-1, 1] (their clip_sample default)
    samplers = {
        "dpmsolver++": (DPMSolverMultistepScheduler, {}),
        "sde-dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
        "ddpm": (DDPMScheduler, {}),
        "ddim": (DDIMScheduler, {}),
    }

    @torch.inference_mode()
    def sample(self, state: list[torch.Tensor], n: int, batch_size: int,
               sampler: str = "dpmsolver++", seed: int = 0) -> torch.Tensor:  # fmt: skip
        """n uint8 images of the EMA weights `state`: 20 steps of the diffusers scheduler `sampler`."""
        net = copy.deepcopy(self.net).eval()
        for p, s in zip(net.parameters(), state, strict=True):
            p.copy_(s)
        cls, options = self.samplers[sampler]
        solver = cls.from_config(self.ddpm.config, **options)
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, n, batch_size):
            solver.set_timesteps(20)
            x = torch.randn([min(batch_size, n - i), *self.shape], generator=g)
            for t in solver.timesteps:  # fp32, as difflab's Pipeline samples
                eps = net(x, t, return_dict=False)[0]
                x = solver.step(eps, t, x, generator=g, return_dict=False)[0]
            out.append(pixels_to_uint8(x))
        return torch.cat(out)


ARMS = {"difflab": DifflabArm, "diffusers": DiffusersArm}
