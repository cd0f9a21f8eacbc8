"""The model ladder: train every rung (bigram -> single head -> multi-head -> GPT, and the GPT with one
piece removed) on the same text with the same budget, and measure what each piece buys. The modern ladder
goes on from GPT-2, adding one later piece per rung (rotary, RMSNorm, SwiGLU, ...) until the `modern` preset."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from tinygpt.config import PRESETS, SettingText, build_configs
from tinygpt.data.text import TextData, split_text
from tinygpt.generation.generate import generate_text
from tinygpt.models import count_params
from tinygpt.recipes.budget import scaled
from tinygpt.tokenizers import CharTokenizer
from tinygpt.training.evaluate import bits, evaluate_stream
from tinygpt.training.loop import Hooks, train
from tinygpt.training.run import Run, RunError

RUNGS = ("bigram", "single_head", "multi_head", "gpt_no_pos", "gpt_no_residual", "gpt_no_layernorm",
         "gpt_no_mlp", "gpt")
# The modern ladder: each rung is the one above plus one piece (its config delta); the last is PRESETS["modern"].
MODERN_STEPS: dict[str, dict[str, Any]] = {
    "gpt2": {},                         # GPT-2 as it was in 2019
    "rotary": {"position": "rotary"},   # rotary position embeddings instead of a learned table
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"activation": "swiglu"},
    "qk_norm": {"qk_norm": True},
    "no_bias": {"bias": False},
    "untied": {"tie_embeddings": False},
    "muon": {"optimizer": "muon"},      # Muon for the blocks' matrices
}
MODERN_RUNGS = tuple(MODERN_STEPS)


def _rung_settings() -> dict[str, dict[str, Any]]:
    """Every rung's settings on top of the ladder's: the classic rungs name a model; modern ones add up."""
    out: dict[str, dict[str, Any]] = {r: {"model": r} for r in RUNGS}
    total: dict[str, Any] = {}
    for name, delta in MODERN_STEPS.items():
        total = {**total, **delta}
        out[name] = {"model": "gpt", **total}
    return out


RUNG_SETTINGS = _rung_settings()
# the same small model for every rung (sizes from the tiny_char preset): minutes on a laptop CPU
LADDER_DEFAULTS: dict[str, Any] = {**PRESETS["tiny_char"], "learning_rate": 1e-3, "min_lr": 1e-4, "max_iters": 1000,
                                   "eval_interval": 100, "eval_iters": 20}


def run_ladder(text: str, out_dir: str | Path, overrides: dict[str, Any] | None = None,
               rungs: Sequence[str] = RUNGS, overwrite: bool = False,
               hooks: Callable[[str], Hooks] | None = None, sample_chars: int = 80) -> list[dict[str, Any]]:
    """Train each rung into out_dir/<rung>; return one row per rung: params, seconds, exact val loss,
    bits per character and a short sample (seeded, temperature 0.8). A max_iters override scales the ladder's
    evaluation interval with it (budget.py), so every curve keeps its points."""
    out = Path(out_dir)
    overrides = overrides or {}
    # a shorter budget keeps as many points on each curve; the warm-up stays (the train guide's ladder table is measured
    # with it, and evaluations never change what is trained: their batches come from a generator of their own)
    settings = {**scaled(LADDER_DEFAULTS, overrides.get("max_iters"), keys=("eval_interval",)), **overrides}
    unknown = [r for r in rungs if r not in RUNG_SETTINGS]
    if unknown:
        raise ValueError(f"unknown rung {unknown[0]!r} (rungs: {', '.join(RUNGS)}; modern: {', '.join(MODERN_RUNGS)})")
    if not overwrite and any(Run(out / r).holds_run() for r in rungs):
        raise RunError(SettingText(f"{out} already holds a ladder; use `overwrite` to train it again", "overwrite"))
    _, probe = build_configs(settings)
    tok = CharTokenizer.train(split_text(text, probe.val_fraction)[0])
    rows = []
    for rung in rungs:
        model_cfg, cfg = build_configs({**settings, **RUNG_SETTINGS[rung]}, vocab_size=tok.vocab_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # validation characters unseen in training map to <unk>
            data = TextData.from_text(text, tok, model_cfg.block_size, cfg.val_fraction)
        train(model_cfg, cfg, data, tok, out / rung, hooks=hooks(rung) if hooks else None, meta={"ladder": rung},
              overwrite=overwrite)  # an old rung stays until its replacement has a checkpoint
        run = Run(out / rung)
        model, _, _ = run.load("best")
        loss, _ = evaluate_stream(model, data.val, model_cfg.block_size)
        sample = "".join(generate_text(model, tok, "\n", sample_chars, temperature=0.8, seed=0))
        seconds = max(m["elapsed_s"] for m in run.metrics())
        rows.append({"model": rung, "params": count_params(model), "seconds": seconds, "val_loss": loss,
                     "bits_per_char": bits(loss, data.tokens_per_char("val")), "sample": sample})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<18}{'params':>10}{'time':>8}{'val loss':>10}{'bits/char':>11}  sample",
             "-" * 100]
    for r in rows:
        sample = r["sample"].replace("\n", "⏎")[:48]
        lines.append(f"{r['model']:<18}{r['params']:>10,}{r['seconds']:>7.0f}s{r['val_loss']:>10.3f}"
                     f"{r['bits_per_char']:>11.3f}  {sample}")
    return "\n".join(lines)
