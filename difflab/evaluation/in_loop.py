"""The held-out FD logged during training (a training hook built by the CLI)."""

from __future__ import annotations

import dataclasses
from typing import Any

from difflab.conditioning.base import conditioner_class
from difflab.core.config import Config
from difflab.core.errors import UsageError
from difflab.evaluation.evaluate import evaluate, load_ref
from difflab.evaluation.features import load_feature_net
from difflab.inference.pipeline import Pipeline


class InLoopFD:
    """FD of `n` EMA samples against a held-out reference, logged during training (cheap n)."""

    def __init__(self, ref_path: str, features: str, n: int, seed: int = 0):
        self.ref = load_ref(ref_path)
        spec = {"name": "raw"} if features in ("", "raw") else {"name": "domain", "path": features}
        self.net = load_feature_net(spec)
        if self.ref["feature_hash"] != self.net.hash:
            raise UsageError(
                f"train.eval_ref {ref_path} was made with another feature net than "
                f"train.eval_features={features!r}; pass the one used by `difflab ref-stats`"
            )
        self.n, self.seed = n, seed

    def __call__(self, denoiser, shape: tuple[int, ...], sample_cfg, device,
                 codec=None) -> dict[str, Any]:  # fmt: skip
        """{"eval_metric", "eval_fd", "eval_n"} for samples drawn as `sample_cfg` says (images of
        pixel `shape`, decoded by `codec` for a latent model)."""
        sample = (dataclasses.asdict(sample_cfg) if dataclasses.is_dataclass(sample_cfg)
                  else dict(sample_cfg))  # fmt: skip
        config = {"model": {"shape": list(shape)}, "sample": sample}
        pipe = Pipeline(denoiser, config, codec=codec)
        images = pipe.to_images(pipe.sample(self.n, seed=self.seed, device=device).x)
        report = evaluate(images, self.ref, self.net, ("fd",))
        return {"eval_metric": report["fd_name"], "eval_fd": report["fd"], "eval_n": self.n}


def in_loop_evaluator(cfg: Config):
    """The held-out FD evaluator when train.eval_every > 0 (checked before any file is written)."""
    if not cfg.train.eval_every:
        return None
    if not cfg.train.eval_ref:
        raise UsageError(
            "train.eval_every needs train.eval_ref (a .npz from `difflab ref-stats` of held-out "
            "data) and train.eval_features (the feature net it was made with)"
        )
    conditioner = conditioner_class(cfg.model.cond)
    if conditioner.needs_user_input:
        raise UsageError(
            "train.eval_every samples without user input, but this model needs conditioning "
            f"{' and '.join(conditioner.takes)}; set train.eval_every = 0 and evaluate samples made "
            f"with `{conditioner.takes[0]}` given"
        )
    return InLoopFD(cfg.train.eval_ref, cfg.train.eval_features, cfg.train.eval_n, cfg.sample.seed)


def train(cfg, out, *, resume: bool = False, callback=None, stop=None):
    """difflab.training.loop.train with the held-out FD evaluator and the progress grids and
    loss plot (evaluation.progress) that `cfg.train` asks for; `stop() -> bool` as there."""
    from difflab.evaluation.progress import progress_writer
    from difflab.training.loop import train as train_loop

    evaluator = in_loop_evaluator(cfg)  # raises before any file is written
    return train_loop(cfg, out, resume=resume, callback=callback, evaluator=evaluator,
                      progress=progress_writer(cfg, out), stop=stop)  # fmt: skip
