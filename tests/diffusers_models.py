"""Tiny randomly initialised diffusers models and pipelines saved to folders, built offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from requires import require_module

LATENT = 8  # U-Net sample size (latent side); images are 2× with the 2-level VAE
MAX_LENGTH = 12  # tokenizer model_max_length


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer: every byte-level character (with and without </w>) and a few merges."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte → char map
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    vocab = chars + [c + "</w>" for c in chars]
    merges = ["a p", "ap p", "p l", "pl e</w>", "r e", "e d</w>"]
    vocab += [m.replace(" ", "") for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    transformers = require_module("transformers")
    tok = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)},
                                     merges=[tuple(m.split()) for m in merges],
                                     model_max_length=MAX_LENGTH)  # fmt: skip
    tok.save_pretrained(str(folder))


def sd_pipeline(root: Path, scheduler_config: dict, seed: int = 0) -> Path:
    """A Stable-Diffusion-style pipeline folder with tiny random weights."""
    diffusers = require_module("diffusers")
    transformers = require_module("transformers")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = tiny_vae()
    write_tokenizer(root / "tokenizer")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    ))  # fmt: skip
    scheduler = scheduler_from(scheduler_config)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(str(root), safe_serialization=True)
    return root


def tiny_vae():
    """An AutoencoderKL with 2 levels (factor 2), 4 latent channels and SD's scaling factor."""
    diffusers = require_module("diffusers")
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8, sample_size=2 * LATENT, scaling_factor=0.18215,
    )  # fmt: skip


def vae_folder(root: Path) -> Path:
    """A tiny AutoencoderKL saved as a model folder."""
    tiny_vae().save_pretrained(str(root), safe_serialization=True)
    return root


def scheduler_from(config: dict):
    """A diffusers scheduler from a config dict with "_class_name"."""
    diffusers = require_module("diffusers")
    options = {k: v for k, v in config.items() if k != "_class_name"}
    return getattr(diffusers, config["_class_name"])(**options)


def set_scheduler(root: Path, config: dict) -> None:
    """Replace the pipeline folder's scheduler (and model_index.json's entry) by `config`."""
    scheduler_from(config).save_config(str(root / "scheduler"))
    index = json.loads((root / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", config["_class_name"]]
    (root / "model_index.json").write_text(json.dumps(index))


def unet2d_folder(root: Path, num_classes: int | None, seed: int = 0) -> Path:
    """A UNet2DModel (pixels, 3×16×16; class embeddings when num_classes) saved as a model
    folder root/unet with a DDIM scheduler beside it in root/scheduler."""
    diffusers = require_module("diffusers")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
        num_class_embeds=num_classes,
    )  # fmt: skip
    unet.save_pretrained(str(root / "unet"), safe_serialization=True)
    diffusers.DDIMScheduler(clip_sample=True).save_config(str(root / "scheduler"))
    return root / "unet"
