"""The calculator demo: train the first LLM (a 4-layer, 64-dim GPT that answers "two plus three" with
"five") with tuned defaults, and report how well it answers questions it has and has not seen.

Library only: progress reaches the caller through `Hooks` (see training/loop.py); nothing here prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinygpt.config import ConfigError, build_configs
from tinygpt.recipes.budget import scaled
from tinygpt.tasks.calculator import CalculatorConfig, CalculatorTask
from tinygpt.training.checkpoint import CheckpointError
from tinygpt.training.loop import Hooks, RunResult, train
from tinygpt.training.run import Run, kind_of, read_metrics, task_of

# The guide's numbers (n_embd 64, 4 layers, lr 1e-3); the rest tuned by experiment. The one that matters most
# is init_std 0.1 instead of GPT-2's 0.02: with small initial weights the loss sits on a plateau before the
# model "gets" carrying, for a number of steps that varies widely with the seed; with 0.1 every seed tried
# learned held-out plus and minus within 3000 steps of 128 problems (training usually ends earlier, see
# `learned`). block_size comes from the task.
CALCULATOR_DEFAULTS: dict[str, Any] = dict(
    model="gpt", n_layer=4, n_head=4, n_embd=64, dropout=0.0, bias=True, init_std=0.1,
    learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=3000, batch_size=128,
    weight_decay=0.1, grad_clip=1.0, eval_interval=250, eval_iters=10, log_interval=10,
    device="auto", dtype="float32",
)


# Training ends early once the model answers every one of a fixed sample of training questions (LEARNED_SAMPLE
# per operation) right; checked at each evaluation once the training loss on answers is below LEARNED_LOSS.
# Only training problems are looked at: the held-out ones stay unseen until the final report.
LEARNED_SAMPLE = 1000
LEARNED_LOSS = 0.005


def learned(task: CalculatorTask):
    """A `stop_when` test for train(): a reason to stop once every sampled training question is answered."""
    def check(model, metrics: dict[str, Any]) -> str | None:
        if metrics.get("eval_train_loss", float("inf")) > LEARNED_LOSS:
            return None
        scores = task.score(model, "train", max_per_op=LEARNED_SAMPLE)
        total = sum(s["total"] for s in scores.values())
        if all(s["correct"] == s["total"] for s in scores.values()):
            return f"it answers all {total} sampled training questions right"
        return None
    return check


def calculator_configs(task: CalculatorTask, overrides: dict[str, Any] | None = None):
    """(ModelConfig, TrainConfig) for the calculator: CALCULATOR_DEFAULTS < overrides; vocab and block
    size from the task. A max_iters override scales the recipe's warm-up and evaluation interval with it
    (budget.py), unless they are overridden too."""
    overrides = overrides or {}
    recipe = scaled(CALCULATOR_DEFAULTS, overrides.get("max_iters"))  # a shorter run keeps the recipe's shape
    merged = {**recipe, "block_size": task.block_size, **overrides}
    model_cfg, train_cfg = build_configs(merged, vocab_size=task.tokenizer.vocab_size)
    if model_cfg.block_size < task.block_size:
        raise ConfigError(f"block_size must be at least {task.block_size} (the longest calculator problem)")
    return model_cfg, train_cfg


def train_calculator(out_dir: str | Path, overrides: dict[str, Any] | None = None, hooks: Hooks | None = None,
                     overwrite: bool = False, resume: bool = False,
                     task: CalculatorConfig | dict[str, Any] | None = None, finish_early: bool = True) -> RunResult:
    """Train the calculator into out_dir (a run directory: best/, latest/, metrics.jsonl).

    overrides: model/training config keys (nanoGPT names) replacing CALCULATOR_DEFAULTS.
    task: calculator settings (CalculatorConfig or its fields as a dict); stored in every checkpoint
    under "task", so `calculator_report`, `sample` and `eval` rebuild the same task. resume=True continues the run
    with the checkpoint's task and configs (training keys in overrides may change; the task may not).
    finish_early: stop before max_iters once the model has learned its training problems (see `learned`).
    """
    out = Path(out_dir)
    if resume:
        if task is not None:
            raise ConfigError("the task settings cannot change on resume (they are stored in the checkpoint)")
        model_cfg, train_cfg, old = Run(out).resume_configs(overrides or {})
        if kind_of(old) != "task":
            raise ConfigError(f"{out} is not a calculator run (its checkpoint has no task)")
        the_task = task_of(old)
    else:
        if isinstance(task, dict):
            task = CalculatorConfig(**task)
        the_task = CalculatorTask(task)
        model_cfg, train_cfg = calculator_configs(the_task, overrides)
    return train(model_cfg, train_cfg, the_task, the_task.tokenizer, out, resume=resume, overwrite=overwrite,
                 meta={"task": the_task.to_dict()}, hooks=hooks,
                 stop_when=learned(the_task) if finish_early else None)


def calculator_report(run_dir: str | Path, which: str = "best", n_examples: int = 6, device: str = "cpu",
                      max_per_op: int | None = None) -> dict[str, Any]:
    """How a calculator run answers: exact-match accuracy per operation on held-out ("heldout") and
    training ("train") problems, a few held-out questions with the model's answers, and the training
    time and val-loss curve from metrics.jsonl.

    {"checkpoint": ..., "step": 3000, "heldout": {"plus": {"correct", "total", "accuracy"}, ...},
     "train": {...}, "examples": [{"question", "answer", "expected", "correct"}, ...],
     "train_seconds": ..., "val_loss": [[0, ...], [250, ...], ...]}
    """
    model, tokenizer, cfg = Run(run_dir).load(which, device)
    task = task_of(cfg)
    if task is None:
        raise CheckpointError(f"{cfg['path']} is not a task checkpoint (its config.json has no task)")
    if tokenizer != task.tokenizer:
        raise CheckpointError(f"{cfg['path']}: the tokenizer does not match the task's vocabulary")
    heldout = task.score(model, "val", max_per_op=max_per_op)
    trained = task.score(model, "train", max_per_op=max_per_op)

    problems = [p for ps in task.splits["val"].values() for p in ps]
    chosen = [problems[i * len(problems) // n_examples] for i in range(min(n_examples, len(problems)))]
    got = task.complete(model, [task.question_ids(p) for p in chosen])
    examples = [{"question": p.question, "answer": task.answer_text(g),
                 "expected": task.answer_text(task.number_ids(p.answer)),
                 "correct": g == task.number_ids(p.answer) + [task.eos_id]} for p, g in zip(chosen, got)]

    out: dict[str, Any] = {"checkpoint": cfg["path"], "step": cfg.get("step"), "heldout": heldout,
                           "train": trained, "examples": examples}
    try:
        metrics = read_metrics(Path(run_dir))
    except (OSError, ValueError):
        metrics = []  # a bare checkpoint directory: no metrics beside it
    out["train_seconds"] = max((m.get("elapsed_s", 0.0) for m in metrics), default=None)
    out["val_loss"] = [[m["step"], m["val_loss"]] for m in metrics if "val_loss" in m]
    return out


__all__ = ["CALCULATOR_DEFAULTS", "learned", "calculator_configs", "train_calculator", "calculator_report"]
