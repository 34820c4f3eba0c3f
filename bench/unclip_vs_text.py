"""Text-to-image on `emoji` at equal total training time: unCLIP (CLIP + prior + decoder) vs a
direct text-conditional U-Net (GLIDE-style cross-attention on the frozen MiniLM), issue 16.

Both arms train at once, one thread each, released together (bench/time_to_quality.py's
scheme), for the same wall-clock budget `--minutes`, which for unCLIP covers every stage:
the CLIP image tower (`--clip-share` of it), the prior (`--prior-share`, its embedding cache
included) and the decoder (the rest). Both denoisers are the same U-Net and are sampled the
same way (ancestral DDPM, `--steps` steps, CFG `--scale` on the caption or on the embedding,
static thresholding); the prior uses its config's 64 DDIM steps at CFG `--prior-scale`.

Prompts: `--prompts` emoji names of the training split ("seen") and as many of the held-out
split ("unseen", never trained on), `-n` samples each, in the "an emoji of a …" template.
Measured per arm (Ramesh et al. 2022, §5: unCLIP trades little fidelity for more diversity):
  judged group accuracy — a domain feature net trained on the Unicode group labels is the judge;
      its accuracy on real held-out emoji is its ceiling, the largest group's share is chance;
  retrieval top-5 — the prompt's own emoji among the 5 nearest of all emoji (train + held out) in
      the features of a SimCLR domain net; chance 5 / (number of emoji);
  FD — SimCLR features of all samples vs all emoji (equal n for both arms, so compare, not
      read absolutely);
  diversity — mean pairwise feature distance among the n samples of one prompt, averaged over
      prompts; real emoji pairs of one group give the scale.

    python bench/unclip_vs_text.py --minutes 30 --out bench-out/unclip_vs_text
    python bench/unclip_vs_text.py --minutes 2 --prompts 4 -n 4 --steps 10   # smoke scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts
from emoji_t2i_judge import emoji_picks  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from difflab.core.config import load_config  # noqa: E402
from difflab.core.imageio import save_grid  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.data.emoji import EMOJI_GROUPS  # noqa: E402
from difflab.evaluation.feature_training import train_feature_net  # noqa: E402
from difflab.evaluation.features import extract, load_feature_net  # noqa: E402
from difflab.evaluation.metrics import feature_stats, frechet_distance  # noqa: E402
from difflab.inference.pipeline import load  # noqa: E402
from difflab.inference.unclip import pipeline_decoder, unclip_sample  # noqa: E402
from difflab.storage.clip_files import open_clip  # noqa: E402
from difflab.training.clip import train_clip  # noqa: E402
from difflab.training.loop import train  # noqa: E402
from difflab.training.prior import train_prior  # noqa: E402

ARMS = ("unclip", "text")
MANY = 10**7  # a step count never reached: the budgets stop training


def emoji_names(size: int) -> dict:
    """The training data of every stage: emoji of the training split, labelled by name."""
    return {"name": "emoji", "split": "train", "size": size, "label": "name"}


def save_arm(out: Path, arm: str, images: torch.Tensor, info: dict) -> None:
    """An arm's samples (uint8 [N, 3, H, W]) and its record, read back by the scoring."""
    save_file({"images": images.contiguous()}, str(out / f"{arm}-samples.safetensors"))
    (out / f"{arm}.json").write_text(json.dumps(info, indent=1))


def common_overrides(size: int) -> list[str]:
    """The U-Net, data, training and sampling settings both denoisers share."""
    return [
        f"data.dataset={{name='emoji', split='train', size={size}, label='name'}}",
        "model.net={name='unet', model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, "
        "attention_resolutions=[8], num_heads=4}",
        f"train.steps={MANY}", "train.batch_size=128", "train.lr=1e-3", "train.warmup=200",
        "train.ema_decay=0.999", "train.bf16=true", f"train.ckpt_every={MANY}",
        "sample.guidance=['static_threshold']", "sample.sampler={name='ddpm'}",
        "sample.discretization={name='uniform', spacing='trailing'}",
    ]  # fmt: skip


def train_text(args, out: Path, budget_s: float) -> dict:
    """The GLIDE-style arm: emoji_text's captions through cross-attention, for the whole budget."""
    cfg = load_config("emoji_text", [*common_overrides(args.size), f"train.max_seconds={budget_s}"])
    return {"model": str(train(cfg, out / "text"))}


def train_prior_stage(args, out: Path, clip, sha256: str, budget_s: float) -> Path:
    """The prior on `clip`'s cached embeddings for its share of the budget (`--prior-set` options)."""
    data = emoji_names(args.size)
    shutil.rmtree(out / "prior", ignore_errors=True)
    return train_prior(data, clip, out / "prior", clip_sha256=sha256,
                       cache=out / "embeddings.safetensors",
                       overrides=[f"train.steps={MANY}", f"train.ckpt_every={MANY}",
                                  f"train.max_seconds={args.prior_share * budget_s}",
                                  *args.prior_set])  # fmt: skip


def redo_prior(args) -> None:
    """`--redo-prior`: retrain only the unCLIP arm's prior (same CLIP, decoder and prior budget),
    resample that arm; its CLIP and decoder stage times are kept."""
    torch.set_num_threads(1)
    out = Path(args.out) / "unclip"
    info = json.loads((out.parent / "unclip.json").read_text())
    clip, sha256 = open_clip(out / "clip.safetensors")
    t0 = time.perf_counter()
    info["prior"] = str(train_prior_stage(args, out, clip, sha256, 60 * args.minutes))
    info["prior_s"] = time.perf_counter() - t0
    info["prior_set"] = list(args.prior_set)
    prompts = json.loads((out.parent / "prompts.json").read_text())
    t1 = time.perf_counter()
    images = sample_arm(args, "unclip", info, [p["prompt"] for p in prompts])
    info["sample_s"] = time.perf_counter() - t1
    save_arm(out.parent, "unclip", images, info)


def train_unclip(args, out: Path, budget_s: float) -> dict:
    """The unCLIP arm: CLIP, then the prior, then the decoder on what is left of the budget."""
    t0, data = time.perf_counter(), emoji_names(args.size)
    clip_path = out / "clip.safetensors"
    train_clip(data, clip_path, steps=MANY, max_seconds=args.clip_share * budget_s, force=True)
    clip, sha256 = open_clip(clip_path)
    t_clip = time.perf_counter() - t0
    prior = train_prior_stage(args, out, clip, sha256, budget_s)
    t_prior = time.perf_counter() - t0 - t_clip
    left = budget_s - (time.perf_counter() - t0)
    if left < 0.1 * budget_s:
        sys.exit(f"CLIP and prior took {budget_s - left:.0f} s of the {budget_s:.0f} s budget "
                 "(caption encoding and set-up included), leaving the decoder too little; "
                 "raise --minutes or lower --clip-share / --prior-share")  # fmt: skip
    cfg = load_config("emoji_unclip_decoder", [*common_overrides(args.size),
                      f"model.cond.clip='{clip_path}'", f"train.max_seconds={left}"])  # fmt: skip
    decoder = train(cfg, out / "decoder")
    stages = {"clip_s": t_clip, "prior_s": t_prior,
              "decoder_s": time.perf_counter() - t0 - t_clip - t_prior,
              "clip_retrieval": clip.meta.get("test_retrieval")}  # fmt: skip
    return {"model": str(decoder), "prior": str(prior), **stages}


def sample_arm(args, name: str, info: dict, prompts: list[str]) -> torch.Tensor:
    """uint8 images [len(prompts) · n, 3, H, W], sample i from prompt i // n."""
    rep = [p for p in prompts for _ in range(args.n)]
    settings = {"steps": args.steps, "batch_size": 256}
    if name == "text":
        return load(info["model"])(len(rep), prompts=rep, seed=0,
                                   guidance=[f"cfg:scale={args.scale}"], **settings)  # fmt: skip
    decode = pipeline_decoder(load(info["model"]), scale=args.scale, **settings)
    return unclip_sample(load(info["prior"]), rep, decode, n=len(rep), seed=0,
                         prior_scale=args.prior_scale).images  # fmt: skip


def worker(args) -> None:
    """One arm: wait for the go, train for the budget, then sample every prompt."""
    torch.set_num_threads(1)
    out = Path(args.out) / args.worker
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{args.worker}.ready").touch()
    while not (out.parent / "go").exists():
        time.sleep(0.05)
    t0 = time.perf_counter()
    info = (train_unclip if args.worker == "unclip" else train_text)(args, out, 60 * args.minutes)
    info["train_s"] = time.perf_counter() - t0
    prompts = json.loads((out.parent / "prompts.json").read_text())
    t1 = time.perf_counter()
    images = sample_arm(args, args.worker, info, [p["prompt"] for p in prompts])
    info["sample_s"] = time.perf_counter() - t1
    save_arm(out.parent, args.worker, images, info)


def launch(args, arm: str) -> subprocess.Popen:
    keep = ["--minutes", "--size", "--prompts", "-n", "--steps", "--scale", "--prior-scale",
            "--clip-share", "--prior-share", "--out"]  # fmt: skip
    cmd = [sys.executable, __file__, "--worker", arm]
    for item in args.prior_set:
        cmd += ["--prior-set", item]
    for flag in keep:
        cmd += [flag, str(getattr(args, flag.lstrip("-").replace("-", "_")))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env)


def feature_nets(args, out: Path):
    """(group judge, SimCLR feature net) of emoji at the bench's size, trained once per out dir."""
    nets = []
    for label, objective in (("group", "classification"), (None, "simclr")):
        path = out / f"features-{objective}-{args.size}.safetensors"
        spec = {"name": "emoji", "size": args.size, "split": "all"}
        if label:
            spec = {**spec, "split": "train", "label": label}
        if not path.exists():
            train_feature_net(spec, steps=args.feature_steps, out_path=path, objective=objective)
        nets.append(load_feature_net({"name": "domain", "path": str(path)}))
    return nets


def mean_pairwise(f: torch.Tensor) -> float:
    """Mean Euclidean distance over the distinct pairs of the rows of f [k, D]."""
    d = torch.cdist(f, f)  # [k, k]
    k = len(f)
    return float(d.sum() / (k * (k - 1)))


def score(images: torch.Tensor, prompts: list[dict], n: int, judge, feats, everything,
          ref_feats: torch.Tensor) -> dict:  # fmt: skip
    """Judged group accuracy (seen / unseen), retrieval top-5, FD and diversity of one arm."""
    f, probs = extract(feats, images)[0], extract(judge, images, with_probs=True)[1]
    groups = torch.tensor([EMOJI_GROUPS.index(p["group"]) for p in prompts]).repeat_interleave(n)
    hit = (probs.argmax(1) == groups).float()  # [N]
    own = torch.tensor([everything.meta["names"].index(p["name"]) for p in prompts])
    nearest = torch.cdist(f, ref_feats).topk(5, largest=False).indices  # [N, 5]
    top5 = (nearest == own.repeat_interleave(n)[:, None]).any(1).float()
    seen = torch.tensor([p["split"] == "train" for p in prompts]).repeat_interleave(n)
    fd = None  # FD needs more samples than feature dimensions (a smoke-scale run has fewer)
    if len(f) > f.shape[1]:
        mu, sig = feature_stats(f.double().numpy())
        mu_r, sig_r = feature_stats(ref_feats.double().numpy())
        fd = frechet_distance(mu, sig, mu_r, sig_r)
    per_prompt = f.view(len(prompts), n, -1)
    return {
        "group_seen": float(hit[seen].mean()), "group_unseen": float(hit[~seen].mean()),
        "top5_seen": float(top5[seen].mean()), "top5_unseen": float(top5[~seen].mean()),
        "fd": fd,
        "diversity": sum(mean_pairwise(p) for p in per_prompt) / len(per_prompt),
    }  # fmt: skip


def real_references(judge, everything, ref_feats: torch.Tensor) -> dict:
    """The judge's ceiling on real held-out emoji, chance, and the diversity of real same-group pairs."""
    test = load_dataset({"name": "emoji", "size": everything.shape[-1], "split": "test",
                         "label": "group"})  # fmt: skip
    probs = extract(judge, test.x, with_probs=True)[1]
    train_groups = load_dataset(
        {"name": "emoji", "size": everything.shape[-1], "label": "group"}
    ).labels
    groups = torch.as_tensor(everything.meta["groups"])
    within = [
        mean_pairwise(ref_feats[groups == g]) for g in groups.unique() if (groups == g).sum() > 1
    ]
    return {
        "judge_ceiling": float((probs.argmax(1) == test.labels).float().mean()),
        "group_chance": float(torch.bincount(train_groups).max() / len(train_groups)),
        "top5_chance": 5 / len(everything.x), "diversity_same_group": sum(within) / len(within),
        "diversity_all": mean_pairwise(ref_feats),
    }  # fmt: skip


def run_arms(args, out: Path, prompts: list[dict]) -> None:
    """Train and sample both arms at once (one worker process each), released together."""
    for stale in [*out.glob("*.ready"), out / "go"]:
        stale.unlink(missing_ok=True)
    for arm in ARMS:  # the runs of an earlier call (the feature nets are kept)
        shutil.rmtree(out / arm, ignore_errors=True)
    (out / "prompts.json").write_text(json.dumps(prompts, indent=1))
    procs = {arm: launch(args, arm) for arm in ARMS}
    while not all((out / f"{arm}.ready").exists() for arm in ARMS):
        if any(p.poll() not in (None, 0) for p in procs.values()):
            sys.exit("a worker failed during set-up")
        time.sleep(0.05)
    (out / "go").touch()
    if any(p.wait() for p in procs.values()):
        sys.exit("a worker failed")


def drive(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = [{**p, "split": split} for split in ("train", "test")
               for p in emoji_picks(args.size, args.prompts, split)]  # fmt: skip
    judge, feats = feature_nets(args, out)
    t0 = time.perf_counter()
    if args.redo_prior:
        redo_prior(args)
    elif not args.score_only:
        run_arms(args, out, prompts)
    everything = load_dataset({"name": "emoji", "size": args.size, "split": "all", "label": "name"})
    ref_feats = extract(feats, everything.x)[0]  # [M, D]
    report = {"args": {k: v for k, v in vars(args).items() if k != "worker"},
              "wall_min": (time.perf_counter() - t0) / 60,
              "real": real_references(judge, everything, ref_feats)}  # fmt: skip
    for arm in ARMS:
        info = json.loads((out / f"{arm}.json").read_text())
        images = load_file(str(out / f"{arm}-samples.safetensors"))["images"]
        report[arm] = {
            **info,
            **score(images, prompts, args.n, judge, feats, everything, ref_feats),
        }
        rows = [images[i * args.n : (i + 1) * args.n] for i in range(len(prompts))]
        picks = rows[:6] + rows[args.prompts : args.prompts + 6]  # 6 seen, 6 unseen prompts
        save_grid(torch.cat(picks).numpy(), out / f"{arm}-grid.png", nrow=args.n)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print_report(report, args)


def print_report(r: dict, args) -> None:
    real, u, t = r["real"], r["unclip"], r["text"]
    print(f"\n## unCLIP vs text-conditional U-Net, emoji {args.size}×{args.size}, "
          f"{args.minutes:g} training minutes each (1 thread each, run together)")  # fmt: skip
    print(f"prior options: {u.get('prior_set') or args.prior_set or 'the prior config'}")
    print(f"unCLIP stages: CLIP {u['clip_s']:.0f} s, prior {u['prior_s']:.0f} s, decoder "
          f"{u['decoder_s']:.0f} s; text model {t['train_s']:.0f} s")  # fmt: skip
    if u.get("clip_retrieval"):
        c = u["clip_retrieval"]
        print(f"CLIP held-out retrieval top-5 {c['top5']:.3f} (chance {c['chance_top5']:.3f})")
    print(f"{args.prompts} seen + {args.prompts} unseen prompts × {args.n} samples; ancestral DDPM "
          f"{args.steps} steps, CFG {args.scale:g} (prior CFG {args.prior_scale:g})\n")  # fmt: skip
    rows = [
        ("judged group accuracy, seen prompts", "group_seen", "{:.3f}"),
        ("judged group accuracy, unseen prompts", "group_unseen", "{:.3f}"),
        ("retrieval top-5 of own emoji, seen", "top5_seen", "{:.3f}"),
        ("retrieval top-5 of own emoji, unseen", "top5_unseen", "{:.3f}"),
        ("FD (SimCLR features, all samples vs all emoji)", "fd", "{:.2f}"),
        (f"diversity (mean pairwise distance of {args.n} samples)", "diversity", "{:.3f}"),
    ]
    print("| metric | unCLIP | text (GLIDE-style) | reference |\n|---|---|---|---|")
    refs = {"group_seen": f"judge on real held-out {real['judge_ceiling']:.3f}, chance "
            f"{real['group_chance']:.3f}", "top5_seen": f"chance {real['top5_chance']:.4f}",
            "diversity": f"real same-group pairs {real['diversity_same_group']:.3f}, any pair "
            f"{real['diversity_all']:.3f}"}  # fmt: skip
    for label, key, fmt in rows:
        cells = ["n/a" if arm[key] is None else fmt.format(arm[key]) for arm in (u, t)]
        print(f"| {label} | {cells[0]} | {cells[1]} | {refs.get(key, '')} |")
    print(f"\ngrids (6 seen then 6 unseen prompts, one per row): {Path(args.out)}/*-grid.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget of each arm")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=64, help="seen prompts (and as many unseen)")
    ap.add_argument("-n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--steps", type=int, default=50, help="decoder sampling steps (both arms)")
    ap.add_argument("--scale", type=float, default=3.0, help="decoder CFG scale (both arms)")
    ap.add_argument("--prior-scale", type=float, default=2.0)
    ap.add_argument("--clip-share", type=float, default=0.15, help="of unCLIP's budget")
    ap.add_argument("--prior-share", type=float, default=0.1, help="of unCLIP's budget")
    ap.add_argument("--feature-steps", type=int, default=1000)
    ap.add_argument("--out", default="bench-out/unclip_vs_text")
    ap.add_argument("--prior-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the prior's config, e.g. model.net.width=128")  # fmt: skip
    ap.add_argument("--redo-prior", action="store_true",
                    help="retrain only the unCLIP arm's prior of an earlier call (its prior "
                    "budget, one thread), resample that arm and score")  # fmt: skip
    ap.add_argument("--score-only", action="store_true",
                    help="score the samples an earlier call left in --out")  # fmt: skip
    ap.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    main()
