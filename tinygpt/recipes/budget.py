"""A recipe cut to a budget of steps: its warm-up, decay and evaluations keep their share of the run, so a short
run (a quick look) still warms up, decays and draws a loss curve of as many points as the full one."""
from __future__ import annotations

from typing import Any

from tinygpt.config import parse_value

SCALED_KEYS = ("warmup_iters", "lr_decay_iters", "eval_interval")  # step counts that are a share of max_iters


def scaled(recipe: dict[str, Any], max_iters: int | str | None,
           keys: tuple[str, ...] = SCALED_KEYS) -> dict[str, Any]:
    """The recipe's settings for a run of max_iters steps (None: the recipe as it is; a string is read as the
    command line's value would be). Each of `keys` (default SCALED_KEYS) keeps
    its share of the run, rounded, at least 1 (0 stays 0: "no warm-up", "decay over the whole run").

    >>> scaled({"max_iters": 3000, "warmup_iters": 100, "eval_interval": 250}, 300)
    {'max_iters': 300, 'warmup_iters': 10, 'eval_interval': 25}
    """
    if max_iters is not None:
        max_iters = parse_value("max_iters", max_iters)
    if max_iters is None or max_iters == recipe["max_iters"]:
        return dict(recipe)
    out = {**recipe, "max_iters": max_iters}
    for key in keys:
        if recipe.get(key):
            out[key] = max(1, round(recipe[key] * max_iters / recipe["max_iters"]))
    return out


def split_steps(max_iters: int, shares: tuple[int, ...]) -> tuple[int, ...]:
    """max_iters steps shared among stages in proportion to `shares` (each at least 1), adding up to max_iters
    (or to one per stage when there are fewer steps than stages).

    >>> split_steps(100, (800, 1200))
    (40, 60)
    """
    total = sum(shares)
    parts = [max(1, round(max_iters * s / total)) for s in shares[:-1]]
    return (*parts, max(1, max_iters - sum(parts)))


__all__ = ["SCALED_KEYS", "scaled", "split_steps"]
