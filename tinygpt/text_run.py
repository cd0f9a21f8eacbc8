"""What a text training run trains on: its data (and that data's fingerprint), the train/val split, the
tokenizer and the configs, for a new run or a resumed one. `tinygpt train` is this, then `train()`.

A resumed run keeps its tokenizer and its data: resuming on a different text is refused unless asked for
(`change_data=True`), so one run's history never silently mixes two texts. A new run may start from the
weights of another run or an imported model (`init_from`, nanoGPT's name): it takes that model's
architecture and tokenizer, with a fresh optimizer and schedule, and records where its weights came from.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import MODEL_KEYS, ConfigError, ModelConfig, TrainConfig, build_configs, parse_value
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
    init_from: Path | None = None  # the checkpoint directory whose weights a new run starts from


def plan_text_run(out: str | Path, data: str | None, overrides: dict[str, Any], *, preset: str | None = None,
                  tokenizer: str | None = None, vocab_size: int | None = None, resume: bool = False,
                  overwrite: bool = False, change_data: bool = False, cache_dir: Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  init_from: str | Path | None = None) -> TextRunPlan:
    """Everything `train()` needs for a text run into `out`.

    New run: data is required; the tokenizer ("char" by default, "bpe", or a tokenizer .json file) is
    built from the training split only. Resumed run: configs and tokenizer come from the checkpoint
    (training keys in overrides may change); data defaults to the recorded one, and a different text is
    refused unless change_data. init_from (a run or checkpoint directory): a new run starting from those weights
    and that tokenizer (see `init_from_configs`).
    """
    notes: list[str] = []
    if change_data and not resume:
        raise ConfigError("--change_data applies only with --resume (a new run simply takes its --data)")
    if init_from is not None and resume:
        raise ConfigError("--init_from starts a new run from existing weights and --resume continues a run; use one")
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
        from .checkpoint import read_tokenizer
        tok = read_tokenizer(run.resume_point())  # the checkpoint the loop resumes from
    elif init_from is not None:
        if not data:
            raise ConfigError("--data is required: the text to train the model from --init_from on")
        if preset is not None or tokenizer is not None or vocab_size is not None:
            raise ConfigError("--init_from takes the model's architecture and tokenizer; drop --preset, --tokenizer "
                              "and --vocab_size")
        model_cfg, train_cfg, tok, origin = init_from_configs(init_from, overrides)
        if Path(out).resolve() in (Path(origin["path"]), *Path(origin["path"]).parents):
            raise ConfigError(f"--init_from {init_from} is inside --out {out}: the new run would replace the weights "
                              f"it starts from; choose another --out")
        path, text = load_text(data)
        digest = text_digest(text)
        notes.append(f"starting from the weights of {origin['path']} (its tokenizer: {tok.kind}, "
                     f"{tok.vocab_size:,} tokens); a fresh optimizer and schedule")
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
    start = None
    if init_from is not None and not resume:
        meta["init_from"] = origin
        start = Path(origin["path"])
    return TextRunPlan(model_cfg, train_cfg, source, tok, meta, notes, start)


def init_from_configs(init_from: str | Path, overrides: dict[str, Any]
                      ) -> tuple[ModelConfig, TrainConfig, Tokenizer, dict[str, Any]]:
    """The configs, tokenizer and origin record of a new run starting from the weights in `init_from` (a run
    directory, its best/ checkpoint, or a checkpoint directory such as `tinygpt import` makes).

    The architecture is the checkpoint's: of the model keys only `dropout` may change, and `block_size` may
    shrink (the position embeddings are cropped to it). Training keys come from `overrides` over the defaults.
    """
    src = Run(init_from)
    ckpt = src.checkpoint("best")
    cfg = src.config("best")
    if kind_of(cfg) != "text":
        raise RunError(f"{ckpt} is a task run (the calculator); --init_from takes a text run or an imported model")
    base = src.model_config("best")
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in MODEL_KEYS:
            continue
        value = parse_value(key, raw)
        if key == "block_size" and value > base.block_size:
            raise ConfigError(f"block_size {value} is longer than the {base.block_size} positions the model in "
                              f"{ckpt} has embeddings for; a shorter one crops them")
        if key in ("block_size", "dropout"):
            changes[key] = value
        elif value != getattr(base, key):
            raise ConfigError(f"{key} cannot change with --init_from: the model comes from {ckpt} "
                              f"({key} = {getattr(base, key)!r}); only dropout and a shorter block_size can")
    model_cfg = dataclasses.replace(base, **changes)
    _, train_cfg = build_configs({k: v for k, v in overrides.items() if k not in MODEL_KEYS})
    origin: dict[str, Any] = {"path": str(ckpt.resolve())}
    if cfg.get("step") is not None:
        origin["step"] = cfg["step"]
    if isinstance(cfg.get("imported_from"), dict):
        origin["imported_from"] = cfg["imported_from"].get("path")
    return model_cfg, train_cfg, src.tokenizer("best"), origin


__all__ = ["TextRunPlan", "plan_text_run", "init_from_configs"]
