"""What a text training run will train, decided before it starts: its configs, its data (and that data's
fingerprint), its tokenizer, and the notes to show; one function per way a run begins. `tinygpt train` is one
of them, then `train()`.

plan_new: a new run; the tokenizer is built from the training split, or comes with prepared data.
plan_resume: a resumed run keeps its configs (training keys may change), its tokenizer and its data: resuming on
a different text is refused unless asked for (change_data=True), so one run's history never silently mixes two
texts.
plan_init_from: a new run starting from the weights of another run or an imported model (`init_from`, nanoGPT's
name): it takes that model's architecture and tokenizer, with a fresh optimizer and schedule, and records where
its weights came from.

Chat data (a .jsonl file of conversations, see data/conversations.py; chat=True forces it, chat=False refuses
it) trains a chat model: the tokenizer gets the chat template's tokens (a model's embedding grows by as many
rows), conversations are packed into blocks, and the loss counts only the assistant's replies unless
chat_loss="all". A conversation longer than the model's window is cut after its last exchange that fits, left
out, or refused (long_conversations: "cut", the default, "skip", "refuse"); the notes count them and name a
window that would hold them all, one the model can have (a model from `init_from` has no more positions than its
base). Reading the data, and preparing a large text once, is data.training_data's one call.
Whether the run directory may be written as asked is train()'s question (Run.start); a command asks it first,
with Run.check_start, before any of this work.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.config import MODEL_KEYS, ConfigError, ModelConfig, SettingText, TrainConfig, build_configs, parse_value
from tinygpt.data.conversations import LONG_CONVERSATIONS, ChatError, WindowFit, fit_conversations, is_chat_file
from tinygpt.data.corpora import resolve_data
from tinygpt.data.prepare import Progress
from tinygpt.data.prepared_cache import NotTheExpectedText
from tinygpt.data.text import BatchSource
from tinygpt.data.training_data import TrainingData, training_data
from tinygpt.tasks.chat import ChatData
from tinygpt.tokenizers import ChatTokenizer, Tokenizer, load_tokenizer
from tinygpt.tokenizers.choose import tokenizer_spec
from tinygpt.training.checkpoint import read_tokenizer
from tinygpt.training.run import Run, RunError, kind_of


@dataclass
class TrainingPlan:
    """Everything train() needs for one run, and what was decided on the user's behalf."""

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    source: BatchSource
    tokenizer: Tokenizer
    meta: dict[str, Any]  # what every checkpoint records: the data, its fingerprint, chat settings, init_from
    notes: list[str] = field(default_factory=list)  # the tokenizer chosen, the prepared copy read, warnings...
    init_from: Path | None = None  # the checkpoint directory whose weights a new run starts from


def plan_new(data: str | Path | None, overrides: dict[str, Any], *, preset: str | None = None,
             tokenizer: str | None = None, vocab_size: int | None = None, chat: bool | None = None,
             chat_loss: str | None = None, skip_bad_lines: bool = False, long_conversations: str | None = None,
             tokenizer_cache: Path | None = None, progress: Progress | None = None) -> TrainingPlan:
    """A new run on `data` (see data.training_data for what it may name), with the configs of defaults < preset <
    overrides. tokenizer: "char" (the default), "bpe" (vocab_size tokens, cached in tokenizer_cache), or a
    tokenizer .json file; prepared data brings its own. progress(stage, done, total) follows a preparation."""
    if not data:
        raise ConfigError(SettingText("`data` is required (a UTF-8 text file, a folder of .txt files, or a corpus "
                                      "name)", "data"))
    chat = _is_chat(data, chat, chat_loss, long_conversations)
    model_cfg, train_cfg = build_configs(overrides, preset)
    found = training_data(data, tokenizer, vocab_size=vocab_size, tokenizer_cache=tokenizer_cache,
                          **_reading(model_cfg, train_cfg, overrides, chat, skip_bad_lines, progress))
    return _plan(model_cfg.with_vocab(found.tokenizer.vocab_size), train_cfg, found, found.tokenizer,
                 _Chat(chat_loss, long_conversations), found.notes)


def plan_resume(out: str | Path, overrides: dict[str, Any], *, data: str | Path | None = None,
                preset: str | None = None, tokenizer: str | None = None, vocab_size: int | None = None,
                change_data: bool = False, chat: bool | None = None, chat_loss: str | None = None,
                skip_bad_lines: bool = False, long_conversations: str | None = None,
                progress: Progress | None = None) -> TrainingPlan:
    """The run in `out`, continued from its latest checkpoint: its configs (training keys in overrides may
    change), its tokenizer, and its data (by default the recorded one; another text only with change_data).
    preset, tokenizer and vocab_size, as the run began with them, are accepted (the command that began the run
    may be given again); different ones are refused, naming what differs."""
    run = Run(out)
    model_cfg, train_cfg, old = run.resume_configs(overrides, preset)
    if kind_of(old) != "text":
        raise RunError(f"{out} is a task run (the calculator), not a text run; the calculator's recipe "
                       f"(recipes.demo.train_calculator) resumes it")
    tok = read_tokenizer(run.resume_point())  # the checkpoint the loop resumes from
    if tokenizer is not None or vocab_size is not None:
        _same_tokenizer(tok, tokenizer or "char", vocab_size, out)
    was_chat = isinstance(tok, ChatTokenizer)
    chat = _is_chat(data, was_chat if chat is None and not data else chat, chat_loss, long_conversations)
    if chat != was_chat:
        raise RunError(f"{out} is a {'chat' if was_chat else 'text'} run; resume it on "
                       f"{'conversations (.jsonl)' if was_chat else 'text'}, as it began")
    if chat:  # what the run began with, unless asked otherwise
        chat_loss = chat_loss or (old.get("chat") or {}).get("loss_on")
        long_conversations = long_conversations or (old.get("chat") or {}).get("long_conversations")
    spec = data or old.get("data")
    if not spec:
        raise ConfigError(SettingText("the checkpoint does not record its data; pass `data`", "data"))
    recorded = old.get("data_sha256")
    try:  # a big text is compared with the recorded one before it is prepared, a small one before it is encoded
        found = training_data(spec, tok, expect=None if change_data else recorded,
                              **_reading(model_cfg, train_cfg, overrides, chat, skip_bad_lines, progress))
    except NotTheExpectedText:
        raise RunError(_other_text(resolve_data(str(spec)), old)) from None
    notes = list(found.notes)
    same = found.fingerprint == recorded if recorded else str(found.path.resolve()) == old.get("data")
    if not same:
        if not change_data:  # found only now: a prepared directory named as it is, or a run without a fingerprint
            raise RunError(_other_text(found.path, old))
        notes.append(f"resuming on different data: {found.path}")
    return _plan(model_cfg, train_cfg, found, tok, _Chat(chat_loss, long_conversations, model_cfg.block_size,
                                                        f"the run in {out}", resumed=True), notes)


def _same_tokenizer(tok: Tokenizer, spec: str, vocab_size: int | None, out: str | Path) -> None:
    """Refuse a `tokenizer` / `vocab_size` other than the resumed run's own (its chat tokens aside)."""
    base = tok.base if isinstance(tok, ChatTokenizer) else tok
    kind, size = tokenizer_spec(spec, vocab_size)
    if kind == "file":
        same = load_tokenizer(spec).to_dict() == base.to_dict()
    else:
        same = kind == base.kind and (size is None or size == base.vocab_size)
    if not same:
        has = f"{base.kind}, {base.vocab_size:,} tokens"
        asked = f"{spec} with {size:,} tokens" if size else spec
        raise RunError(SettingText(f"a resumed run keeps its tokenizer ({has}); `tokenizer` {asked} is another: "
                                   f"drop `tokenizer` and `vocab_size`", "tokenizer", "vocab_size"))


def plan_init_from(init_from: str | Path, data: str | Path | None, overrides: dict[str, Any], *, out: str | Path,
                   chat: bool | None = None, chat_loss: str | None = None, skip_bad_lines: bool = False,
                   long_conversations: str | None = None, progress: Progress | None = None) -> TrainingPlan:
    """A new run into `out` on `data`, starting from the weights and tokenizer in `init_from` (a run or
    checkpoint directory; see init_from_configs for what may change). On chat data a tokenizer without the
    chat template's tokens gets them, and the model as many new embedding rows."""
    if not data:
        raise ConfigError(SettingText("`data` is required: the text to train the model from `init_from` on",
                                      "data", "init_from"))
    model_cfg, train_cfg, tok, origin = init_from_configs(init_from, overrides)
    if Path(out).resolve() in (Path(origin["path"]), *Path(origin["path"]).parents):
        raise ConfigError(SettingText(f"`init_from` {init_from} is inside `out` {out}: the new run would replace "
                                      f"the weights it starts from; choose another `out`", "init_from", "out"))
    chat = _is_chat(data, chat, chat_loss, long_conversations)
    found = training_data(data, tok, **_reading(model_cfg, train_cfg, overrides, chat, skip_bad_lines, progress))
    notes = [*found.notes, f"starting from the weights of {origin['path']} (its tokenizer: {tok.kind}, "
                           f"{tok.vocab_size:,} tokens); a fresh optimizer and schedule"]
    if chat and not isinstance(tok, ChatTokenizer):
        tok = ChatTokenizer(tok)
        model_cfg = model_cfg.with_vocab(tok.vocab_size)
        notes.append(f"added the chat template's {len(tok.specials)} tokens ({', '.join(tok.specials)}) "
                     f"as ids {tok.base.vocab_size}-{tok.vocab_size - 1}")
    positions = Run(origin["path"]).model_config().block_size  # before `block_size` cropped them
    return _plan(model_cfg, train_cfg, found, tok, _Chat(chat_loss, long_conversations, positions,
                                                        f"the model in {origin['path']}"), notes, origin)


@dataclass
class _Chat:
    """The chat settings of a run (None: the default, or what a resumed run began with), and the longest window
    its model can have: None for a new model, else the positions of the model it continues or starts from."""

    loss_on: str | None = None
    long_conversations: str | None = None
    most_positions: int | None = None
    model: str = ""  # that model, for the messages
    resumed: bool = False  # a resumed run keeps its window


def _is_chat(data: str | Path | None, chat: bool | None, chat_loss: str | None,
             long_conversations: str | None = None) -> bool:
    """Is the run trained on conversations? The chat flag decides, else whether `data` names a .jsonl file of
    them. chat_loss and long_conversations apply to them only."""
    is_chat = chat if chat is not None else is_chat_file(data) if data else False
    if chat_loss is not None and not is_chat:
        raise ConfigError(SettingText("`chat_loss` applies to chat data (a .jsonl file of conversations)",
                                      "chat_loss"))
    if long_conversations is not None and not is_chat:
        raise ConfigError(SettingText("`long_conversations` applies to chat data (a .jsonl file of conversations)",
                                      "long_conversations"))
    if long_conversations is not None and long_conversations not in LONG_CONVERSATIONS:
        raise ConfigError(SettingText(f"`long_conversations` must be one of {', '.join(LONG_CONVERSATIONS)}, not "
                                      f"{long_conversations!r}", "long_conversations"))
    return is_chat


def _reading(model_cfg: ModelConfig, train_cfg: TrainConfig, overrides: dict[str, Any], chat: bool,
             skip_bad_lines: bool, progress: Progress | None) -> dict[str, Any]:
    """What training_data needs to know of the run, whichever way it began."""
    return dict(block_size=model_cfg.block_size, val_fraction=train_cfg.val_fraction,
                split_asked="val_fraction" in overrides, chat=chat, skip_bad_lines=skip_bad_lines, progress=progress)


def _other_text(path: str | Path, old: dict[str, Any]) -> SettingText:
    what = (f"{path} has changed since this run was trained on it" if str(Path(path).resolve()) == old.get("data")
            else f"{path} is not the text this run was trained on ({old.get('data')})")
    return SettingText(f"{what}; resuming on other data would mix two texts in one run; pass `change_data` to do it "
                       f"anyway, or train a new run with another `out`", "change_data", "out")


def _plan(model_cfg: ModelConfig, train_cfg: TrainConfig, data: TrainingData, tok: Tokenizer,
          chat: _Chat, notes: list[str], origin: dict[str, Any] | None = None) -> TrainingPlan:
    """The plan of a run on `data` read with `tok`, however it began: its batch source (conversations packed
    for chat), what its checkpoints record, and the notes in the order they are shown."""
    train_cfg = dataclasses.replace(train_cfg, val_fraction=data.val_fraction)  # prepared data's is fixed
    meta: dict[str, Any] = {"data": str(data.path.resolve()), "data_sha256": data.fingerprint}
    if data.prepared_dir is not None:
        meta["prepared"] = str(data.prepared_dir)
    notes = [*notes, *data.source_notes]
    if data.conversations is None:
        source: BatchSource = data.source  # type: ignore[assignment]  # text data always has its source
    else:
        chat_loss = chat.loss_on or "assistant"
        how = chat.long_conversations or "cut"
        block = model_cfg.block_size
        train, fit = fit_conversations(tok, data.conversations[0], block, how)  # type: ignore[arg-type]
        val, val_fit = fit_conversations(tok, data.conversations[1], block, how)  # type: ignore[arg-type]
        notes += _window_notes(fit, val_fit, how, block, chat, train, val)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # validation characters unseen in training are expected
            source = ChatData(train, val, tok, block, chat_loss, seed=train_cfg.seed)  # type: ignore[arg-type]
        meta["chat"] = {"loss_on": chat_loss, "long_conversations": how}
        if chat_loss == "all":
            notes.append("the loss counts every token of the conversations, not only the assistant's replies")
    if origin is not None:
        meta["init_from"] = origin
    return TrainingPlan(model_cfg, train_cfg, source, tok, meta, notes,
                        Path(origin["path"]) if origin is not None else None)


def _window_notes(fit: WindowFit, val_fit: WindowFit, how: str, block_size: int, chat: _Chat,
                  train: list[Any], val: list[Any]) -> list[str]:
    """What became of the conversations longer than the window, as notes; ChatError when that leaves nothing to
    train on or to hold out, or when they are refused. Each message names what would work instead."""
    too_long, total = fit.too_long + val_fit.too_long, fit.total + val_fit.total
    if not too_long:
        return []
    longest, line = max((fit.longest, fit.longest_line), (val_fit.longest, val_fit.longest_line))
    where = f", on line {line}," if line else ""
    what = SettingText(f"{too_long:,} of {total:,} conversations do not fit the model's window (`block_size` "
                       f"{block_size}: {block_size + 1} tokens at most for a conversation; the longest{where} is "
                       f"{longest:,})", "block_size")
    window = _window_hint(longest - 1, block_size, chat)
    if how == "refuse":
        raise ChatError(what + SettingText("; cut them after their last exchange that fits (`long_conversations` "
                                           "cut) or leave them out (`long_conversations` skip)", "long_conversations")
                        + window)
    if not train or not val:
        split = "training" if not train else "held-out"
        raise ChatError(what + f", and not one {split} conversation has a first exchange that fits" + window)
    done = f"cut {fit.cut + val_fit.cut:,} after their last exchange that fits" if how == "cut" else ""
    gone = fit.left_out + val_fit.left_out
    if gone:
        done += (", and " if done else "") + f"left out {gone:,}" + (" in which not even the first exchange fits"
                                                                   if how == "cut" else "")
    return [what + f": {done}" + window]


def _window_hint(needed: int, block_size: int, chat: _Chat) -> SettingText:
    """How to give the model a window of `needed` + 1 tokens, if the model can have one: a new model can; a model
    from `init_from` reads at most its base's positions; a resumed run keeps its window."""
    most = chat.most_positions
    if most is None:
        return SettingText(f"; to train them whole, give the model a window that holds them (`block_size` "
                           f"{needed:,})", "block_size")
    if needed <= most:
        return SettingText(f"; to train them whole, use `block_size` {needed:,} ({chat.model} has {most:,} "
                           f"positions)", "block_size")
    if chat.resumed:
        return SettingText(f"; {chat.model} keeps its window of {block_size:,} tokens (`block_size`)", "block_size")
    more = f" (`block_size` {most:,}, all its positions, keeps more of them)" if block_size < most else ""
    return SettingText(f"; {chat.model} reads at most {most:,} tokens{more}, so to train them whole start from a "
                       f"base model trained with `block_size` {needed:,} or more", "block_size")


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
        raise RunError(SettingText(f"{ckpt} is a task run (the calculator); `init_from` takes a text run or an "
                                   f"imported model", "init_from"))
    base = src.model_config("best")
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in MODEL_KEYS:
            continue
        value = parse_value(key, raw)
        if key == "block_size" and value > base.block_size:
            raise ConfigError(SettingText(
                f"`block_size` {value} is longer than the {base.block_size} positions the model in {ckpt} has "
                f"embeddings for: a model trained from it reads at most {base.block_size} tokens; give `block_size` "
                f"{base.block_size} or less (without it: all {base.block_size}), or for a longer window start from a "
                f"base model trained with that `block_size`", "block_size"))
        if key in ("block_size", "dropout"):
            changes[key] = value
        elif value != getattr(base, key):
            raise ConfigError(SettingText(f"{key} cannot change with `init_from`: the model comes from {ckpt} "
                                          f"({key} = {getattr(base, key)!r}); only dropout and a shorter "
                                          f"block_size can", "init_from"))
    model_cfg = dataclasses.replace(base, **changes)
    _, train_cfg = build_configs({k: v for k, v in overrides.items() if k not in MODEL_KEYS})
    origin: dict[str, Any] = {"path": str(ckpt.resolve())}
    if cfg.get("step") is not None:
        origin["step"] = cfg["step"]
    if isinstance(cfg.get("imported_from"), dict):
        origin["imported_from"] = cfg["imported_from"].get("path")
    return model_cfg, train_cfg, src.tokenizer("best"), origin


__all__ = ["TrainingPlan", "plan_new", "plan_resume", "plan_init_from", "init_from_configs"]
