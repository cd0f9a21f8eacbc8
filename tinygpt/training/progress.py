"""What a training run shows while it trains, on a stream the caller chooses: a bar on a terminal, a line now
and then elsewhere, each evaluation, a time estimate from the first steps, and the result.

Training itself never prints: `train()` shows this only when asked (the command line always asks; from Python,
train() asks on a terminal unless quiet=True). Speeds and times come from the loop's `Throughput` (evaluation
left out), never from the wall clock between two bar updates.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from tqdm import tqdm

from tinygpt.training.evaluate import bits
from tinygpt.training.throughput import Throughput, duration_text

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # tqdm's own rate and ETA left out


class TrainingProgress:
    """Hooks for train() (see training/loop.py's Hooks) that show a run's progress on `stream` (default stderr).

    On a terminal: a bar with the loss, the learning rate, tokens per second and the time left. Elsewhere (a log
    file, a pipe): no bar, which would fill a log with carriage returns, but a line every `every` seconds. Both
    print every evaluation, the result, and once the first steps are timed, an estimate of the whole run when it
    is `estimate_over` seconds or more (0: always). then=(steps, what) adds the cost of a next stage of as many
    steps of the same size ("fine-tuning"). quiet=True: no bar and no periodic lines.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False, every: float = 30.0,
                 estimate_over: float = 10.0, then: tuple[int, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.quiet, self.every, self.estimate_over = stream, quiet, every, estimate_over
        self.then, self.clock = then, clock
        self.bar: Any = None
        self.pace: Throughput | None = None
        self.info: dict[str, Any] = {}
        self.estimated = False
        self.last_line = 0.0

    @property
    def out(self) -> TextIO:
        return self.stream or sys.stderr  # looked up when used: a test's captured stderr is the current one

    def say(self, message: str) -> None:
        """One line on the stream, above the bar when there is one."""
        if self.bar is not None:
            self.bar.write(message, file=self.out)
        else:
            print(message, file=self.out, flush=True)

    # --- the hooks ------------------------------------------------------------------------------------

    def on_start(self, info: dict[str, Any]) -> None:
        self.info, self.pace = info, info.get("pace")
        self.say(f"training on {info['device']} ({info['dtype']}), {info['params'] / 1e6:.2f}M parameters, "
                 f"{info['tokens_per_step']:,} tokens per step"
                 + (f", sharded over {info['world_size']} processes (FSDP)" if info.get("fsdp") else "")
                 + (f", resuming at step {info['step']}" if info["resumed"] else ""))
        self.last_line = self.clock()
        terminal = getattr(self.out, "isatty", lambda: False)()
        if terminal and not self.quiet:
            self.bar = tqdm(total=info["max_iters"], initial=info["step"], unit="step", dynamic_ncols=True,
                            file=self.out, bar_format=BAR_FORMAT)

    def on_step(self, m: dict[str, Any]) -> None:
        speed = self.speed_text()
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {m['train_loss']:.4f}, lr {m['lr']:.2e}" + speed, refresh=False)
            self.bar.update(m["step"] - self.bar.n)
        elif not self.quiet and self.clock() - self.last_line >= self.every:
            self.last_line = self.clock()
            self.say(f"step {m['step']:,}/{self.info.get('max_iters', 0):,}: loss {m['train_loss']:.4f}" + speed)
        self.maybe_estimate()

    def on_eval(self, m: dict[str, Any]) -> None:
        unit = f"{m['val_bits_per_byte']:.3f} bits/byte" if "val_bits_per_byte" in m \
            else f"{bits(m['val_loss'], 1.0):.3f} bits/token"
        msg = f"step {m['step']}: train loss {m['eval_train_loss']:.4f}, val loss {m['val_loss']:.4f} ({unit})"
        exact = [f"{k[10:]} {m[k]:.1%}" for k in ("val_exact_first", "val_exact_followup") if k in m]
        if exact:
            msg += f"; held-out replies exactly right: {', '.join(exact)}"
        self.say(msg)

    def on_checkpoint(self, path: Any, kind: str) -> None: ...

    def on_end(self, result: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        best = f", best val loss {result.best_val_loss:.4f}" if result.best_val_loss < float("inf") else ""
        self.say(f"done: step {result.step}{best}; run saved in {result.out_dir}")

    # --- the figures ----------------------------------------------------------------------------------

    def speed_text(self) -> str:
        """", 1,740 tok/s, 02:03 left" from the recent steps; "" before any was timed."""
        if self.pace is None or self.pace.tokens_per_sec() is None:
            return ""
        left = self.pace.seconds_left() or 0.0
        return f", {self.pace.tokens_per_sec():,.0f} tok/s, {tqdm.format_interval(left)} left"

    def estimate_text(self) -> str | None:
        """The run's cost, measured from its first timed steps (evaluations at their measured cost); None before
        enough steps were timed."""
        pace = self.pace
        if pace is None or not pace.ready():
            return None
        left, steps, evals = pace.seconds_left() or 0.0, pace.max_iters - pace.step, pace.evaluations_left()
        text = (f"time estimate: about {duration_text(left)} for the {steps:,} steps left"
                + (f" and {evals} evaluation{'s' * (evals != 1)}" if evals else "")
                + (" (at most: training ends early once the model has learned)" if self.info.get("may_finish_early")
                   else ""))
        if self.then:
            n, what = self.then
            text += f", then about {duration_text(n * (pace.step_seconds() or 0.0))} for the {n:,} steps of {what}"
        return text + f"; measured from the first {pace.counted} steps on this machine ({self.info.get('device')})"

    def maybe_estimate(self) -> None:
        if self.estimated or self.pace is None or not self.pace.ready():
            return
        self.estimated = True
        later = self.then[0] * (self.pace.step_seconds() or 0.0) if self.then else 0.0
        if (self.pace.seconds_left() or 0.0) + later >= self.estimate_over:
            self.say(self.estimate_text() or "")


__all__ = ["TrainingProgress"]
