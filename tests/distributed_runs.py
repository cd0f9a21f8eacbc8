"""Runs in two processes for tests/test_distributed.py, and what lets one process reproduce them.

Under torchrun (`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_runs.py OUT
TEXT`) this trains, in one process group, the runs of PLAN into OUT (DDP and FSDP from scratch, FSDP stopped
half-way and resumed, DDP stopped half-way and resumed with FSDP), OUT/fsdp_stop (FSDP ended by a stop_when
test), then OUT/cli with `tinygpt train --fsdp`.
The group is started here, once: train() then leaves it alone, and every run shares it (a gloo group started
twice in one process can hang).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

RANKS = 2
BATCH = 2  # rows per process and micro-step
STEPS, HALF = 6, 3
# (run directory, steps to reach, fsdp, resume)
PLAN = [("ddp", STEPS, False, False), ("fsdp", STEPS, True, False),
        ("fsdp_split", HALF, True, False), ("fsdp_split", STEPS, True, True),
        ("ddp_then_fsdp", HALF, False, False), ("ddp_then_fsdp", STEPS, True, True)]


def torchrun(args: list[str], cwd: Path) -> str:
    """Run `args` in RANKS CPU processes under torchrun (the launcher the tests share); returns stderr, or fails
    with the failing rank's traceback and the end of torchrun's summary."""
    import os
    import signal
    import subprocess
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a new process group, so a hung run can be killed with all its workers
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    first = stderr.find("Traceback")  # the failing rank's own traceback, then torchrun's summary
    assert proc.returncode == 0, (stderr[first:first + 4000] if first >= 0 else "") + stderr[-1500:]
    return stderr


def setup(text: str, max_iters: int, batch_size: int, **overrides):
    """(model config, train config, data, tokenizer) of the tiny runs: 2 layers, 15 positions (an odd number, so
    the position embedding's rows split unevenly over two processes), two micro-steps per step, clipping on, fp32."""
    from tinygpt.config import build_configs
    from tinygpt.data.text import TextData
    from tinygpt.tokenizers import CharTokenizer

    tok = CharTokenizer.train(text)
    model_cfg, cfg = build_configs({**dict(
        n_layer=2, n_head=2, n_embd=32, block_size=15, dropout=0.0, batch_size=batch_size, max_iters=max_iters,
        gradient_accumulation_steps=2, learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=STEPS,
        grad_clip=1.0, eval_interval=HALF, eval_iters=2, log_interval=1, device="cpu", dtype="float32"),
        **overrides}, vocab_size=tok.vocab_size)
    return model_cfg, cfg, TextData.from_text(text, tok, model_cfg.block_size), tok


class AsOneBatch:
    """The batches `ranks` processes draw, as one batch for one process. train() seeds rank r's training stream
    with seed + r and its evaluation batches with eval_seed + r; get_batch(split, n, gen) returns the n / ranks
    rows drawn from `gen` (rank 0's) followed by those each other rank r draws from a generator seeded
    gen.initial_seed() + r. A one-process run on it takes the same steps as a run in `ranks` processes."""

    def __init__(self, inner, ranks: int = RANKS):
        self.inner, self.ranks = inner, ranks
        self.block_size = inner.block_size
        self.streams: dict[int, tuple[torch.Generator, ...]] = {}  # holds each generator, so its id stays its own

    def get_batch(self, split: str, batch_size: int, generator: torch.Generator):
        gens = self.streams.get(id(generator))
        if gens is None:
            others = (torch.Generator().manual_seed(generator.initial_seed() + r) for r in range(1, self.ranks))
            gens = self.streams[id(generator)] = (generator, *others)
        parts = [self.inner.get_batch(split, batch_size // self.ranks, g) for g in gens]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


CLI_FLAGS = ["--n_layer=2", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2", "--max_iters=2",
             "--eval_interval=2", "--eval_iters=1", "--device=cpu", "--dtype=float32", "--quiet"]


def stop_at_half(model, metrics) -> str | None:
    """A stop_when test (run on rank 0 only) that ends training at step HALF, saying how many of the weights it
    was given are shards (under FSDP it must get a whole model, as with one process)."""
    from torch.distributed.tensor import DTensor
    shards = sum(isinstance(p, DTensor) for p in model.parameters())
    return f"step {metrics['step']}, {shards} sharded weights" if metrics["step"] >= HALF else None


def main(out: Path, text_file: Path) -> None:
    import torch.distributed as dist

    from tinygpt.cli.main import main as cli
    from tinygpt.training.loop import train

    text = text_file.read_text(encoding="utf-8")
    dist.init_process_group("gloo")
    try:
        for name, steps, fsdp, resume in PLAN:
            model_cfg, cfg, data, tok = setup(text, steps, BATCH, fsdp=fsdp)
            train(model_cfg, cfg, data, tok, out / name, resume=resume)
        model_cfg, cfg, data, tok = setup(text, STEPS, BATCH, fsdp=True)
        train(model_cfg, cfg, data, tok, out / "fsdp_stop", stop_when=stop_at_half)
        assert cli(["train", "--fsdp", "--data", str(text_file), "--out", str(out / "cli"), *CLI_FLAGS]) == 0
    finally:
        # the runs' models (FSDP's hold the group and its pending work) go first, while the interpreter is whole:
        # left to its shutdown, gloo's threads can abort the process after everything succeeded
        import gc
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
