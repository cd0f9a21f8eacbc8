"""What long commands show on the terminal: a training run (its bar, evaluations, time estimate and TensorBoard
scalars), other long steps (evaluating, scoring), and a library's messages. All of it goes to stderr; off a
terminal, lines now and then instead of a redrawn bar.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from tqdm import tqdm

from tinygpt.cli.args import CLIError
from tinygpt.training.progress import TrainingProgress


def tensorboard_writer(out: Path) -> Any:
    """A function making the TensorBoard writer once the run directory is ours (so a refused run creates
    nothing); TensorBoard missing is an error before any work."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CLIError("--tensorboard needs TensorBoard: pip install 'tinygpt[tensorboard]'") from None
    return lambda: SummaryWriter(str(out / "tensorboard"))


class ProgressHooks(TrainingProgress):
    """A training run on the terminal (training/progress.py: the bar, or lines in a log; the evaluations; a time
    estimate), with the CLI's notes on precision and FSDP, and TensorBoard scalars when asked."""

    def __init__(self, quiet: bool = False, writer_factory: Any = None, estimate_over: float = 10.0,
                 then: tuple[int, str] | None = None):
        super().__init__(quiet=quiet, estimate_over=estimate_over, then=then)
        self.writer_factory, self.writer = writer_factory, None  # TensorBoard, made when training starts

    def on_start(self, info: dict[str, Any]) -> None:
        if self.writer_factory is not None:
            self.writer = self.writer_factory()
        if info.get("dtype_probe"):
            timed = ", ".join(f"{k} {v:.1f} ms" for k, v in info["dtype_probe"].items())
            print(f"precision: {info['dtype']}, the faster per training step on this CPU ({timed})", file=sys.stderr)
        if info.get("fsdp") is False:
            print("note: FSDP shards over the processes torchrun starts; with one process this run trains unsharded",
                  file=sys.stderr)
        super().on_start(info)

    def on_step(self, m: dict[str, Any]) -> None:
        super().on_step(m)
        if self.writer is not None:
            for k in ("train_loss", "lr", "tokens_per_sec"):
                self.writer.add_scalar(k, m[k], m["step"])

    def on_eval(self, m: dict[str, Any]) -> None:
        if self.writer is not None:
            for k in ("val_loss", "eval_train_loss", "val_bits_per_char", "val_bits_per_byte"):
                if k in m:
                    self.writer.add_scalar(k, m[k], m["step"])
        super().on_eval(m)

    def on_end(self, result: Any) -> None:
        if self.writer is not None:
            self.writer.close()
        super().on_end(result)


class StageProgress:
    """progress(stage, done, total) for a long step with no training bar (an evaluation, scoring, a comparison):
    on a terminal a bar per stage (drawn once the stage has lasted half a second); elsewhere, so that a log shows
    the work is alive without filling with carriage returns, a line when a stage is announced (done == 0), one
    every `every` seconds, and one at its end when any was printed. Nothing when quiet."""

    def __init__(self, quiet: bool = False, every: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.quiet, self.every, self.stream, self.clock = quiet, every, stream, clock
        self.stage: str | None = None
        self.bar: Any = None
        self.last, self.printed = 0.0, False

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stderr

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if stage != self.stage:
            self.close()
            self.stage, self.last, self.printed = stage, self.clock(), False
            if getattr(self.out, "isatty", lambda: False)():
                self.bar = tqdm(total=total, desc=stage, dynamic_ncols=True, file=self.out, leave=False, delay=0.5)
            elif done == 0:
                self.line(stage, done, total)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif self.clock() - self.last >= self.every or (done == total and self.printed and done > 0):
            self.line(stage, done, total)

    def line(self, stage: str, done: int, total: int) -> None:
        print(f"{stage}: {done:,} of {total:,}", file=self.out, flush=True)
        self.last, self.printed = self.clock(), True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.stage = None

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def say(message: str) -> None:
    """A library's progress message (a download, a build), on stderr."""
    print(message, file=sys.stderr, flush=True)
