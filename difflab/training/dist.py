"""torchrun / DistributedDataParallel set-up: NCCL on GPU, gloo on CPU, no MPI."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    """This process's place in the job: rank r of `size` ranks, on `device`."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch [size·B, ...] → [B, ...]."""
        return batch.chunk(self.size)[self.rank] if self.size > 1 else batch


def pick_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when present, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup(device: str = "auto") -> World:
    """Join the torchrun job if WORLD_SIZE > 1 (env:// rendezvous), else a one-process world."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if size == 1:
        return World(device=dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), dev)


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
