"""A Stable-Diffusion pipeline folder's CLIP text encoder + tokenizer: text encoder "sd:DIR".

The "text" conditioner with this encoder gives the prompt's CLIP token states, padded to the
tokenizer's max length and unmasked, to the U-Net's cross-attention through the "tokens" slot, as
Stable Diffusion does (Rombach et al. 2022, §3.3); with `null_prompt=""` the negative prompt's
(default: the empty prompt's) states ride along as "null.tokens", the null condition of
classifier-free guidance (core.types.null_cond).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.foreign import foreign_module, read_json, read_weights, require_file, weight_file

STEMS = ("model", "pytorch_model")
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@functools.lru_cache(maxsize=2)
def load_clip(path: str, allow_pickle: bool):
    """(tokenizer, CLIPTextModel in eval mode) of a pipeline folder, from local files only."""
    root = Path(path)
    if not (root / "tokenizer" / "tokenizer.json").is_file():  # else the slow files
        for name in TOKENIZER_FILES:
            require_file(root / "tokenizer", name, "CLIP tokenizer")
    config = read_json(root / "text_encoder", "config.json", "CLIP text encoder")
    weights = weight_file(root / "text_encoder", STEMS, allow_pickle)
    transformers = foreign_module("transformers")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"),
                                                           local_files_only=True)  # fmt: skip
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_dict(config))
    state = read_weights(weights)
    model.load_state_dict(state, strict=False)  # position_ids: a buffer some versions save
    missing = set(model.state_dict()) - set(state) - {"text_model.embeddings.position_ids"}
    if missing:
        raise UsageError(
            f"{weights} lacks {sorted(missing)[0]} (and {len(missing) - 1} more); it does not fit "
            "its config.json: restore the saved text_encoder folder"
        )
    return tokenizer, model.eval().requires_grad_(False)


class SDClipEncoder:
    """A pipeline folder's CLIP text encoder as Stable Diffusion calls it: every token state,
    padding included and unmasked (Rombach et al. 2022, §3.3), and the end-of-text state as the
    pooled vector (Radford et al. 2021)."""

    kind = "sd"

    def __init__(self, path: str, allow_pickle: bool = False):
        self.path, self.allow_pickle = str(path), bool(allow_pickle)
        config = read_json(Path(path) / "text_encoder", "config.json", "CLIP text encoder")
        self.dim = int(config["hidden_size"])

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> dict[str, Tensor]:
        """Token states [B, L, D] (L = the tokenizer's max length), mask [B, L] (all True: SD
        attends to every state) and the unit end-of-text state [B, D]."""
        tokenizer, model = load_clip(self.path, self.allow_pickle)
        batch = tokenizer(list(prompts), padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="pt")  # fmt: skip
        mask = batch["attention_mask"] if getattr(model.config, "use_attention_mask", 0) else None
        tokens = model(batch["input_ids"], attention_mask=mask)[0].float()  # [B, L, D]
        eos = batch["attention_mask"].sum(1) - 1  # [B] the end-of-text position
        pooled = torch.nn.functional.normalize(tokens[torch.arange(len(tokens)), eos], dim=-1)
        return {"tokens": tokens, "tokens_mask": torch.ones(tokens.shape[:2], dtype=torch.bool),
                "pooled": pooled}  # fmt: skip
