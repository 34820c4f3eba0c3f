"""Image-embedding conditioning: any diffusion model as an unCLIP decoder (Ramesh et al. 2022).

unCLIP's decoder (§2.1) conditions on a CLIP image embedding z_i by projecting it into the
timestep embedding and into four extra context tokens, and drops it for classifier-free
guidance. Here z_i [B, D] fills the net's "vector" slot (the U-Net's vector projection adds it to
the noise embedding) and `extra_tokens` tokens in the "tokens" slot. Token j is z_i placed in
block j of a [extra_tokens·D] vector (zeros elsewhere), so each attention block's key/value
projection W·token_j = W_j·z_i applies a separate learned map per token: the paper's learned
projection D → extra_tokens × Dt, composed with the cross-attention projection. Dropping the
condition (base.drop) zeroes the vector and masks every token. No caption is carried, so there
is no GLIDE caption dropout to do.

The CLIP image tower is a difflab net loaded from a file (storage), which this layer cannot
import: storage registers its loader in EMBEDDERS ("clip" → load_clip), and the conditioner
loads the file it names on first use. Training embeds each clean batch x0 on the fly (exact
under horizontal flips; the tower is far smaller than the decoder); sampling embeds the
request's `images`. Embeddings from elsewhere (a diffusion prior, slerps, text diffs) become a
condition through `from_embeddings`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.conditioning.base import CONDITIONERS, Conditioner, ConditionRequest, cycle
from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.types import Cond

EMBEDDERS = Registry("image embedder")  # file kind → loader(path) of an object with embed_images


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embedding_tokens(z: Tensor, extra_tokens: int) -> Tensor:
    """[B, D] → [B, T, T·D]: token j holds z in block j, zeros elsewhere (unCLIP §2.1's extra
    tokens before their learned projection)."""
    B, D = z.shape
    eye = torch.eye(extra_tokens, dtype=z.dtype, device=z.device)  # [T, T]
    return (eye[None, :, :, None] * z[:, None, None, :]).reshape(B, extra_tokens, -1)


@CONDITIONERS.register("embedding")
class EmbeddingConditioner(Conditioner):
    """A unit CLIP image embedding into the "vector" slot and `extra_tokens` context tokens
    (unCLIP decoder, Ramesh et al. 2022 §2.1); `clip` is the file of `difflab train-clip`."""

    kind = "embedding"
    takes = ("images", "embeddings")
    needs_user_input = True  # an image to take the embedding of
    summary = "is conditioned on image embeddings (unCLIP)"

    def __init__(self, *, clip: str = "", dim: int = 0, extra_tokens: int = 4,
                 p_uncond: float = 0.1, clip_sha256: str = "", embedder: str = "clip"):  # fmt: skip
        super().__init__(p_uncond)
        if not isinstance(extra_tokens, int) or extra_tokens < 0:
            raise UsageError(f"embedding conditioner extra_tokens must be an integer >= 0, got "
                             f"{extra_tokens!r}")  # fmt: skip
        if not clip:
            raise UsageError(
                "the embedding conditioner needs `clip`, the CLIP file to embed images with; "
                'train one with `train_clip(data, out)` and set cond = {name = "embedding", '
                'clip = "clip.safetensors"}'
            )
        self.clip_path, self.dim, self.extra_tokens = str(clip), int(dim), extra_tokens
        self.clip_sha256, self.embedder = clip_sha256, embedder
        self._clip = None

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """The CLIP file as an absolute path with its sha256, and its width `dim`; the file
        must read images of the training data's shape."""
        if dataset.kind not in ("image", "latents"):
            raise UsageError(
                f"cond 'embedding' needs an image dataset but {dataset_name!r} holds "
                f"{dataset.kind}; use image data or drop cond"
            )
        conditioner = CONDITIONERS.build(spec)
        path = Path(conditioner.clip_path).expanduser().resolve()
        spec["clip"], spec["clip_sha256"] = str(path), file_sha256(path)
        spec["extra_tokens"], spec["p_uncond"] = conditioner.extra_tokens, conditioner.p_uncond
        clip = conditioner.clip
        clip.check_compatible(dataset.shape)
        spec["dim"] = int(clip.dim)
        return spec

    @property
    def clip(self):
        """The CLIP model of the file `clip` (loaded once; its sha256 checked when recorded)."""
        if self._clip is None:
            path = Path(self.clip_path)
            if not path.is_file():
                raise UsageError(
                    f"CLIP file {path} of this embedding-conditioned model does not exist; put "
                    "it back or retrain the decoder with cond.clip = an existing file"
                )
            if self.clip_sha256 and file_sha256(path) != self.clip_sha256:
                raise UsageError(
                    f"CLIP file {path} changed since this model was trained (sha256 differs); "
                    "restore the original file or retrain the decoder"
                )
            if self.embedder not in EMBEDDERS:  # registered when difflab.storage is imported
                raise UsageError(f"no loader for image embedder {self.embedder!r} files; "
                                 "`import difflab.storage` first (it registers 'clip')")  # fmt: skip
            self._clip = EMBEDDERS.get(self.embedder)(path)
            if self.dim and self._clip.dim != self.dim:
                raise UsageError(f"CLIP file {path} embeds into {self._clip.dim} dimensions, "
                                 f"the model into {self.dim}; use the model's CLIP file")  # fmt: skip
        return self._clip

    def net_options(self) -> dict[str, int]:
        dim = self.dim or self.clip.dim
        tokens = {"cond_token_dim": self.extra_tokens * dim} if self.extra_tokens else {}
        return {"cond_vector_dim": dim, **tokens}

    def from_embeddings(self, z: Tensor) -> Cond:
        """Slots of image embeddings z [B, D] (normalised here): {"vector" [B, D], "tokens"
        [B, T, T·D], "tokens_mask" [B, T]} (no tokens when extra_tokens = 0)."""
        dim = self.dim or self.clip.dim
        if z.ndim != 2 or z.shape[1] != dim:
            raise UsageError(f"image embeddings must be [n, {dim}], got {list(z.shape)}")
        z = F.normalize(z.float(), dim=-1)  # [B, D]
        if not self.extra_tokens:
            return {"vector": z}
        mask = torch.ones(len(z), self.extra_tokens, dtype=torch.bool, device=z.device)
        return {"vector": z, "tokens": embedding_tokens(z, self.extra_tokens),
                "tokens_mask": mask}  # fmt: skip

    def for_training(self, x0: Tensor, labels: Tensor | None, generator=None) -> Cond:
        """The embeddings of the clean batch x0 [B, C, H, W] (model space)."""
        return self.from_embeddings(self.clip.embed_images(x0))

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The request's image `embeddings` [k, D] (e.g. a prior's samples), or the embeddings
        of its `images`, cycled over the samples."""
        z, images = request.embeddings, request.images
        if z is not None and len(z):
            if images is not None and len(images):
                raise UsageError("give `images` or `embeddings` to an unCLIP decoder, not both")
            return self.from_embeddings(z[torch.tensor(cycle(range(len(z)), request.n))]), {}
        if images is None or not len(images):
            raise UsageError(
                "this model is conditioned on image embeddings (unCLIP decoder): pass `images` "
                "or `embeddings`"
            )
        images = images[torch.tensor(cycle(range(len(images)), request.n))]
        return self.from_embeddings(self.clip.embed_images(images)), {}
