"""Every registered training objective against one contract (per-sample loss, state round trip,
bit-exact resume through the shared engine), oracles where the optimum is known in closed form,
and the losses of short runs recorded before the objective registry (tests/golden_runs.py)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from golden_runs import GOLDEN, run_all
from torch import nn

from difflab import train
from difflab.core.config import load_config
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule
from difflab.data.datasets import load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec
from difflab.training import resume
from difflab.training.densities import sample_sigma
from difflab.training.ema import EMA
from difflab.training.engine import Engine
from difflab.training.objectives import OBJECTIVES, Batch, build_objective
from oracles import GaussianData, GaussianMixture, float64_default, perfect_denoiser

DATA = load_dataset({"name": "digits", "size": 8, "split": "train"})  # [N, 1, 8, 8] uint8, 10 classes
NOISED = {"name": "log_uniform", "sigma_min": 0.01, "sigma_max": 10.0}


class ConvNet(nn.Module):
    """F_θ: 3×3 conv with 2·C outputs when `extra` (learned-variance head), noise-conditioned."""

    def __init__(self, extra: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 2 if extra else 1, 3, padding=1)

    def forward(self, x, c_noise, cond):
        return self.conv(x) + 0.01 * c_noise.reshape(-1, 1, 1, 1)


class NoisedNet(nn.Module):
    """Linear noise-aware classifier/encoder on flattened 8×8 images."""

    def __init__(self, out: int = 10):
        super().__init__()
        self.lin = nn.Linear(65, out)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def logits(self, x, sigma):
        return self.lin(torch.cat([x.flatten(1), sigma.log().reshape(-1, 1) / 4], 1))  # [B, K]

    def embed(self, x, sigma):
        return F.normalize(self.logits(x, sigma), dim=-1)  # [B, D]


def _denoiser(schedule="edm", param="edm", extra=False):
    return Precond(ConvNet(extra), build_schedule(schedule), param, 0.5, extra)


def _captions():
    pooled = F.normalize(torch.randn(20, 10, generator=torch.Generator().manual_seed(3)), dim=-1)
    return {"pooled": pooled, "owner": torch.arange(10).repeat_interleave(2)}  # 2 captions/class


def _kl_codec():
    return build_codec({"name": "kl", "channels": 1, "factor": 2, "z_channels": 2,
                        "net": {"ch": 8}})  # fmt: skip


def _autoencoder_options():
    """A frozen two-layer perceptual net and a PatchGAN from step 0 (with its own optimizer)."""
    layers = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    return {"perceptual": layers, "kl_weight": 1e-3, "disc": {"start": 0, "width": 8, "layers": 1}}


def _simclr_case():
    """A linear encoder + projection of flattened 8×8 images, trained as its own projection."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    return net, {"project": net}


# name → list of (case id, builder of a freshly initialised (model, options)); seeded inside.
CASES = {
    "denoising": [
        ("lognormal", lambda: (_denoiser(), {"density": "lognormal"})),
        ("importance", lambda: (_denoiser({"name": "cosine", "T": 4}, "eps"),
                                {"density": {"name": "importance", "history": 1}})),
    ],  # fmt: skip
    "prior": [("x0", lambda: (_denoiser({"name": "cosine", "T": 8}, "x0"), {"density": "discrete"}))],
    "hybrid": [
        ("discrete", lambda: (_denoiser({"name": "cosine", "T": 8}, "eps", True), {})),
        ("importance", lambda: (_denoiser({"name": "cosine", "T": 4}, "eps", True),
                                {"density": {"name": "importance", "history": 1}})),
    ],  # fmt: skip
    "noised_classification": [("log_uniform", lambda: (NoisedNet(), {"density": NOISED}))],
    "contrastive": [("captions", lambda: (NoisedNet(), {"density": NOISED, **_captions()}))],
    "progressive": [("edm", lambda: (_denoiser(), {"teacher": _denoiser(), "teacher_steps": 4}))],
    "consistency_distillation": [
        ("heun", lambda: (_denoiser(param="consistency"), {"teacher": _denoiser(), "N": 6,
                                                           "mu": 0.9})),
    ],  # fmt: skip
    "consistency_training": [("ict", lambda: (_denoiser(param="consistency"), {"K": 4, "s0": 2,
                                                                               "s1": 8}))],  # fmt: skip
    "classification": [
        ("shifted", lambda: (nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), {"augment": True}))
    ],
    "autoencoder": [("kl-perceptual-gan", lambda: (_kl_codec(), _autoencoder_options()))],
    "simclr": [("views", _simclr_case)],
}
PARAMS = [pytest.param(name, i, id=f"{name}-{cid}")
          for name, cases in CASES.items() for i, (cid, _) in enumerate(cases)]  # fmt: skip


def make(name: str, i: int, seed: int = 0):
    """(objective, loader, generator), the same for the same seed."""
    torch.manual_seed(seed)
    model, options = CASES[name][i][1]()
    objective = build_objective({"name": name}, model, **options)
    return objective, InfiniteLoader(DATA, 16, seed=seed), torch.Generator().manual_seed(seed)


def test_every_registered_objective_has_a_contract_case():
    assert sorted(CASES) == OBJECTIVES.names()


@pytest.mark.parametrize("name,i", PARAMS)
def test_per_sample_loss_is_finite_shaped_b_and_trains_the_model(name, i):
    objective, loader, g = make(name, i)
    per_sample, logs = objective.loss(Batch(*next(loader), g), 0)
    assert per_sample.shape == (16,) and torch.isfinite(per_sample).all()
    assert isinstance(logs, dict)
    per_sample.mean().backward()
    grads = [p.grad for p in objective.model.parameters() if p.requires_grad]
    assert any(gr is not None and gr.abs().max() > 0 for gr in grads)


@pytest.mark.parametrize("name,i", PARAMS)
def test_state_round_trip_continues_identically(name, i):
    a, loader, g = make(name, i)
    for step in range(3):  # fill whatever history the objective keeps
        a.loss(Batch(*next(loader), g), step)
    b, _, _ = make(name, i)
    state = a.state_dict()
    b.load_state_dict(state)
    assert state.keys() == b.state_dict().keys()
    batch, g_state = next(loader), g.get_state()
    la, _ = a.loss(Batch(*batch, g), 3)
    g.set_state(g_state)
    lb, _ = b.loss(Batch(*batch, g), 3)
    assert torch.equal(la, lb)


def _engine(name, i):
    objective, loader, g = make(name, i)
    opt = torch.optim.AdamW(objective.model.parameters(), lr=1e-2)
    engine = Engine(objective, opt, generator=g, ema=EMA(objective.model, 0.9), grad_clip=1.0,
                    scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1, (k + 1) / 3)))
    parts = {"model": objective.model, "optim": resume.OptimizerState(opt),
             "sched": engine.scheduler, "rng": resume.RNGState(g), "loader": loader}  # fmt: skip
    return engine, loader, parts


@pytest.mark.parametrize("name,i", PARAMS)
def test_resume_through_the_generic_state_is_bit_exact(name, i):
    straight, loader, _ = _engine(name, i)
    for step in range(4):
        straight.step(step, loader)
    first, loader, parts = _engine(name, i)
    for step in range(2):
        first.step(step, loader)
    tensors, meta = resume.flatten(parts, first.objective)
    meta = json.loads(json.dumps(meta))  # as it is stored
    ema = {k: v.clone() for k, v in first.ema.model.state_dict().items()}
    again, loader, parts = _engine(name, i)
    resume.unflatten(tensors, meta, parts, again.objective)
    again.ema.model.load_state_dict(ema)
    for step in range(2, 4):
        again.step(step, loader)
    for a, b in ((straight.objective.model, again.objective.model),
                 (straight.ema.model, again.ema.model)):  # fmt: skip
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k
    assert straight.objective.state_dict().keys() == again.objective.state_dict().keys()
    for k, v in straight.objective.state_dict().items():
        assert torch.equal(v, again.objective.state_dict()[k]), k


@pytest.mark.parametrize("param", ["eps", "v", "edm"])
def test_denoising_objective_is_zero_for_the_perfect_denoiser_of_point_mass_data(param):
    """For x0 = μ everywhere, D* = μ exactly, so ‖F − target‖² = 0 at every σ."""
    with float64_default():
        denoiser = perfect_denoiser(GaussianData(mu=0.7, s=0.0), build_schedule("linear"), param)
        objective = build_objective("denoising", denoiser, density="discrete")
        x0 = torch.full((32, 1, 2, 2), 0.7)
        loss, _ = objective.loss(Batch(x0, None, torch.Generator().manual_seed(0)), 0)
    assert loss.shape == (32,) and loss.abs().max() < 1e-12


def test_hybrid_objective_with_zero_vlb_weight_is_the_denoising_objective():
    for i in range(2):
        hybrid, loader, g = make("hybrid", i)
        hybrid.vlb_weight = 0.0
        denoising = build_objective("denoising", hybrid.model, density=hybrid.density_spec)
        batch, state = next(loader), g.get_state()
        a, _ = hybrid.loss(Batch(*batch, g), 0)
        g.set_state(state)
        b, _ = denoising.loss(Batch(*batch, g), 0)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class Bayes(nn.Module):
    """The exact p(k | x_σ) of a Gaussian mixture as a noise-aware classifier."""

    def __init__(self, mix: GaussianMixture):
        super().__init__()
        self.mix = mix

    def logits(self, x, sigma):
        return self.mix.log_posterior(x.double(), sigma.double())  # [B, K]


def test_noised_classification_of_the_bayes_classifier_is_the_posterior_entropy():
    """E[−log p(y | x_σ)] under the exact posterior equals E[H(p(· | x_σ))] at the same x_σ."""
    mix = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]]), s=0.3)
    density = {"name": "log_uniform", "sigma_min": 0.2, "sigma_max": 2.0}
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (20000,), generator=g)  # [N]
    x0 = (mix.means[labels] + mix.s * torch.randn(20000, 2, generator=g, dtype=torch.float64))
    x0 = x0.float()  # [N, 2]
    objective = build_objective("noised_classification", Bayes(mix), density=density)
    state = g.get_state()
    ce, _ = objective.loss(Batch(x0, labels, g), 0)  # [N]
    g.set_state(state)  # the same σ and ε again, to compute x_σ here
    sigma = sample_sigma(density, len(x0), g)  # [N]
    x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=g)  # [N, 2]
    logp = mix.log_posterior(x.double(), sigma.double())  # [N, K]
    entropy = -(logp.exp() * logp).sum(1)  # [N]
    diff = ce.double() - entropy
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff))
    assert ce.mean() > 0.1  # the classes overlap at these σ: a real test, not 0 = 0


def test_noised_classification_is_zero_when_classes_stay_apart():
    mix = GaussianMixture(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]), s=0.1)
    objective = build_objective("noised_classification", Bayes(mix),
                                density={"name": "log_uniform", "sigma_min": 1e-3,
                                         "sigma_max": 1e-1})  # fmt: skip
    labels = torch.arange(64) % 2
    x0 = mix.means[labels].float()  # [64, 2]
    ce, _ = objective.loss(Batch(x0, labels, torch.Generator().manual_seed(0)), 0)
    assert ce.max() < 1e-6


def test_a_format_1_resume_state_is_upgraded_and_resumes_bit_exact(tmp_path):
    """States written before the objective registry (param_groups at the top, no LR schedule
    state) resume to the same weights as an uninterrupted run."""
    tiny = ["model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
            "attention_resolutions=[4]}", "train.batch_size=8", "train.warmup=5"]  # fmt: skip
    straight = train(load_config("digits", [*tiny, "train.steps=4"]), tmp_path / "a")
    two = train(load_config("digits", [*tiny, "train.steps=2"]), tmp_path / "b")
    tensors, meta = ckpt.load_tensors(ckpt.state_path(two))
    groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in meta["optim"]["param_groups"]]
    old = {k: v for k, v in meta.items() if k not in ("format", "sched", "optim")}
    ckpt.save_tensors(ckpt.state_path(two), tensors, {**old, "param_groups": groups})
    resumed = train(load_config("digits", [*tiny, "train.steps=4"]), tmp_path / "b", resume=True)
    ta, tb = ckpt.load_tensors(straight)[0], ckpt.load_tensors(resumed)[0]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_short_runs_reproduce_the_losses_recorded_before_the_registry():
    """Bit-exact here for the diffusion runs (the classifier/encoder/feature-net losses now
    reduce per sample first: ≤ 3e-7 relative); a tolerance absorbs other CPUs' arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_all()
    finally:
        torch.set_num_threads(threads)
    golden = json.loads(GOLDEN.read_text())
    assert result.keys() == golden.keys()
    for name in golden:
        torch.testing.assert_close(torch.tensor(result[name], dtype=torch.float64),
                                   torch.tensor(golden[name], dtype=torch.float64),
                                   rtol=1e-5, atol=0, msg=name)  # fmt: skip


def test_nt_xent_of_aligned_orthogonal_pairs_is_the_closed_form():
    """Partners at cos 1, all others at cos 0: ℓ = log(1 + (2B − 2)·e^(−1/τ)) (SimCLR, Eq. 1)."""
    from difflab.training.objectives.simclr import nt_xent

    b, tau = 4, 0.5
    z = torch.eye(b, 8).repeat(2, 1) * 3.0  # [2B, 8] view i and i + B identical, others orthogonal
    expected = math.log(1 + (2 * b - 2) * math.exp(-1 / tau))
    assert torch.allclose(nt_xent(z, tau), torch.full((2 * b,), expected), atol=1e-6)
    swapped = torch.cat([z[:b], z[b:].roll(1, 0)])  # partners now orthogonal: a larger loss
    assert (nt_xent(swapped, tau) > expected + 1).all()
