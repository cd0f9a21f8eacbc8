"""The one training loop: AdamW (or Muon) steps with warmup + cosine schedule, gradient accumulation, clipping, mixed
precision, periodic evaluation and checkpoints, exact resume, early finishing, and a stop on divergence.

Around it, each in its own module: the run directory and its checkpoints (run.py), the optimizer and
schedule (optim.py), evaluation (evaluate.py), several processes (distributed.py), Ctrl-C (signals.py).
The library never prints unless asked: progress reaches the caller through a `Hooks` object (the CLI draws a bar;
from Python, train() draws one on a terminal: progress.py). How fast the steps go is measured by throughput.py,
evaluations apart.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from tinygpt.config import ModelConfig, SettingText, TrainConfig
from tinygpt.data.text import BatchSource, ScoredSource
from tinygpt.device import autocast, choose_device, choose_dtype
from tinygpt.models import build_model, count_params
from tinygpt.tokenizers import Tokenizer
from tinygpt.training import distributed
from tinygpt.training.checkpoint import load_model, read_config, save_checkpoint
from tinygpt.training.evaluate import bits, evaluate
from tinygpt.training.memory import check_fits
from tinygpt.training.optim import configure_optimizer, lr_at
from tinygpt.training.progress import TrainingProgress
from tinygpt.training.run import Run
from tinygpt.training.signals import StopFlag
from tinygpt.training.steady_heap import steady_heap
from tinygpt.training.throughput import Throughput


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stopped being finite numbers; the message is one line, fit for the CLI."""


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


StopWhen = Callable[[nn.Module, dict[str, Any]], "str | None"]


def train(model_cfg: ModelConfig, cfg: TrainConfig, source: BatchSource, tokenizer: Tokenizer,
          out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          meta: dict[str, Any] | None = None, hooks: Hooks | None = None,
          stop_when: StopWhen | None = None, init_from: str | Path | None = None, quiet: bool = False) -> RunResult:
    """Train `model_cfg` on `source` with `cfg`, writing checkpoints and metrics.jsonl into out_dir.

    resume=True continues the run in out_dir from latest/ exactly where it stopped (weights, optimizer,
    step, RNG states): N steps straight equal k steps + resume + N - k steps, bit for bit on CPU.
    overwrite=True replaces a run already there (kept until the new one has saved its first checkpoint).
    meta: extra JSON facts stored in every checkpoint's config.json (data path, task, ...).
    stop_when(model, metrics): asked after each evaluation (model in eval mode, metrics = that step's line);
    returning a reason (a string) ends training there, as complete: a checkpoint is saved and the reason is
    logged as "finished_early" and returned in RunResult.finished_early.
    init_from: a checkpoint directory whose weights a new run starts from instead of random ones (fine-tuning;
    a fresh optimizer and schedule); model_cfg must be its config, except dropout and a shorter block_size
    (the position embeddings are cropped to it).
    hooks: what hears of the run's progress (see Hooks). None: on a terminal (stderr is one) a progress bar with
    the time left, the evaluations and a time estimate (TrainingProgress); elsewhere, or with quiet=True, nothing.
    Pass hooks=TrainingProgress() for its lines in a log or a notebook too.
    Raises TrainingDiverged (after keeping the last good checkpoint) when the loss stops being finite.
    """
    if hooks is None:
        hooks = TrainingProgress() if not quiet and sys.stderr.isatty() else Hooks()
    if model_cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"the model config has vocab_size {model_cfg.vocab_size} but the tokenizer has "
                         f"{tokenizer.vocab_size} tokens")
    world = distributed.detect()
    device = distributed.setup(world, choose_device(cfg.device))
    run = Run(out_dir)
    if world.master:
        check_fits(model_cfg, cfg, device, shards=world.size if cfg.fsdp else 1)
        run.start(resume=resume, overwrite=overwrite)
    try:
        distributed.barrier(world)
        with steady_heap(device):  # each step reuses the last one's memory instead of faulting it in anew
            dtype, probe = _training_dtype(cfg, model_cfg, source, device, run, resume, world)
            loop = _Loop(run, world, device, dtype, model_cfg, cfg, source, tokenizer, meta or {},
                         hooks, stop_when, resume, init_from)
            loop.probe = probe
            result = loop.go()
            del loop  # its model goes before the process group does (an FSDP model holds the group and its work)
        distributed.barrier(world)  # leave together: a rank tearing down while another still saves can abort
        return result
    except BaseException:
        if world.master:
            run.undo_unsaved_overwrite()
        raise
    finally:
        run.close()
        distributed.teardown(world)


def _training_dtype(cfg: TrainConfig, model_cfg: ModelConfig, source: BatchSource, device: str, run: Run,
                    resume: bool, world: distributed.World) -> tuple[torch.dtype, dict[str, float]]:
    """The precision to train in. `auto` on a CPU with bf16 units times a few real steps in fp32 and bf16 and
    takes the faster (device.choose_dtype; under FSDP it takes bf16 untimed); a resumed run keeps the precision
    it was started with, so that resuming stays exact. Every rank uses rank 0's choice. Returns (dtype, ms per
    step of each timed dtype)."""
    if cfg.dtype == "auto" and resume:
        recorded = read_config(run.resume_point()).get("dtype")
        if recorded in ("float32", "bfloat16", "float16"):
            return getattr(torch, recorded), {}
    # no probe under FSDP: it would build the whole model and its optimizer state in every process
    timer = _StepTimer(model_cfg, cfg, source, device) if cfg.dtype == "auto" and not (
        cfg.fsdp and world.size > 1) else None
    try:
        dtype = choose_dtype(cfg.dtype, device, timer)
    finally:
        if timer is not None:
            timer.close()  # the probe's model and optimizer state must not stay beside the real ones
    probe = {str(d).replace("torch.", ""): 1000 * sorted(ts[1:])[len(ts[1:]) // 2]  # as `fastest`: no warm-up
             for d, ts in getattr(timer, "times", {}).items() if len(ts) > 1}
    return distributed.from_master(world, (dtype, probe))


class _StepTimer:
    """timer(dtype) -> seconds of one real training step (forward, backward, AdamW) of a throwaway copy of the
    model on one real batch. The random state of the run is left untouched; `.times` keeps every timing.
    `close()` frees the copy and its optimizer state, before the real model is built."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, source: BatchSource, device: str):
        self.model_cfg, self.cfg, self.source, self.device = model_cfg, cfg, source, device
        self.times: dict[torch.dtype, list[float]] = {}
        self._probe: dict[str, Any] = {}

    def __call__(self, dtype: torch.dtype) -> float:
        probe, device = self._probe, self.device
        with torch.random.fork_rng(devices=[]):
            if not probe:
                torch.manual_seed(0)
                probe["model"] = build_model(self.model_cfg).to(device).train()
                probe["opt"] = configure_optimizer(probe["model"], self.cfg, device)
                x, y = self.source.get_batch("train", self.cfg.batch_size, torch.Generator().manual_seed(0))
                probe["batch"] = (x.to(device), y.to(device))
            (x, y), model, opt = probe["batch"], probe["model"], probe["opt"]
            t0 = time.perf_counter()
            with autocast(device, dtype):
                _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
        self.times.setdefault(dtype, []).append(seconds)
        return seconds

    def close(self) -> None:
        self._probe.clear()


class _Loop:
    """The state of one training run (model, optimizer, step, RNGs) and its four moves: step, evaluate,
    save, finish. `go()` is the loop; `run` is the run directory it writes (a `Run`)."""

    def __init__(self, run: Run, world: distributed.World, device: str, dtype: torch.dtype,
                 model_cfg: ModelConfig, cfg: TrainConfig, source: BatchSource, tokenizer: Tokenizer,
                 meta: dict[str, Any], hooks: Hooks, stop_when: StopWhen | None, resume: bool,
                 init_from: str | Path | None = None):
        self.run, self.world, self.device, self.dtype = run, world, device, dtype
        self.cfg, self.source, self.tokenizer, self.hooks, self.stop_when = cfg, source, tokenizer, hooks, stop_when
        self.resumed = resume
        self.meta = {**meta, "train": asdict(cfg), "dtype": str(dtype).replace("torch.", "")}
        self.probe: dict[str, float] = {}  # ms per step of each precision, when `auto` timed them

        torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        state = None
        if resume:
            model, _, _ = load_model(run.resume_point())
            if model.config != model_cfg:
                raise ValueError(f"the model config differs from the checkpoint's in {run.resume_point()}")
            model.train()
            state = run.resume_state()
        else:
            model = build_model(model_cfg)
            if init_from is not None:
                _load_initial_weights(model, Path(init_from))
        self.raw_model = model.to(device)
        self.sharded = cfg.fsdp and world.size > 1  # FSDP in one process has nothing to shard over
        if self.sharded:  # in place, before the optimizer is made: it then holds shards too
            distributed.shard(self.raw_model, world, device, dtype)
        self.optimizer = configure_optimizer(self.raw_model, cfg, device)
        self.scaler = torch.amp.GradScaler(device.split(":")[0], enabled=(dtype == torch.float16))
        self.data_gen = torch.Generator().manual_seed(cfg.seed + world.rank)
        torch.manual_seed(cfg.seed + world.rank)  # dropout differs per rank
        self.step, self.best_val, self.elapsed_before = 0, float("inf"), 0.0
        self.saved_step: int | None = None
        if state is not None:
            self._restore(state)
        model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        self.model = model if self.sharded else distributed.wrap(model, world, device)
        self.tokens_per_step = cfg.batch_size * model_cfg.block_size * cfg.gradient_accumulation_steps * world.size
        self.eval_seed = cfg.seed + 10_000  # fixed evaluation batches, separate from the training stream
        self.pace = Throughput(cfg.max_iters, self.step, self.tokens_per_step, cfg.eval_interval)
        self.t_start = time.perf_counter()

    # --- the loop ------------------------------------------------------------------------------------

    def go(self) -> RunResult:
        cfg = self.cfg
        if self.world.master:
            self.hooks.on_start({"device": self.device, "dtype": str(self.dtype).replace("torch.", ""),
                                 "dtype_probe": self.probe,
                                 "step": self.step, "max_iters": cfg.max_iters, "params": count_params(self.raw_model),
                                 "tokens_per_step": self.tokens_per_step, "world_size": self.world.size,
                                 "resumed": self.resumed, "fsdp": self.sharded if cfg.fsdp else None,
                                 "pace": self.pace, "may_finish_early": self.stop_when is not None})
        self.t_start = time.perf_counter()
        last_val: float | None = None
        finished: str | None = None
        self.model.train()
        if self.step == 0:
            t0 = time.perf_counter()
            ev = self.evaluate()
            last_val = ev["val"]
            line = {"step": 0, "train_loss": ev["train"], "lr": lr_at(0, cfg), "tokens_per_sec": 0.0,
                    "elapsed_s": 0.0, "val_loss": ev.pop("val"), "eval_train_loss": ev.pop("train"), **ev}
            self.log(line, evaluated=True)
            self.pace.add_evaluation(time.perf_counter() - t0)
        with StopFlag() as stop:
            while self.step < cfg.max_iters:
                line = self.train_step()
                t0 = time.perf_counter()  # what follows the step (evaluation, checkpoint) is timed apart
                stop_now = distributed.any_true(self.world, stop.signal is not None, self.device)
                is_eval = self.step % cfg.eval_interval == 0 or self.step == cfg.max_iters
                if is_eval:
                    ev = self.evaluate()
                    last_val = ev["val"]
                    line.update(val_loss=ev.pop("val"), eval_train_loss=ev.pop("train"), **ev)
                    if self.stop_when is not None and self.step < cfg.max_iters:
                        finished = self.ask_stop(line)
                        if finished:
                            line["finished_early"] = finished
                            stop_now = True
                if self.step % cfg.log_interval == 0 or is_eval or self.step == 1 or stop_now:
                    self.log(line, evaluated=is_eval)
                if is_eval or stop_now:
                    self.save(line.get("val_loss"))
                if is_eval:
                    self.pace.add_evaluation(time.perf_counter() - t0)
                if stop_now:
                    break
        result = RunResult(self.run.path, self.step, self.best_val, last_val, stop.signal, finished)
        if self.world.master:
            self.hooks.on_end(result)
        return result

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (accumulating over micro-batches); returns its metrics line."""
        cfg, t0 = self.cfg, time.perf_counter()
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices: their own peak, the same schedule
        loss_sum = 0.0
        for micro in range(cfg.gradient_accumulation_steps):
            x, y = self.source.get_batch("train", cfg.batch_size, self.data_gen)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.world.enabled:  # average gradients over the processes only on the last micro-step
                distributed.sync_gradients(self.model, micro == cfg.gradient_accumulation_steps - 1)
            with autocast(self.device, self.dtype):
                _, loss = self.model(x, y)
                loss = loss / cfg.gradient_accumulation_steps
            self.scaler.scale(loss).backward()
            loss_sum += loss.item()
        grad_norm = None
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.check_finite(loss_sum, grad_norm, lr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        self.pace.add_step(dt)
        return {"step": self.step, "train_loss": loss_sum, "lr": lr, "tokens_per_sec": self.tokens_per_step / dt,
                "elapsed_s": self.elapsed(), "dt_ms": dt * 1000}

    # --- its moves ---------------------------------------------------------------------------------

    def check_finite(self, loss: float, grad_norm: float | None, lr: float, step: int | None = None,
                     what: str = "loss") -> None:
        """Stop before a non-finite loss or gradient reaches the weights (fp16's loss scaler handles its own
        overflowing gradients by skipping the step, so only the loss counts there). `step`: the step to blame
        (default: the one about to be taken)."""
        bad = not math.isfinite(loss) or (grad_norm is not None and not self.scaler.is_enabled()
                                          and not math.isfinite(grad_norm))
        if not distributed.any_true(self.world, bad, self.device):
            return
        what = f"the {what} became {loss}" if not math.isfinite(loss) else f"the gradient norm became {grad_norm}"
        kept = (f"the last good checkpoint (step {self.saved_step}) is kept in {self.run.path}/latest"
                if self.saved_step is not None else "no checkpoint of this run was saved")
        step = self.step + 1 if step is None else step
        raise TrainingDiverged(SettingText(f"training diverged at step {step}: {what} (learning_rate {lr:.3g}); "
                                           f"{kept}. Try a lower `learning_rate`, `grad_clip`=1.0, or `dtype`=float32",
                                           "learning_rate", "grad_clip", "dtype"))

    def evaluate(self) -> dict[str, float]:
        res = {}
        for split in ("train", "val"):
            loss = evaluate(self.model, self.source, split, self.cfg.eval_iters, self.cfg.batch_size,
                            self.eval_seed + self.world.rank, self.device, self.dtype)
            res[split] = distributed.mean(self.world, loss, self.device)
        if not math.isfinite(res["train"]) or not math.isfinite(res["val"]):
            # the update of the step just taken made the weights produce it
            self.check_finite(float("nan"), None, lr_at(max(self.step - 1, 0), self.cfg), step=self.step,
                              what="evaluation loss")
        if hasattr(self.source, "tokens_per_char"):  # text sources: bits per character / byte compare tokenizers
            res["val_bits_per_char"] = bits(res["val"], self.source.tokens_per_char("val"))
            res["val_bits_per_byte"] = bits(res["val"], self.source.tokens_per_byte("val"))
        if isinstance(self.source, ScoredSource):  # e.g. chat: exact match of replies to held-out questions
            res.update(self.source.metrics(self.raw_model))
        return res

    def ask_stop(self, metrics: dict[str, Any]) -> str | None:
        """Run the caller's finishing test on rank 0 (model in eval mode) and share the answer with every rank."""
        reason = None
        model, _ = self.whole(optimizer=False)  # collective under FSDP
        if self.world.master:
            model = model.to(self.device)
            model.eval()
            try:
                reason = self.stop_when(model, metrics)
            finally:
                model.train()
        return distributed.from_master(self.world, reason)

    def whole(self, optimizer: bool = True) -> tuple[nn.Module | None, dict[str, Any] | None]:
        """(the model, the optimizer's state dict) whole, as an unsharded run holds them, on rank 0; (None, None)
        on the other ranks. Under FSDP the shards are gathered (a collective: every rank calls it) into a copy of
        the model on the CPU."""
        if not self.sharded:
            if not self.world.master:
                return None, None
            return self.raw_model, self.optimizer.state_dict() if optimizer else None
        weights = distributed.full_state_dict(self.raw_model, self.world)
        opt_state = distributed.full_state_dict(self.optimizer, self.world) if optimizer else None
        if not self.world.master:
            return None, None
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the run's random stream
            model = build_model(self.raw_model.config)
        model.load_state_dict(weights)
        return model, opt_state

    def save(self, val_loss: float | None) -> None:
        model, optimizer_state = self.whole()  # collective under FSDP; rank 0 gets them
        # a save without an evaluation (Ctrl-C) can come right after the update that broke the weights
        broken = model is not None and not all(bool(torch.isfinite(p).all()) for p in model.parameters())
        self.check_finite(float("nan") if broken else 0.0, None, lr_at(max(self.step - 1, 0), self.cfg),
                          step=self.step, what="weights")  # collective: every rank asks
        mine = {"torch": torch.get_rng_state(), "data": self.data_gen.get_state()}
        if self.device.startswith("cuda"):
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        rngs = distributed.gather(self.world, mine)  # collective: every rank must call it
        if not self.world.master:
            return
        best = val_loss is not None and val_loss < self.best_val
        self.best_val = min(self.best_val, val_loss) if val_loss is not None else self.best_val
        state = {"step": self.step, "best_val_loss": self.best_val, "elapsed_s": self.elapsed(),
                 "optimizer": optimizer_state, "rng": rngs, "world_size": self.world.size}
        paths = self.run.save(model, self.tokenizer, {**self.meta, "step": self.step, "val_loss": val_loss},
                                  state, best)
        self.saved_step = self.step
        for path, kind in zip(paths, ("latest", "best")):
            self.hooks.on_checkpoint(path, kind)

    def log(self, line: dict[str, Any], evaluated: bool) -> None:
        if not self.world.master:
            return
        self.run.log(line)
        if line["step"] > 0:
            self.hooks.on_step(line)
        if evaluated:
            self.hooks.on_eval(line)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def _restore(self, state: dict[str, Any]) -> None:
        distributed.load_optimizer_state(self.optimizer, state["optimizer"])  # whole, or cut into this rank's shards
        self.step, self.best_val = int(state["step"]), float(state["best_val_loss"])
        self.elapsed_before = float(state["elapsed_s"])
        self.saved_step = self.step
        rngs = state["rng"]
        if len(rngs) == self.world.size:
            mine = rngs[self.world.rank]
            torch.set_rng_state(mine["torch"])
            self.data_gen.set_state(mine["data"])
            if self.device.startswith("cuda") and "cuda" in mine:
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        if self.world.master:
            self.run.truncate_metrics(self.step)
            if self.run.stale_best(state):  # a crash between saving latest/ and best/: finish that save
                meta = read_config(self.run.resume_point())
                model, _, _ = load_model(self.run.resume_point())  # what raw_model started from, unsharded
                save_checkpoint(self.run.path / "best", model, self.tokenizer,
                                {k: v for k, v in meta.items() if k not in ("tinygpt_version", "model", "tokenizer")})


def _load_initial_weights(model: nn.Module, ckpt: Path) -> None:
    """Copy the weights of checkpoint `ckpt` into `model` (same architecture; its position embeddings may be
    shorter: the first block_size rows are kept; its vocabulary may be longer: tokens added at the end, such as
    the chat template's, get the mean of the existing rows of the embedding and output head, so they start as
    an average token rather than noise)."""
    source, _, _ = load_model(ckpt)
    block, vocab = model.config.block_size, model.config.vocab_size
    old_vocab = source.config.vocab_size
    if dataclasses.replace(source.config, block_size=block, dropout=model.config.dropout,
                           vocab_size=vocab) != model.config or block > source.config.block_size \
            or vocab < old_vocab:
        raise ValueError(f"the model config differs from the one in {ckpt} (only dropout, a shorter block_size "
                         f"and added tokens may change)")
    weights = {}
    for k, v in source.state_dict().items():
        if k.endswith("wpe.weight"):
            v = v[:block]
        elif vocab > old_vocab and (k.endswith("wte.weight") or k.startswith("lm_head.")):
            v = torch.cat([v, v.mean(0, keepdim=True).expand(vocab - old_vocab, *v.shape[1:])])
        weights[k] = v
    model.load_state_dict(weights)


__all__ = ["Hooks", "RunResult", "TrainingDiverged", "train"]
