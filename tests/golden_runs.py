"""Short seeded training runs whose per-step losses were recorded before the objective registry
(tests/golden_training.json); test_objectives checks the one loop reproduces them.

Check (exact, or the max relative difference per run): OMP_NUM_THREADS=1 python tests/golden_runs.py
Record again (only when a change of numbers is intended): add --write
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

GOLDEN = Path(__file__).with_name("golden_training.json")
TINY_UNET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1,"
             " attention_resolutions=[4]}")  # fmt: skip
DIGITS8 = {"name": "digits", "size": 8, "split": "train"}
TINY_CLF = dict(batch_size=16, lr=2e-3, net={"model_channels": 16, "channel_mult": [1, 2]},
                eval_sigmas=(), seed=0)  # fmt: skip


class HashText:
    """A fixed random unit vector per prompt (seeded by its sha256), as in test_classifier."""

    name, dim = "hash", 16

    def encode(self, prompts):
        seeds = [int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) for p in prompts]
        v = torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(s))
                         for s in seeds])  # fmt: skip
        return {"pooled": F.normalize(v, dim=-1)}


def _diffusion(tmp: Path, name: str, *sets: str) -> list[list[float]]:
    from difflab import train
    from difflab.core.config import load_config

    records = []
    cfg = load_config("digits", [TINY_UNET, "train.batch_size=8", "train.log_every=1", *sets])
    train(cfg, tmp / name, callback=lambda r: records.append(r) if "loss" in r else None)
    return [[r["loss"], r["grad_norm"]] for r in records]


def run_all() -> dict[str, list]:
    """{run name: per-step [loss, grad norm] or per-step loss} of every recorded run."""
    from difflab.evaluation.feature_training import train_feature_net
    from difflab.training.classifier import train_classifier
    from difflab.training.encoder import train_encoder

    out: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["simple"] = _diffusion(tmp, "simple", "train.steps=4", "train.warmup=2")
        out["simple_accumulate_bf16"] = _diffusion(
            tmp, "acc", "train.steps=3", "train.accumulate=2", "train.bf16=true",
            "model.cond={name='class', p_uncond=0.2}",
        )  # fmt: skip
        out["hybrid_importance"] = _diffusion(
            tmp, "hybrid", "train.steps=6", "model.schedule={name='cosine', T=4}",
            "model.parameterization='eps'", "model.learned_variance=true",
            "train.loss={name='hybrid'}", "train.sigma_density={name='importance', history=1}",
        )  # fmt: skip
        for name, fn, extra in (
            ("classifier", train_classifier, {}),
            ("encoder", train_encoder,
             {"text_encoder": HashText(), "prompts": [[str(k), f"digit {k}"] for k in range(10)]}),
        ):  # fmt: skip
            losses = []
            fn(DIGITS8, tmp / f"{name}.safetensors", steps=4, device="cpu", **TINY_CLF, **extra,
               callback=lambda r, losses=losses: losses.append(r["loss"]))  # fmt: skip
            out[name] = losses
        losses = []
        train_feature_net("digits", steps=5, batch_size=32, out_path=tmp / "f.safetensors",
                          callback=lambda r: losses.append(r["loss"]))  # fmt: skip
        out["feature_net"] = losses
    return out


if __name__ == "__main__":
    result = run_all()
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    report = {}
    for k in golden:
        a, b = torch.tensor(result[k]).double(), torch.tensor(golden[k]).double()
        report[k] = "exact" if result[k] == golden[k] else f"{((a - b).abs() / b.abs()).max():.1e}"
    print(json.dumps(report))
    sys.exit(0 if all(v == "exact" for v in report.values()) else 1)
