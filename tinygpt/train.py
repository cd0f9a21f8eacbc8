"""The one training loop: AdamW, warmup + cosine schedule, accumulation, clipping, mixed precision,
evaluation, checkpoints, exact resume, metrics, Ctrl-C/SIGTERM handling, and DDP under torchrun.

The library never prints: progress reaches the caller through a `Hooks` object (the CLI draws a bar).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn

from .checkpoint import CheckpointError, load_state, read_config, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import BatchSource
from .device import autocast, choose_device, choose_dtype
from .models import build_model
from .tokenizers import Tokenizer

METRICS = "metrics.jsonl"


class RunDirError(ValueError):
    """The output directory cannot be used as asked (it holds another run, or no run to resume)."""


# --- pure pieces -------------------------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, cosine decay to min_lr, then flat.
    With learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000: lr_at(0) = 1e-5 * (1/1.01)
    ... lr_at(100) = 1e-3, lr_at(2550) ~ 5.5e-4, lr_at(5000) = 1e-4."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    decay = cfg.decay_iters
    if step >= decay:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases and LayerNorm gains)."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kind = device.split(":")[0]
    # fused kernels exist for CUDA and CPU; one kernel for all parameters instead of many small ones
    fused = kind in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


@torch.no_grad()
def evaluate(model: nn.Module, source: BatchSource, split: str, iters: int, batch_size: int,
             seed: int, device: str, dtype: torch.dtype = torch.float32) -> float:
    """Mean loss over `iters` batches drawn with a fixed seed: the same batches at every evaluation,
    so successive figures differ only because the model changed."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(iters):
        x, y = source.get_batch(split, batch_size, gen)
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device))
        total += loss.item()
    model.train(was_training)
    return total / iters


def bits(loss: float, tokens_per_unit: float) -> float:
    """Nats per token -> bits per character (or byte): loss / ln 2 * tokens per character."""
    return loss / math.log(2) * tokens_per_unit


# --- hooks: how the loop reports (the CLI subclasses this) ----------------------------------------

class Hooks:
    """Null object: override what you need. Called on rank 0 only."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_step(self, metrics: dict[str, Any]) -> None: ...
    def on_eval(self, metrics: dict[str, Any]) -> None: ...
    def on_checkpoint(self, path: Path, kind: str) -> None: ...
    def on_end(self, result: "RunResult") -> None: ...


@dataclass
class RunResult:
    out_dir: Path
    step: int
    best_val_loss: float
    last_val_loss: float | None
    stopped_by: str | None  # None if max_iters was reached, else "SIGINT" / "SIGTERM"
    finished_early: str | None = None  # why stop_when ended training before max_iters (the run is complete)


# --- run directories ---------------------------------------------------------------------------

RUN_FILES = ("latest", "best", METRICS, ".tmp-latest", ".tmp-best", ".old-latest", ".old-best")


def holds_run(out: Path) -> bool:
    return any((out / f).exists() for f in ("latest", "best", ".old-latest", METRICS))


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: a directory holding a run is only reused with resume or an explicit overwrite."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory")
    if resume:
        if not ((out / "latest").exists() or (out / ".old-latest").exists()):
            raise RunDirError(f"nothing to resume: {out} holds no latest/ checkpoint")
        return
    if holds_run(out):
        if not overwrite:
            raise RunDirError(f"{out} already holds a run; use --resume to continue it or --overwrite to replace it")
        for name in RUN_FILES:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def latest_checkpoint(out: Path) -> Path:
    for name in ("latest", ".old-latest"):
        if (out / name / "config.json").exists():
            return out / name
    raise RunDirError(f"nothing to resume: {out} holds no latest/ checkpoint")


def resume_configs(out: Path, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
    """The configs a resumed run continues with: the checkpoint's, updated by explicit training overrides.
    Architecture keys cannot change on resume."""
    from .config import MODEL_KEYS, model_config_from_dict, parse_value, train_config_from_dict

    cfg = read_config(latest_checkpoint(out))
    model_cfg = model_config_from_dict(cfg["model"])
    for k, v in overrides.items():
        if k in MODEL_KEYS and parse_value(k, v) != getattr(model_cfg, k):
            raise RunDirError(f"cannot change {k} when resuming (the checkpoint has {getattr(model_cfg, k)!r})")
    train = {**cfg.get("train", {}), **{k: parse_value(k, v) for k, v in overrides.items() if k not in MODEL_KEYS}}
    return model_cfg, train_config_from_dict(train), cfg


# --- the loop ----------------------------------------------------------------------------------

class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (a second one
    interrupts at once). Restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second signal: give up at once
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _dist_info() -> tuple[bool, int, int, int]:
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 0, 1
    return True, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])


def train(model_cfg: ModelConfig, cfg: TrainConfig, source: BatchSource, tokenizer: Tokenizer,
          out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          meta: dict[str, Any] | None = None, hooks: Hooks | None = None,
          stop_when: Callable[[nn.Module, dict[str, Any]], str | None] | None = None) -> RunResult:
    """Train `model_cfg` on `source` with `cfg`, writing checkpoints and metrics.jsonl into out_dir.

    resume=True continues the run in out_dir from latest/ exactly where it stopped (weights, optimizer,
    step, RNG and data position): N steps straight equal k steps + resume + N - k steps, bit for bit on CPU.
    meta: extra JSON facts stored in every checkpoint's config.json (data path, task, ...).
    stop_when(model, metrics): asked after each evaluation (model in eval mode, metrics = that step's line);
    returning a reason (a string) ends training there, as complete: a checkpoint is saved and the reason is
    logged as "finished_early" and returned in RunResult.finished_early.
    """
    out = Path(out_dir)
    hooks = hooks or Hooks()
    ddp, rank, local_rank, world = _dist_info()
    master = rank == 0
    device = choose_device(cfg.device)
    if ddp:
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        if device == "cpu":  # share the cores between the processes of this machine
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dtype = choose_dtype(cfg.dtype, device)
    if master:
        prepare_run_dir(out, resume, overwrite)
    if ddp:
        dist.barrier()

    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(model_cfg)
    state = None
    if resume:
        from safetensors.torch import load_file
        ckpt = latest_checkpoint(out)
        weights = load_file(str(ckpt / "model.safetensors"))
        model.load_state_dict(weights, strict=False)
        state = load_state(ckpt)
    model.to(device)
    optimizer = configure_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=(dtype == torch.float16))

    data_gen = torch.Generator().manual_seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)  # dropout differs per rank
    step, best_val, elapsed_before = 0, float("inf"), 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, best_val, elapsed_before = int(state["step"]), float(state["best_val_loss"]), float(state["elapsed_s"])
        rngs = state["rng"]
        if len(rngs) == world:
            torch.set_rng_state(rngs[rank]["torch"])
            data_gen.set_state(rngs[rank]["data"])
            if device.startswith("cuda") and "cuda" in rngs[rank]:
                torch.cuda.set_rng_state(rngs[rank]["cuda"], device)
        if master:
            _truncate_metrics(out / METRICS, step)

    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[local_rank] if device.startswith("cuda") else None)

    tokens_per_step = cfg.batch_size * model_cfg.block_size * cfg.gradient_accumulation_steps * world
    meta = {**(meta or {}), "train": asdict(cfg)}
    eval_seed = cfg.seed + 10_000  # fixed evaluation batches, separate from the training stream

    def rng_state() -> list[dict[str, torch.Tensor]]:
        mine = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
        if device.startswith("cuda"):
            mine["cuda"] = torch.cuda.get_rng_state(device)
        if not ddp:
            return [mine]
        everyone: list[Any] = [None] * world
        dist.all_gather_object(everyone, mine)
        return everyone

    def save(kind_val: float | None) -> None:
        nonlocal best_val
        rngs = rng_state()  # collective: every rank must call it
        if not master:
            return
        step_meta = {**meta, "step": step, "val_loss": kind_val}
        state_dict = {"step": step, "best_val_loss": min(best_val, kind_val if kind_val is not None else best_val),
                      "elapsed_s": elapsed_before + (time.perf_counter() - t_start),
                      "optimizer": optimizer.state_dict(), "rng": rngs, "world_size": world}
        try:
            path = save_checkpoint(out / "latest", raw_model, tokenizer, step_meta, state_dict)
            hooks.on_checkpoint(path, "latest")
            if kind_val is not None and kind_val < best_val:
                best_val = kind_val
                path = save_checkpoint(out / "best", raw_model, tokenizer, step_meta)
                hooks.on_checkpoint(path, "best")
        except OSError as e:
            raise CheckpointError(f"could not write a checkpoint in {out}: {e.strerror or e}; "
                                  f"the previous checkpoint is intact") from None

    def run_eval() -> dict[str, float]:
        res = {}
        for split in ("train", "val"):
            loss = evaluate(model, source, split, cfg.eval_iters, cfg.batch_size, eval_seed + rank, device, dtype)
            if ddp:
                t = torch.tensor([loss], device=device)
                dist.all_reduce(t)
                loss = t.item() / world
            res[split] = loss
        if hasattr(source, "tokens_per_char"):  # bits per character / byte compare across tokenizers
            res["val_bits_per_char"] = bits(res["val"], source.tokens_per_char("val"))
            res["val_bits_per_byte"] = bits(res["val"], source.tokens_per_byte("val"))
        return res

    def log(line: dict[str, Any]) -> None:
        if master:
            with open(out / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    if master:
        from .models import count_params
        hooks.on_start({"device": device, "dtype": str(dtype).replace("torch.", ""), "step": step,
                        "max_iters": cfg.max_iters,
                        "params": count_params(raw_model), "tokens_per_step": tokens_per_step,
                        "world_size": world, "resumed": resume})

    t_start = time.perf_counter()
    last_val: float | None = None
    model.train()
    if step == 0:
        ev = run_eval()
        last_val = ev["val"]
        line = {"step": 0, "train_loss": ev["train"], "lr": lr_at(0, cfg), "tokens_per_sec": 0.0,
                "elapsed_s": 0.0, "val_loss": ev.pop("val"), "eval_train_loss": ev.pop("train"), **ev}
        log(line)
        if master:
            hooks.on_eval(line)
    stop = _StopFlag()
    finished: str | None = None
    with stop:
        while step < cfg.max_iters:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.gradient_accumulation_steps):
                x, y = source.get_batch("train", cfg.batch_size, data_gen)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if ddp:  # all-reduce gradients only on the last micro-step
                    model.require_backward_grad_sync = micro == cfg.gradient_accumulation_steps - 1
                with autocast(device, dtype):
                    _, loss = model(x, y)
                    loss = loss / cfg.gradient_accumulation_steps
                scaler.scale(loss).backward()
                loss_sum += loss.item()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0

            stop_now = stop.signal is not None
            if ddp:  # every rank must stop at the same step
                flag = torch.tensor([1.0 if stop_now else 0.0], device=device)
                dist.all_reduce(flag)
                stop_now = flag.item() > 0
            is_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            if step % cfg.log_interval == 0 or is_eval or step == 1 or stop_now:
                line = {"step": step, "train_loss": loss_sum, "lr": lr, "tokens_per_sec": tokens_per_step / dt,
                        "elapsed_s": elapsed_before + time.perf_counter() - t_start, "dt_ms": dt * 1000}
                if is_eval:
                    ev = run_eval()
                    last_val = ev["val"]
                    line.update(val_loss=ev.pop("val"), eval_train_loss=ev.pop("train"), **ev)
                    if stop_when is not None and step < cfg.max_iters:
                        finished = _ask_stop(stop_when, raw_model, line, master, ddp)
                        if finished:
                            line["finished_early"] = finished
                            stop_now = True
                log(line)
                if master:
                    hooks.on_step(line)
                    if is_eval:
                        hooks.on_eval(line)
                if is_eval or stop_now:
                    save(line.get("val_loss"))
            if stop_now:
                break
    result = RunResult(out, step, best_val, last_val, stop.signal, finished)
    if master:
        hooks.on_end(result)
    return result


def _ask_stop(stop_when: Callable[[nn.Module, dict[str, Any]], str | None], model: nn.Module,
              metrics: dict[str, Any], master: bool, ddp: bool) -> str | None:
    """Run the caller's finishing test on rank 0 (model in eval mode) and share the answer with every rank."""
    reason = None
    if master:
        model.eval()
        try:
            reason = stop_when(model, metrics)
        finally:
            model.train()
    if ddp:
        box = [reason]
        dist.broadcast_object_list(box, src=0)
        reason = box[0]
    return reason


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (those steps are done again)."""
    if not path.exists():
        return
    kept = [ln for ln in path.read_text(encoding="utf-8").splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        raise RunDirError(f"{run_dir} has no {METRICS}")
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@torch.no_grad()
def evaluate_stream(model: nn.Module, ids: Any, block_size: int, batch_size: int = 32,
                    device: str = "cpu") -> tuple[float, int]:
    """Exact mean loss over a whole token stream, cut into consecutive windows of block_size + 1 ids
    that overlap by one (every token but the first is predicted exactly once). Returns (loss, n_predicted)."""
    import numpy as np

    model.eval()
    data = torch.from_numpy(np.asarray(ids).astype(np.int64))
    n = len(data) - 1
    if n < 1:
        raise ValueError("need at least 2 tokens to evaluate")
    starts = list(range(0, n, block_size))
    total, count = 0.0, 0
    for i in range(0, len(starts), batch_size):
        chunk = starts[i:i + batch_size]
        T = min(block_size, n - chunk[-1])  # the last window may be shorter
        full = [s for s in chunk if s + block_size <= n]
        groups = [(full, block_size)] + ([([chunk[-1]], T)] if T < block_size else [])
        for group, t in groups:
            if not group:
                continue
            block = torch.stack([data[s:s + t + 1] for s in group]).to(device)
            _, loss = model(block[:, :-1], block[:, 1:])
            total += loss.item() * block[:, 1:].numel()
            count += block[:, 1:].numel()
    return total / count, count
