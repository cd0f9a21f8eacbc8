"""Several processes training one model (DDP under torchrun): who am I, set-up, and the few collectives
the training loop needs. With one process every function is a no-op on its input, so the loop reads
the same either way."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    """This process's place: rank 0 of 1 when not launched by torchrun."""
    enabled: bool = False
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def detect() -> World:
    """Read torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return World()
    return World(True, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


def setup(world: World, device: str) -> str:
    """Join the process group (nccl on GPUs, gloo on CPUs) and return this process's device."""
    if not world.enabled:
        return device
    if device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device == "cpu":  # share the cores between the processes of this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return device


def teardown(world: World) -> None:
    """Leave the process group. Without this, gloo's threads can outlive the interpreter's shutdown and abort
    the process after training succeeded ("terminate called without an active exception")."""
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, device: str) -> nn.Module:
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[world.local_rank] if device.startswith("cuda") else None)


def barrier(world: World) -> None:
    if world.enabled:
        dist.barrier()


def mean(world: World, value: float, device: str) -> float:
    """The mean of a number over all processes."""
    if not world.enabled:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t)
    return t.item() / world.size


def any_true(world: World, flag: bool, device: str) -> bool:
    """True on every process if it is true on any (so all stop at the same step)."""
    if not world.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return t.item() > 0


def gather(world: World, obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order (a list of one without DDP)."""
    if not world.enabled:
        return [obj]
    everyone: list[Any] = [None] * world.size
    dist.all_gather_object(everyone, obj)
    return everyone


def from_master(world: World, obj: Any) -> Any:
    """Rank 0's `obj`, on every process."""
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["World", "detect", "setup", "teardown", "wrap", "barrier", "mean", "any_true", "gather", "from_master"]
