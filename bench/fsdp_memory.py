"""What each process holds when N processes train one model, with DDP and with FSDP: the bytes of weights, gradients
and AdamW state in its own memory after a training step, its resident memory then (after handing freed memory
back to the system: glibc keeps freed blocks otherwise) and at its peak, and the step's time.

    export OMP_NUM_THREADS=1 MALLOC_MMAP_THRESHOLD_=65536
    torchrun --standalone --nproc_per_node=2 bench/fsdp_memory.py --n_layer 12 --n_embd 768 --n_head 12
    torchrun --standalone --nproc_per_node=2 bench/fsdp_memory.py --n_layer 12 --n_embd 768 --n_head 12 --fsdp

Uses the library's own pieces (distributed.shard / wrap, optim.configure_optimizer), random token ids over a
65-symbol vocabulary (the characters of tinyshakespeare) and fp32. Rank 0 prints one line per rank.
MALLOC_MMAP_THRESHOLD_ makes glibc hand every large freed block straight back, so that the peak resident memory
follows the tensors alive; without it, blocks freed during a step stay resident and inflate the peak.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tinygpt.training import distributed  # noqa: E402
from tinygpt.config import ModelConfig, TrainConfig  # noqa: E402
from tinygpt.models import build_model, count_params  # noqa: E402
from tinygpt.training.optim import configure_optimizer  # noqa: E402


def local_bytes(tensors) -> int:
    """Bytes this process holds for `tensors` (a DTensor counts its local shard only)."""
    from torch.distributed.tensor import DTensor
    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n_layer", type=int, default=12)
    p.add_argument("--n_embd", type=int, default=768)
    p.add_argument("--n_head", type=int, default=12)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--fsdp", action="store_true")
    args = p.parse_args()

    world = distributed.detect()
    device = distributed.setup(world, "cpu")
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=65, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd,
                      block_size=args.block_size)
    model = build_model(cfg)
    n_params = count_params(model)
    if args.fsdp:
        distributed.shard(model, world, device, torch.float32)
    optimizer = configure_optimizer(model, TrainConfig(), device)
    run = model if args.fsdp else distributed.wrap(model, world, device)
    gen = torch.Generator().manual_seed(world.rank)
    times, grads = [], 0
    for _ in range(args.steps):
        x = torch.randint(0, 65, (args.batch_size, args.block_size), generator=gen)
        t0 = time.perf_counter()
        _, loss = run(x, x)
        loss.backward()
        grads = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    weights = local_bytes({id(p): p for p in model.parameters()}.values())
    state = local_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import ctypes
    import gc
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * resource.getpagesize()
    mine = (world.rank, weights, grads, state, rss, peak, sorted(times)[len(times) // 2])
    everyone = distributed.gather(world, mine)
    if world.master:
        mode = "FSDP" if args.fsdp else "DDP"
        print(f"{mode}, {world.size} processes, {n_params / 1e6:.1f}M parameters "
              f"({args.n_layer} layers, {args.n_embd} wide), batch {args.batch_size} x {args.block_size} per process")
        for rank, w, g, s, r, pk, t in everyone:
            print(f"  rank {rank}: weights {w / 1e6:.0f} MB, gradients {g / 1e6:.0f} MB, AdamW state {s / 1e6:.0f} MB,"
                  f" total {(w + g + s) / 1e6:.0f} MB; RSS {r / 1e6:.0f} MB (peak {pk / 1e6:.0f} MB); "
                  f"median step {t * 1000:.0f} ms")
    distributed.teardown(world)


if __name__ == "__main__":
    main()
