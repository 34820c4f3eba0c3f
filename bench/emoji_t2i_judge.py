"""Text-to-image on `emoji`, judged by group (issue 13): a grid for held-out-style prompts and the
share of samples that a judge puts in the prompt's Unicode group, next to chance.

The prompts: names of held-out emoji (split="test": the model never saw them) in the captions'
"an emoji of a …" template, plus group-level prompts ("an emoji of a cat"). The judge is difflab's
domain feature net trained on the group labels (`train_feature_net`, label="group"; trained here
unless --judge is given); its accuracy on the real held-out images is printed as its own ceiling.
Chance: the largest group's share of the training data (what a judge-fooling constant would hit),
and the hit rate expected if samples ignored the prompt and followed the training groups.

    python bench/emoji_t2i_judge.py --run RUN --grid emoji_t2i.png
    python bench/emoji_t2i_judge.py --run RUN --judge features.safetensors -n 16 --steps 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
import difflab  # noqa: E402
from difflab.conditioning.captions import article, class_word  # noqa: E402
from difflab.core.imageio import save_grid  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.data.emoji import EMOJI_GROUPS  # noqa: E402
from difflab.evaluation.feature_training import train_feature_net  # noqa: E402
from difflab.evaluation.features import load_feature_net  # noqa: E402

GROUP_PROMPTS = {  # group-level prompts → their Unicode group
    "an emoji of a cat": "Animals & Nature",
    "an emoji of a fruit": "Food & Drink",
    "an emoji of a laughing face": "Smileys & Emotion",
}


def emoji_picks(size: int, count: int, split: str = "test") -> list[dict[str, str]]:
    """{"prompt", "group", "name"} for `count` emoji of `split` spread over the list (CLDR order),
    prompted in the captions' "an emoji of a …" template."""
    data = load_dataset({"name": "emoji", "size": size, "split": split, "label": "name"})
    names, groups = data.meta["names"], data.meta["groups"]
    picks = torch.linspace(0, len(names) - 1, count).round().long().tolist()
    out = []
    for i in picks:
        word = class_word("emoji", names[i])
        out.append({"prompt": f"an emoji of {article(word)} {word}", "name": names[i],
                    "group": EMOJI_GROUPS[int(groups[i])]})  # fmt: skip
    return out


def emoji_prompts(size: int, count: int, split: str = "test") -> list[tuple[str, str]]:
    """(prompt, group) of `emoji_picks`."""
    return [(p["prompt"], p["group"]) for p in emoji_picks(size, count, split)]


@torch.no_grad()
def judge_groups(judge, images: torch.Tensor) -> torch.Tensor:
    """The judge's group index per uint8 image [N, 3, H, W]."""
    return judge.probs(images).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a text-conditional emoji run (pixel or latent)")
    ap.add_argument("--judge", help="domain feature net trained on emoji group labels")
    ap.add_argument("--judge-steps", type=int, default=300)
    ap.add_argument("--held-out", type=int, default=7, help="held-out name prompts")
    ap.add_argument("-n", type=int, default=8, help="samples per prompt")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--scale", type=float, default=3.0, help="classifier-free guidance scale")
    ap.add_argument("--grid", help="PNG of the samples, one row per prompt")
    args = ap.parse_args()
    pipe = difflab.load(args.run)
    size = int(pipe.config["model"]["shape"][-1])
    judge_path = args.judge or train_feature_net(
        {"name": "emoji", "size": size, "label": "group"}, steps=args.judge_steps,
        out_path=Path(tempfile.mkdtemp(prefix="emoji_judge_")) / "judge.safetensors")  # fmt: skip
    judge = load_feature_net({"name": "domain", "path": str(judge_path)})
    train = load_dataset({"name": "emoji", "size": size, "label": "group"})
    test = load_dataset({"name": "emoji", "size": size, "split": "test", "label": "group"})
    prior = torch.bincount(train.labels, minlength=len(EMOJI_GROUPS)).double() / len(train.labels)
    ceiling = (judge_groups(judge, test.x) == test.labels).double().mean().item()
    prompts = emoji_prompts(size, args.held_out) + list(GROUP_PROMPTS.items())
    t = time.perf_counter()
    rows, hits, expected = [], [], []
    print(f"{'prompt':<52} {'group':<18} {'in group':>8}  judged")
    for prompt, group in prompts:
        images = pipe(args.n, seed=0, prompts=[prompt], steps=args.steps,
                      guidance=f"cfg:scale={args.scale}")  # fmt: skip
        got = judge_groups(judge, images)
        want = EMOJI_GROUPS.index(group)
        hit = (got == want).double().mean().item()
        rows.append(images)
        hits.append(hit)
        expected.append(prior[want].item())
        judged = ", ".join(EMOJI_GROUPS[int(g)].split()[0] for g in got)
        print(f"{prompt[:52]:<52} {group:<18} {hit:8.2f}  {judged}")
    seconds = time.perf_counter() - t
    share = sum(hits) / len(hits)
    print(f"{len(prompts)} prompts × {args.n} samples, {args.steps} steps, CFG {args.scale}, "
          f"{seconds:.0f} s; run {args.run} (step {pipe.info['step']})")  # fmt: skip
    print(f"in the prompt's group: {share:.3f}; chance: largest group "
          f"{prior.max().item():.3f} ({EMOJI_GROUPS[int(prior.argmax())]}), prompt-blind "
          f"{sum(expected) / len(expected):.3f}; judge on real held-out images: {ceiling:.3f}")  # fmt: skip
    if args.grid:
        grid = torch.cat(rows).numpy()
        meta = {"prompts": [p for p, _ in prompts], "run": str(args.run), "steps": args.steps,
                "cfg": args.scale}  # fmt: skip
        print(f"grid: {save_grid(grid, args.grid, nrow=args.n, meta=meta)}")


if __name__ == "__main__":
    main()
