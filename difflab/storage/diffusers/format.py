"""The "diffusers" checkpoint format: a saved diffusers model folder or pipeline folder.

A model folder holds `config.json` + `diffusion_pytorch_model.safetensors` of a UNet2DModel or
UNet2DConditionModel (its schedule: a `scheduler/` folder beside it, else DDPMScheduler's
defaults). A pipeline folder holds `model_index.json` and `unet/`, `scheduler/` and, for Stable
Diffusion, `vae/` (AutoencoderKL → the "diffusers_vae" codec), `text_encoder/` + `tokenizer/`
(CLIP → the "diffusers_clip" conditioner). The U-Net's weights become the denoiser's state dict
under "net.unet."; the config names the folders, so the codec and conditioner load their own.
Nothing is downloaded; pickled weights need `allow_pickle=True`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.foreign import read_json, read_weights, require_file, weight_file
from difflab.storage.diffusers.scheduler import translate_scheduler
from difflab.storage.formats import FORMATS, CheckpointFormat

UNETS = ("UNet2DModel", "UNet2DConditionModel")
WEIGHTS = ("diffusion_pytorch_model",)
DEFAULT_SCHEDULER = {"_class_name": "DDPMScheduler"}  # linear β 1e-4..0.02, T=1000, ε, clip_sample


def _is_unet_folder(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    try:
        return read_json(path, "config.json", "model").get("_class_name") in UNETS
    except UsageError:
        return False


@FORMATS.register("diffusers")
class DiffusersFolder(CheckpointFormat):
    """A diffusers UNet model folder or a DDPM / Stable-Diffusion pipeline folder."""

    def detect(self, path: Path) -> bool:
        return path.is_dir() and ((path / "model_index.json").is_file() or _is_unet_folder(path))

    def read(self, path: Path) -> tuple[dict[str, Tensor], dict]:
        meta = {"root": str(path.resolve()), "allow_pickle": self.allow_pickle}
        if (path / "model_index.json").is_file():
            index = read_json(path, "model_index.json", "diffusers pipeline")
            parts = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
            for part in ("unet", "scheduler"):
                if part not in parts:
                    raise UsageError(
                        f"pipeline {path} has no {part} (model_index.json lists: "
                        f"{', '.join(sorted(parts))}); difflab loads U-Net pipelines"
                    )
            unet_dir = path / "unet"
            meta["scheduler"] = read_json(path / "scheduler", "scheduler_config.json", "scheduler")
            for part in ("vae", "text_encoder", "tokenizer"):
                if part in parts:
                    require_file(path / part, "config.json" if part != "tokenizer" else
                                 "tokenizer_config.json", f"pipeline {part}")  # fmt: skip
                    meta[part] = str((path / part).resolve())
        else:
            unet_dir = path
            sibling = path.parent / "scheduler"
            meta["scheduler"] = (read_json(sibling, "scheduler_config.json", "scheduler")
                                 if (sibling / "scheduler_config.json").is_file() else None)  # fmt: skip
        meta["unet"] = read_json(unet_dir, "config.json", "diffusers model")
        if meta["unet"].get("_class_name") not in UNETS:
            raise UsageError(
                f"{unet_dir}/config.json is a {meta['unet'].get('_class_name')!r}; difflab loads "
                f"{' and '.join(UNETS)} folders"
            )
        weights = weight_file(unet_dir, WEIGHTS, self.allow_pickle)
        return read_weights(weights), meta

    def key_map(self, key: str) -> str | None:
        return f"net.unet.{key}"

    def translate(self, meta: dict) -> tuple[dict, dict]:
        unet, kind = meta["unet"], meta["unet"]["_class_name"]
        scheduler = meta["scheduler"] or DEFAULT_SCHEDULER
        schedule, parameterization, sample, notes = translate_scheduler(scheduler)
        if meta["scheduler"] is None:
            notes.append("no scheduler_config.json: DDPMScheduler's defaults")
        size = unet.get("sample_size") or 32
        h, w = (size, size) if isinstance(size, int) else size
        codec, cond, channels = {"name": "identity"}, {}, unet.get("in_channels", 3)
        if kind == "UNet2DConditionModel":
            for part in ("vae", "text_encoder", "tokenizer"):
                if part not in meta:
                    raise UsageError(
                        f"{meta['root']} is a UNet2DConditionModel without a pipeline's {part}; "
                        "give the pipeline folder (model_index.json with unet, vae, text_encoder, "
                        "tokenizer, scheduler)"
                    )
            if unet.get("class_embed_type") or unet.get("addition_embed_type"):
                raise UsageError(
                    "this UNet2DConditionModel takes extra embeddings (class_embed_type / "
                    "addition_embed_type, e.g. SDXL); difflab loads Stable-Diffusion-1/2 U-Nets"
                )
            vae = read_json(Path(meta["vae"]), "config.json", "AutoencoderKL")
            factor = 2 ** (len(vae.get("block_out_channels", [64])) - 1)
            h, w, channels = h * factor, w * factor, vae.get("in_channels", 3)
            codec = {"name": "diffusers_vae", "path": meta["vae"],
                     "allow_pickle": meta["allow_pickle"]}  # fmt: skip
            text = read_json(Path(meta["text_encoder"]), "config.json", "CLIP text encoder")
            cond = {"name": "text", "encoder": f"sd:{meta['root']}", "dim": text["hidden_size"],
                    "null_prompt": "", "p_uncond": 0.0, "allow_pickle": meta["allow_pickle"]}  # fmt: skip
            sample["guidance"] = ["cfg:scale=7.5", *sample["guidance"]]  # the SD pipeline's
        elif unet.get("num_class_embeds"):
            cond = {"name": "class", "num_classes": int(unet["num_class_embeds"]), "p_uncond": 0.0}
        if unet.get("time_embedding_type", "positional") != "positional":
            raise UsageError(
                f"time_embedding_type={unet['time_embedding_type']!r} (a score-SDE / VE model) "
                "has no DDPM timestep; difflab loads positional-embedding U-Nets"
            )
        model = {
            "net": {"name": "diffusers_unet", "kind": kind, "config": unet},
            "schedule": schedule, "parameterization": parameterization, "sigma_data": 0.5,
            "learned_variance": False, "cond": cond, "shape": [channels, h, w], "codec": codec,
        }  # fmt: skip
        sample |= {"n": 4, "batch_size": 4, "seed": 0}
        info = {"format": "diffusers", "source": meta["root"], "notes": notes,
                "scheduler": scheduler.get("_class_name", "DDPMScheduler")}  # fmt: skip
        return {"model": model, "sample": sample}, info
