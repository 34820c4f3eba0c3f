"""Noise-aware networks on σ-space inputs (EDM input scalings): the wrapper, classifier, encoder."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.precond import edm
from difflab.core.types import bcast
from difflab.nets.base import NETS


class NoiseAwareNet(nn.Module):
    """E_θ(c_in(σ)·x, c_noise(σ)) for σ-space x: the encoder U-Net behind classifiers and encoders."""

    kind = "base"

    def __init__(self, net: nn.Module, meta: dict[str, Any]):
        super().__init__()
        self.net = net
        self.meta = meta
        self.shape = tuple(meta["shape"])  # (C, H, W) of the training data
        self.sigma_data = float(meta["sigma_data"])

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> NoiseAwareNet:
        """A freshly initialised net of this kind for the config `meta` (subclasses)."""
        raise NotImplementedError

    def check_compatible(self, shape: tuple[int, ...] | list[int] | torch.Size) -> None:
        """UsageError naming both shapes when data of `shape` [C, H, W] cannot be fed."""
        shape = tuple(shape)[-3:]
        if shape != self.shape:
            name = self.meta.get("dataset", {}).get("name", "dataset")
            raise UsageError(
                f"this {self.kind} was trained on {name} images {list(self.shape)} but the model "
                f"makes {list(shape)}; train a {self.kind} on this model's data "
                f"(difflab train-{self.kind}) or use a model of that resolution and channels"
            )

    def forward_features(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(output [B, D], feature maps) of σ-space x [B, C, H, W] at σ [B] or scalar (EDM Eq. 7)."""
        self.check_compatible(x.shape)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        sigma = sigma.expand(len(x)) if sigma.ndim == 0 else sigma  # [B]
        s = edm(sigma.float(), None, self.sigma_data)
        return self.net.forward_features(bcast(s.c_in, x).to(x.dtype) * x, s.c_noise)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def features(self, x: Tensor, sigma: Tensor) -> list[Tensor]:
        """Feature maps [B, C_l, H_l, W_l], one per level + the middle (structure/style terms)."""
        return self.forward_features(x, sigma)[1]


def build_net(net_spec: dict[str, Any], shape: tuple[int, ...], out_dim: int) -> nn.Module:
    """The encoder U-Net of `net_spec` for data [C, H, W] and `out_dim` outputs."""
    if net_spec.get("name") != "encoder_unet":
        raise UsageError(
            f"net {net_spec.get('name')!r} cannot be a noise-aware classifier/encoder; "
            "use net.name=encoder_unet"
        )
    return NETS.build(net_spec, in_channels=shape[0], out_dim=out_dim, resolution=shape[-1])


class NoiseAwareClassifier(NoiseAwareNet):
    """Logits of p(y | x_σ) for σ-space x [B, C, H, W] and σ [B] (ADM noise-aware classifier)."""

    kind = "classifier"

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> NoiseAwareClassifier:
        return cls(build_net(meta["net"], meta["shape"], len(meta["class_names"])), meta)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["class_names"])

    def logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Unnormalised log p(y | x_σ) [B, K]."""
        return self.forward_features(x, sigma)[0].float()  # [B, K]

    def log_prob(self, x: Tensor, sigma: Tensor, labels: Tensor | int) -> Tensor:
        """log p(y | x_σ) [B] at `labels` [B] (or one int): the classifier-guidance term (ADM Eq. 10)."""
        labels = torch.as_tensor(labels, dtype=torch.long, device=x.device)
        labels = labels.expand(len(x)) if labels.ndim == 0 else labels  # [B]
        if labels.shape != (len(x),) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise UsageError(
                f"labels must be {len(x)} class indices in 0..{self.num_classes - 1} "
                f"({', '.join(self.class_names)}), got {labels.tolist()}"
            )
        return self.logits(x, sigma).log_softmax(1).gather(1, labels[:, None])[:, 0]  # [B]


MAX_LOGIT_SCALE = 100.0  # CLIP clips exp(t) at 100


class NoiseAwareEncoder(NoiseAwareNet):
    """Unit-norm embedding of σ-space images in the text encoder's space, + feature maps."""

    kind = "encoder"

    def __init__(self, net: nn.Module, meta: dict[str, Any]):
        super().__init__(net, meta)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's init
        # Per class: the normalised mean of its caption embeddings (zero-shot classes) [K, D]
        self.register_buffer("class_embeddings", torch.zeros(len(meta["class_names"]), net.out_dim))

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> NoiseAwareEncoder:
        return cls(build_net(meta["net"], meta["shape"], meta["dim"]), meta)

    @property
    def text_encoder(self) -> str:
        """Name of the frozen text encoder whose space `embed` maps into (e.g. "minilm")."""
        return self.meta["text_encoder"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def embed(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Unit-norm image embedding [B, D] of σ-space x at σ (CLIP image tower, noise-aware)."""
        return F.normalize(self.forward_features(x, sigma)[0].float(), dim=-1)  # [B, D]

    def zero_shot_logits(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Cosine similarity [B, K] to each class's caption embedding (CLIP zero-shot, §3.1.2)."""
        return self.embed(x, sigma) @ self.class_embeddings.T  # [B, K]


class ClipImageEncoder(NoiseAwareEncoder):
    """CLIP's image tower (Radford et al. 2021): the noise-aware encoder read at one fixed σ ≈ 0
    (meta["clip_sigma"]), i.e. on clean images; its file kind is "clip"."""

    kind = "clip"

    @property
    def sigma(self) -> float:
        return float(self.meta["clip_sigma"])

    def embed_clean(self, x: Tensor) -> Tensor:
        """Unit-norm embedding [B, D] of clean model-space images x [B, C, H, W]."""
        return self.embed(x, torch.tensor(self.sigma, device=x.device))
