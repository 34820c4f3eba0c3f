"""Resumable, seeded infinite batches over a Dataset."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset, check_positive


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:8], "little")


class InfiniteLoader:
    """Endless shuffled batches (x in model space, labels or None); resumable from state_dict."""

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int = 0, hflip: bool = False):
        check_positive("batch_size", batch_size)
        if len(dataset) == 0:
            raise UsageError("cannot iterate an empty dataset; check the dataset options")
        if hflip and dataset.kind != "image":
            raise UsageError(f"hflip needs an image dataset, got {dataset.kind}; set hflip=false")
        self.dataset, self.batch_size, self.hflip = dataset, batch_size, hflip
        self.seed, self.epoch, self.index = int(seed), 0, 0
        self._order: tuple[int, Tensor, Tensor] | None = None  # (epoch, perm [N], flip [N])

    def _epoch_order(self) -> tuple[Tensor, Tensor]:
        """Permutation and flip mask of the current epoch, drawn from one seeded generator."""
        if self._order is None or self._order[0] != self.epoch:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
            perm = torch.randperm(len(self.dataset), generator=g)  # [N]
            flip = torch.rand(len(self.dataset), generator=g) < 0.5  # [N]
            self._order = (self.epoch, perm, flip)
        return self._order[1], self._order[2]

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        idxs, flips, need = [], [], self.batch_size
        while need:
            perm, flip = self._epoch_order()
            take = min(need, len(perm) - self.index)
            idxs.append(perm[self.index : self.index + take])
            flips.append(flip[self.index : self.index + take])
            self.index, need = self.index + take, need - take
            if self.index == len(perm):  # batches run on into the next epoch
                self.epoch, self.index = self.epoch + 1, 0
        i = torch.cat(idxs)  # [B]
        x = self.dataset.to_model(self.dataset.x[i])  # [B, ...]
        if self.hflip:
            f = torch.cat(flips)  # [B]
            x = torch.where(f[:, None, None, None], x.flip(-1), x)  # [B, C, H, W]
        labels = None if self.dataset.labels is None else self.dataset.labels[i]
        return x, labels

    def state_dict(self) -> dict[str, int]:
        """Data position: the next batch starts at item `index` of epoch `epoch`'s shuffle."""
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a position saved by state_dict (same dataset)."""
        missing = {"epoch", "index", "seed"} - set(state)
        if missing:
            raise UsageError(f"loader state lacks {sorted(missing)}; pass a saved state_dict()")
        if not 0 <= int(state["index"]) < len(self.dataset) or int(state["epoch"]) < 0:
            raise UsageError(
                f"loader state {dict(state)} does not fit a dataset of {len(self.dataset)} items; "
                "resume with the dataset it was saved with"
            )
        self.epoch, self.index, self.seed = (int(state[k]) for k in ("epoch", "index", "seed"))
        self._order = None
