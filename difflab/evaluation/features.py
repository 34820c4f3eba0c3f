"""Feature networks for sample-quality metrics, chosen by name: raw, inception (FID), domain.

Each maps uint8 images [N, C, H, W] (or float points [N, D] for `raw`) to features [N, D] and has
a stable `hash` (sha256 of name + weights) that labels reference statistics. Nothing here
downloads anything: Inception weights come from a file the user supplies.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.core.registry import Registry
from difflab.nets.inception import (
    ConvBN,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
    InceptionB,
    InceptionD,
)
from difflab.storage.checkpoint import load_weights, read_kind

FEATURES = Registry("feature network")

INCEPTION_ENV = "DIFFLAB_INCEPTION_WEIGHTS"
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE
)
_GET_WEIGHTS = (
    f"download {INCEPTION_FILE} from the pytorch-fid release ({INCEPTION_URL}) and pass "
    f'weights=PATH (feature net {{name = "inception", weights = PATH}}) or set {INCEPTION_ENV}'
)


class FeatureNet(nn.Module):
    """Base: `embed(x) → (features [N, D], logits [N, K] or None)`; forward gives features."""

    name = "base"
    dim = 0
    num_classes = 0  # > 0 when the net also gives class probabilities (IS, accuracy)

    def __init__(self) -> None:
        super().__init__()
        self._hash: str | None = None

    @property
    def fd_name(self) -> str:
        """Name of the Fréchet distance in this feature space (FID only for Inception)."""
        return f"FD-{self.name}"

    @property
    def description(self) -> dict[str, Any]:
        """JSON-able description stored beside reference statistics."""
        return {"name": self.name}

    @property
    def hash(self) -> str:
        """sha256 over the name and every weight (num_batches_tracked excluded), cached."""
        if self._hash is None:
            h = hashlib.sha256(self.name.encode())
            for key, t in sorted(self.state_dict().items()):
                if key.endswith("num_batches_tracked"):
                    continue
                t = t.detach().cpu().contiguous()
                h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._hash = None  # new weights, new hash
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x)[0]

    def probs(self, x: Tensor) -> Tensor:
        """Class probabilities [N, K] (softmax of the classifier head)."""
        logits = self.embed(x)[1]
        if logits is None:
            raise UsageError(
                f"feature network {self.name!r} has no classifier head; use 'inception' or "
                "'domain' for the Inception Score and classifier accuracy"
            )
        return logits.softmax(dim=1)


def metric_name(feature_net: FeatureNet) -> str:
    """'FID' for Inception features, 'FD-<dataset>' for a domain net, 'FD-raw' for pixels."""
    return feature_net.fd_name


def load_feature_net(spec: str | dict[str, Any]) -> FeatureNet:
    """Build a feature network from "name" or {"name": ..., **options}; eval mode, no grads."""
    net = FEATURES.build(spec)
    net.eval().requires_grad_(False)
    return net


@torch.no_grad()
def extract(
    net: FeatureNet, x: Tensor, *, batch_size: int = 64, with_probs: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Features [N, D] (float32, CPU) and, if asked, class probabilities [N, K], in batches."""
    if len(x) == 0:
        raise UsageError("no images to extract features from; pass at least one")
    if with_probs and net.num_classes == 0:
        net.probs(x[:1])  # raises the explanatory UsageError
    device = next(net.parameters(), torch.empty(0)).device
    feats, probs = [], []
    for i in range(0, len(x), batch_size):
        f, logits = net.embed(x[i : i + batch_size].to(device))
        feats.append(f.float().cpu())
        if with_probs:
            probs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(feats), (torch.cat(probs) if with_probs else None)


# ---------------------------------------------------------------- raw


class RawFeatures(FeatureNet):
    """Flattened pixels scaled to [0, 1] (uint8) or float points as they are: for toys and tests."""

    name = "raw"

    def embed(self, x: Tensor) -> tuple[Tensor, None]:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return x.reshape(len(x), -1), None  # [N, C·H·W] or [N, D]


@FEATURES.register("raw")
def raw() -> RawFeatures:
    return RawFeatures()


# ---------------------------------------------------------------- Inception-v3 (FID)


class InceptionV3(FeatureNet):
    """Inception-v3 (Szegedy 2016) as in TF's 2015-12-05 graph used by FID (Heusel 2017).

    Features: the 2048-d pool3 activations. Logits: pool3 @ fc.weightᵀ over 1008 classes without
    the bias, as in the reference Inception Score code (Salimans 2016). Parameter names follow
    pytorch-fid's state dict so its published weights file loads unchanged.
    """

    name = "inception"
    dim = 2048
    num_classes = 1008

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.fc = nn.Linear(2048, 1008)

    @property
    def fd_name(self) -> str:
        return "FID"

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UsageError(
                f"inception features need uint8 images [N, 1 or 3, H, W], got {x.dtype} "
                f"{tuple(x.shape)}; convert with pixels_to_uint8"
            )
        x = x.float().div(255.0).expand(-1, 3, -1, -1)  # [N, 3, H, W] grey → RGB
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0  # [N, 3, 299, 299] in [-1, 1]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [N, 192, 71, 71]
        x = F.max_pool2d(x, 3, stride=2)  # [N, 192, 35, 35]
        for block in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{block}")(x)  # → [N, 2048, 8, 8]
        pool3 = x.mean(dim=(2, 3))  # [N, 2048]
        return pool3, pool3 @ self.fc.weight.T  # [N, 2048], [N, 1008]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A plain state dict from .safetensors or from a .pth read with weights_only=True."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UsageError(
                f"Inception weights {path} are not a readable safetensors file ({e}); "
                + _GET_WEIGHTS
            ) from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of many types; never unpickle arbitrary objects
        raise UsageError(
            f"Inception weights {path} are not a plain PyTorch state dict ({type(e).__name__}); "
            + _GET_WEIGHTS
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UsageError(f"Inception weights {path} do not hold a state dict; " + _GET_WEIGHTS)
    return dict(sd)


def load_inception_weights(net: InceptionV3, path: str | os.PathLike) -> None:
    """Load pytorch-fid's FID Inception weights (or a safetensors copy) into `net`, strictly."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Inception weights file {path} does not exist; " + _GET_WEIGHTS)
    sd = _read_state_dict(path)
    own = net.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise UsageError(f"{path} is not the FID Inception state dict ({detail}); " + _GET_WEIGHTS)
    for k in own:
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    net.load_state_dict(sd)


@FEATURES.register("inception")
def inception(*, weights: str | None = None) -> InceptionV3:
    """FID Inception-v3 with weights from `weights=` or $DIFFLAB_INCEPTION_WEIGHTS; never downloads."""
    path = weights or os.environ.get(INCEPTION_ENV)
    if not path:
        raise UsageError("the 'inception' feature network needs its weights file; " + _GET_WEIGHTS)
    net = InceptionV3()
    load_inception_weights(net, path)
    return net.eval()


# ---------------------------------------------------------------- domain classifier


def dataset_name(spec: Any) -> str:
    """'digits' for a dataset spec, the folder's own name for {"name": "folder", "path": ...}."""
    if not isinstance(spec, dict):
        return str(spec)
    if spec.get("name") == "folder" and spec.get("path"):
        return Path(spec["path"]).name or "folder"  # train_feature_net stores it absolute
    return spec.get("name", "dataset")



def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3×3 conv → GroupNorm (fixed gcd(8, C) groups: saved nets stay exact) → SiLU."""
    norm = nn.GroupNorm(math.gcd(8, cout), cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), norm, nn.SiLU())


class DomainNet(FeatureNet):
    """Small CNN: penultimate features for FD-<dataset>; a softmax head for IS/accuracy when it
    was trained on labels (`num_classes` ≥ 2), none when self-supervised (`num_classes` = 0)."""

    name = "domain"

    def __init__(
        self,
        *,
        in_channels: int,
        size: list[int],
        num_classes: int,
        width: int = 32,
        feat_dim: int = 128,
        dataset: Any = None,
    ):
        super().__init__()
        self.config = dict(
            in_channels=in_channels,
            size=list(size),
            num_classes=num_classes,
            width=width,
            feat_dim=feat_dim,
            dataset=dataset,
        )
        self.dim, self.num_classes = feat_dim, num_classes
        w = width
        self.body = nn.Sequential(
            _conv(in_channels, w),
            _conv(w, w),
            _conv(w, 2 * w, stride=2),  # H/2
            _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, stride=2),  # H/4
        )
        self.feat = nn.Linear(4 * w, feat_dim)
        self.head = nn.Linear(feat_dim, num_classes) if num_classes else None

    @property
    def dataset_name(self) -> str:
        """The dataset's name, or an image folder's own name ("FD-myfaces")."""
        return dataset_name(self.config["dataset"])

    @property
    def fd_name(self) -> str:
        return f"FD-{self.dataset_name}"

    @property
    def description(self) -> dict[str, Any]:
        return {"name": self.name, **self.config}

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (self.config["in_channels"], *self.config["size"])
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != shape:
            raise UsageError(
                f"this domain feature net was trained on uint8 images {list(shape)}, got "
                f"{x.dtype} {list(x.shape[1:])}; generate images of that size or retrain it"
            )
        return self.features_model_space(uint8_to_pixels(x))

    def features_model_space(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features [N, feat_dim], logits [N, K] or None) of images already in [-1, 1]."""
        h = self.body(x).mean(dim=(2, 3))  # [N, 4w]
        f = F.silu(self.feat(h))  # [N, feat_dim]
        return f, None if self.head is None else self.head(f)

    def probs(self, x: Tensor) -> Tensor:
        if self.head is None:
            raise UsageError(
                f"this domain feature net ({self.fd_name}) was trained without labels and has no "
                "classifier head; the Inception Score and accuracy need one trained on a folder "
                "with class subfolders, or 'inception'"
            )
        return super().probs(x)


@FEATURES.register("domain")
def domain(*, path: str | None = None) -> DomainNet:
    """A domain feature net trained by `train_feature_net`, loaded from its safetensors file."""
    if path is None:
        raise UsageError(
            "the 'domain' feature network needs path=; train one with "
            "`train_feature_net()` and pass its .safetensors file"
        )
    fix = "train one with `train_feature_net()`"
    tensors, meta = read_kind(Path(path), "feature_net", wanted="a domain feature net", fix=fix)
    if meta.get("name") != "domain":
        raise UsageError(f"{path} is a {meta.get('name')!r} feature net, not a domain one; {fix}")
    net = load_weights(DomainNet(**meta["config"]), tensors, path, "retrain it")
    net.info = {k: meta[k] for k in ("test_accuracy", "view_accuracy", "train") if k in meta}
    return net.eval()
