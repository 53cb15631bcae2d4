"""torch.distributed plumbing for torchrun: process-group setup, rank queries, and the DDP loss wrapper."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "LossModule", "init_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` and whether we made the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints and runs EMA evaluation."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA if available else CPU; under torchrun a bare ``cuda`` means GPU ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    if name == "cpu" or name.startswith("cuda:"):
        return torch.device(name)
    raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def init_distributed(device_name: str, timeout_s: float | None = None) -> DistInfo:
    """Join the process group torchrun describes in WORLD_SIZE/RANK/LOCAL_RANK (no-op for one process).

    The backend is NCCL when training on CUDA and gloo on CPU. An already initialised group is reused.
    ``timeout_s`` is how long a collective waits for the other ranks (torch's default, 10 minutes for NCCL, when
    None): the other ranks wait in the next step's all-reduce while rank 0 evaluates.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = None if timeout_s is None else datetime.timedelta(seconds=float(timeout_s))
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


class LossModule(nn.Module):
    """Makes ``model.loss(batch)`` the ``forward`` so DistributedDataParallel sees it and all-reduces grads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)
