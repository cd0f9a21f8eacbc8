"""How fast a training run goes and how long it has left, from the durations of its own steps.

The loop reports every optimizer step's duration and, apart from them, what each evaluation (with its
checkpoint) took; the two are never mixed, so a slow evaluation never makes training look slow. The speed is
the mean of a window of recent steps: one slow step barely moves it, and it follows a machine that slows down.
"""
from __future__ import annotations

from collections import deque


class Throughput:
    """The smoothed speed of one run and the time it has left.

    max_iters: the run's last step; step: the step it starts from (0, or where a resumed run stands);
    tokens_per_step: tokens per optimizer step (batch x window x accumulation x processes); eval_interval:
    steps between evaluations (the last step is evaluated too); window: how many recent steps the speed is the
    mean of; warmup: how many first steps are not counted (the first step also allocates memory and, compiled,
    compiles: it says little about the next ones).

    Worked example: 4 counted steps of 0.5 s of 1,000 tokens each, at step 5 of 10, one evaluation of 2 s so far,
    one every 5 steps: tokens_per_sec() == 2000, seconds_left() == 5 * 0.5 + 1 * 2 == 4.5.
    """

    def __init__(self, max_iters: int, step: int = 0, tokens_per_step: int = 0, eval_interval: int = 0,
                 window: int = 50, warmup: int = 1):
        self.max_iters, self.step, self.tokens_per_step = max_iters, step, tokens_per_step
        self.eval_interval, self.warmup = eval_interval, warmup
        self.recent: deque[float] = deque(maxlen=window)  # the latest counted steps' seconds
        self.counted = 0  # steps counted in all (the window keeps only the latest)
        self.eval_seconds: list[float] = []

    # --- what the loop reports --------------------------------------------------------------------------

    def add_step(self, seconds: float) -> None:
        """One optimizer step took `seconds` (training only: no evaluation, no checkpoint)."""
        self.step += 1
        if self.warmup > 0:
            self.warmup -= 1
            return
        self.recent.append(seconds)
        self.counted += 1

    def add_evaluation(self, seconds: float) -> None:
        """An evaluation (and the checkpoint saved with it) took `seconds`."""
        self.eval_seconds.append(seconds)

    # --- what a display reads ---------------------------------------------------------------------------

    def step_seconds(self) -> float | None:
        """Seconds per step: the mean of the recent window; None before any step was counted."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    def tokens_per_sec(self) -> float | None:
        s = self.step_seconds()
        return self.tokens_per_step / s if s else None

    def evaluations_left(self) -> int:
        """Evaluations still to come: at every multiple of eval_interval after the current step, and at the end."""
        if self.eval_interval <= 0 or self.step >= self.max_iters:
            return 0
        n = self.max_iters // self.eval_interval - self.step // self.eval_interval
        return n + (self.max_iters % self.eval_interval != 0)

    def seconds_left(self) -> float | None:
        """The steps left at the recent speed, plus the evaluations left at the mean cost of those measured."""
        s = self.step_seconds()
        if s is None:
            return None
        per_eval = sum(self.eval_seconds) / len(self.eval_seconds) if self.eval_seconds else 0.0
        return (self.max_iters - self.step) * s + self.evaluations_left() * per_eval

    def ready(self, min_steps: int = 5) -> bool:
        """Have enough steps been timed for a first estimate of the whole run?"""
        return self.counted >= min_steps


def duration_text(seconds: float) -> str:
    """A duration as a person says it, rounded.

    >>> duration_text(42), duration_text(200), duration_text(4000)
    ('42 s', '3 min', '1 h 7 min')
    """
    if seconds < 59.5:
        return f"{max(seconds, 1):.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


__all__ = ["Throughput", "duration_text"]
