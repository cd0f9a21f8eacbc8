"""What a text training run trains on: its data (and that data's fingerprint), the train/val split, the
tokenizer and the configs, for a new run or a resumed one. `tinygpt train` is this, then `train()`.

A resumed run keeps its tokenizer and its data: resuming on a different text is refused unless asked for
(`change_data=True`), so one run's history never silently mixes two texts.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import ConfigError, ModelConfig, TrainConfig, build_configs
from .data import TextData, load_text, split_text, text_digest
from .run import Run, RunError, kind_of
from .tokenizers import Tokenizer


@dataclass
class TextRunPlan:
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    source: TextData
    tokenizer: Tokenizer
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was decided on the user's behalf (tokenizer choice...)


def plan_text_run(out: str | Path, data: str | None, overrides: dict[str, Any], *, preset: str | None = None,
                  tokenizer: str | None = None, vocab_size: int | None = None, resume: bool = False,
                  overwrite: bool = False, change_data: bool = False, cache_dir: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> TextRunPlan:
    """Everything `train()` needs for a text run into `out`.

    New run: data is required; the tokenizer ("char" by default, "bpe", or a tokenizer .json file) is
    built from the training split only. Resumed run: configs and tokenizer come from the checkpoint
    (training keys in overrides may change); data defaults to the recorded one, and a different text is
    refused unless change_data.
    """
    notes: list[str] = []
    if change_data and not resume:
        raise ConfigError("--change_data applies only with --resume (a new run simply takes its --data)")
    Run(out).check_start(resume, overwrite)  # before any work: is --out usable as asked?
    if resume:
        if preset is not None:
            raise ConfigError("--preset does not apply to --resume (the run keeps its settings; override single keys)")
        if tokenizer is not None or vocab_size is not None:
            raise ConfigError("a resumed run keeps its tokenizer; drop --tokenizer / --vocab_size")
        run = Run(out)
        model_cfg, train_cfg, old = run.resume_configs(overrides)
        if kind_of(old) != "text":
            raise RunError(f"{out} is a task run (the calculator); resume it with tinygpt demo --out {out} --resume")
        spec = data or old.get("data")
        if not spec:
            raise ConfigError("the checkpoint does not record its data; pass --data")
        path, text = load_text(spec)
        digest = text_digest(text)
        recorded = old.get("data_sha256")
        same = digest == recorded if recorded else str(Path(path).resolve()) == old.get("data")
        if not same and not change_data:
            raise RunError(f"{path} is not the text this run was trained on ({old.get('data')}); resuming on other "
                           f"data would mix two texts in one run; pass --change_data to do it anyway, or train "
                           f"a new run with another --out")
        if not same:
            notes.append(f"resuming on different data: {path}")
        tok = run.tokenizer("latest")
    else:
        if not data:
            raise ConfigError("--data is required (a UTF-8 text file, a folder of .txt files, or a corpus name)")
        model_cfg, train_cfg = build_configs(overrides, preset)
        path, text = load_text(data)
        digest = text_digest(text)
        from .tokenizers.choose import tokenizer_for_training
        tok, how = tokenizer_for_training(tokenizer or "char", split_text(text, train_cfg.val_fraction)[0],
                                          vocab_size, cache_dir, progress)
        notes.append(f"tokenizer: {how}")
        model_cfg = model_cfg.with_vocab(tok.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # validation characters unseen in training are expected
        source = TextData.from_text(text, tok, model_cfg.block_size, train_cfg.val_fraction)
    meta = {"data": str(Path(path).resolve()), "data_sha256": digest}
    return TextRunPlan(model_cfg, train_cfg, source, tok, meta, notes)


__all__ = ["TextRunPlan", "plan_text_run"]
