"""Several processes training one model under torchrun: who am I, set-up, the two ways to split the work,
and the few collectives the training loop needs. With one process every function is a no-op on its input,
so the loop reads the same either way.

DDP (`wrap`): every process holds the whole model and optimizer state; gradients are averaged.
FSDP (`shard`, TrainConfig.fsdp): every process holds 1/N of each weight, gradient and optimizer state; a
block's weights are gathered whole only while it computes. Checkpoints stay whole either way: `full_state_dict`
gathers the shards onto rank 0 to save, and `load_optimizer_state` cuts a whole state back into shards."""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from tinygpt.config import SettingText


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


_joined = False  # did `setup` start the process group (rather than the program that called it)?


def setup(world: World, device: str) -> str:
    """Join the process group (nccl on GPUs, gloo on CPUs) and return this process's device."""
    if not world.enabled:
        return device
    if device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"
        torch.cuda.set_device(device)
    global _joined
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        _joined = True
    if device == "cpu":  # share the cores between the processes of this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return device


def teardown(world: World) -> None:
    """Leave the process group `setup` joined (one the caller started stays: it is theirs, and a group cannot
    reliably be started twice in one process). Without this, gloo's threads can outlive the interpreter's
    shutdown and abort the process after training succeeded ("terminate called without an active exception")."""
    global _joined
    if world.enabled and _joined and dist.is_initialized():
        gc.collect()  # models left over (FSDP's hold the group) go now, not during the interpreter's shutdown
        dist.destroy_process_group()
        _joined = False


def wrap(model: nn.Module, world: World, device: str) -> nn.Module:
    """DDP: the model, whose gradients are averaged over the processes in the backward pass."""
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP  # as shard()'s imports
    return DDP(model, device_ids=[world.local_rank] if device.startswith("cuda") else None)


def shard(model: nn.Module, world: World, device: str, dtype: torch.dtype) -> nn.Module:
    """FSDP (PyTorch's FSDP2, `fully_shard`), in place: one unit per block (`model.blocks`), then the root for
    the rest (embeddings, final norm, head). Every weight becomes a DTensor holding this process's 1/N of its
    rows; gradients and the optimizer state that is made from them (build the optimizer after this) are as
    small. A unit's weights are all-gathered just before its forward and backward and freed after; gradients
    are reduce-scattered. With bfloat16 on CUDA the gathered weights are bf16 and gradients are reduced in
    fp32; elsewhere everything moves in fp32 (autocast still computes in the run's precision)."""
    if not world.enabled:
        return model
    if dtype == torch.float16:
        raise ValueError(SettingText("`fsdp` does not support float16 (its loss scaling is not shard-aware); use "
                                     "`dtype`=bfloat16 or `dtype`=float32", "fsdp", "dtype"))
    # torch.distributed's pieces are imported where a run of several processes uses them: not every torch build
    # has them, and a run of one process never needs them
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device.split(":")[0], (world.size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if dtype == torch.bfloat16 and device.startswith("cuda") else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule  # as shard()'s imports
    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)  # _orig_mod: under torch.compile


def sync_gradients(model: nn.Module, sync: bool) -> None:
    """Whether the next backward pass averages gradients over the processes (DDP: all-reduce; FSDP:
    reduce-scatter). Off for every micro-batch of an accumulated step but the last: gradients then add up
    locally (under FSDP unsharded, so a step with accumulation holds one whole gradient per process)."""
    inner = getattr(model, "_orig_mod", model)
    if is_sharded(inner):
        inner.set_requires_gradient_sync(sync)
    elif hasattr(inner, "require_backward_grad_sync"):  # DDP
        inner.require_backward_grad_sync = sync


def full_state_dict(obj: nn.Module | torch.optim.Optimizer, world: World) -> dict[str, Any] | None:
    """obj.state_dict() (a model's or an optimizer's) as one process holds it without FSDP: every shard gathered
    whole and moved to the CPU, one tensor at a time, on rank 0; None on the other ranks. Same keys, shapes and
    layout as an unsharded run's, so a checkpoint made from it is like any other. Under FSDP a collective: every
    rank calls it, in the same order."""
    from torch.distributed.tensor import DTensor  # as shard()'s imports

    def whole(v: Any) -> Any:
        if isinstance(v, DTensor):
            full = v.full_tensor()  # all-gather
            return full.cpu() if world.master else None
        if isinstance(v, dict):
            return {k: whole(x) for k, x in v.items()}
        if isinstance(v, list):
            return [whole(x) for x in v]
        return v

    state = whole(obj.state_dict())
    return state if world.master else None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a whole optimizer state (as every checkpoint holds, however it was trained) into `optimizer`; where
    its parameters are FSDP shards, each process keeps its own slice of every tensor (no communication: every
    process has read the whole state)."""
    from torch.distributed.tensor import DTensor, distribute_tensor  # as shard()'s imports

    params = [p for group in optimizer.param_groups for p in group["params"]]  # the numbering of state_dict()

    def like(p: torch.Tensor, v: Any) -> Any:
        if isinstance(p, DTensor) and isinstance(v, torch.Tensor) and not isinstance(v, DTensor) \
                and v.shape == p.shape:
            return distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
        return v

    if any(isinstance(p, DTensor) for p in params):
        state = {**state, "state": {i: {k: like(params[i], v) for k, v in s.items()}
                                    for i, s in state["state"].items()}}
    optimizer.load_state_dict(state)


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


__all__ = ["World", "detect", "setup", "teardown", "wrap", "shard", "is_sharded", "sync_gradients",
           "full_state_dict", "load_optimizer_state", "barrier", "mean", "any_true", "gather", "from_master"]
