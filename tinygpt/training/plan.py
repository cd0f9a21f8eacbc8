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

import numpy as np

from tinygpt.config import MODEL_KEYS, ConfigError, ModelConfig, TrainConfig, build_configs, parse_value
from tinygpt.data.conversations import Conversation, split_conversations
from tinygpt.data.corpora import resolve_data
from tinygpt.data.prepare import Progress, fingerprint, unknown_message, unknown_note
from tinygpt.data.prepared_cache import NotTheExpectedText, Prepared, prepared_for_run
from tinygpt.data.text import BatchSource, TextData, load_text, split_text, text_digest
from tinygpt.tokenizers import CharTokenizer, ChatTokenizer, Tokenizer
from tinygpt.training.run import Run, RunError, kind_of


@dataclass
class TextRunPlan:
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    source: BatchSource
    tokenizer: Tokenizer
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was decided on the user's behalf (tokenizer choice...)
    init_from: Path | None = None  # the checkpoint directory whose weights a new run starts from


def plan_text_run(out: str | Path, data: str | None, overrides: dict[str, Any], *, preset: str | None = None,
                  tokenizer: str | None = None, vocab_size: int | None = None, resume: bool = False,
                  overwrite: bool = False, change_data: bool = False, cache_dir: Path | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  init_from: str | Path | None = None, chat: bool | None = None, loss_on: str | None = None,
                  skip_bad_lines: bool = False, prepare_progress: Progress | None = None) -> TextRunPlan:
    """Everything `train()` needs for a text run into `out`.

    New run: data is required; the tokenizer ("char" by default, "bpe", or a tokenizer .json file) is
    built from the training split only. Resumed run: configs and tokenizer come from the checkpoint
    (training keys in overrides may change); data defaults to the recorded one, and a different text is
    refused unless change_data. init_from (a run or checkpoint directory): a new run starting from those weights
    and that tokenizer (see `init_from_configs`).

    Chat data (a .jsonl file of conversations, see chat.py; chat=True forces it, chat=False refuses it) trains a
    chat model: the tokenizer gets the chat template's tokens (the model's embedding grows by as many rows),
    conversations are packed into blocks, and the loss counts only the assistant's replies unless
    loss_on="all". skip_bad_lines leaves malformed conversations out instead of refusing the file.

    Prepared data (prepare.py): --data may name a prepared directory, and a text of AUTO_PREPARE_BYTES or more
    is prepared into the cache (once; prepare_progress(stage, done, total) follows it); the run then reads
    memory-mapped ids, and records the fingerprint of the text they came from.
    """
    notes: list[str] = []
    prepared: Prepared | None = None
    is_chat = _is_chat(data, resume and data is None and out, chat)
    if loss_on is not None and not is_chat:
        raise ConfigError("--chat_loss applies to chat data (a .jsonl file of conversations)")
    if skip_bad_lines and not is_chat:
        raise ConfigError("--skip_bad_lines applies to chat data (a .jsonl file of conversations)")
    if change_data and not resume:
        raise ConfigError("--change_data applies only with --resume (a new run simply takes its --data)")
    if init_from is not None and resume:
        raise ConfigError("--init_from starts a new run from existing weights and --resume continues a run; use one")
    from tinygpt.training.distributed import detect
    if detect().master:  # before any work: is --out usable as asked? (under torchrun rank 0's question: it takes
        Run(out).check_start(resume, overwrite)  # the lock, and another rank asking later would find it taken)
    if resume:
        if preset is not None:
            raise ConfigError("--preset does not apply to --resume (the run keeps its settings; override single keys)")
        if tokenizer is not None or vocab_size is not None:
            raise ConfigError("a resumed run keeps its tokenizer; drop --tokenizer / --vocab_size")
        run = Run(out)
        model_cfg, train_cfg, old = run.resume_configs(overrides)
        if kind_of(old) != "text":
            raise RunError(f"{out} is a task run (the calculator); resume it with tinygpt demo --out {out} --resume")
        from tinygpt.training.checkpoint import read_tokenizer
        tok = read_tokenizer(run.resume_point())  # the checkpoint the loop resumes from
        if isinstance(tok, ChatTokenizer) != is_chat:
            raise RunError(f"{out} is a {'chat' if isinstance(tok, ChatTokenizer) else 'text'} run; resume it on "
                           f"{'conversations (.jsonl)' if isinstance(tok, ChatTokenizer) else 'text'}, as it began")
        if is_chat and loss_on is None:
            loss_on = (old.get("chat") or {}).get("loss_on")
        spec = data or old.get("data")
        if not spec:
            raise ConfigError("the checkpoint does not record its data; pass --data")
        recorded = old.get("data_sha256")
        try:  # a big text is compared with the recorded one before it is prepared
            path, digest, text, conversations, prepared, train_cfg = _read_for(
                spec, tok, is_chat, skip_bad_lines, train_cfg, overrides, notes, prepare_progress,
                expect=None if change_data else recorded)
        except NotTheExpectedText:
            path, digest = resolve_data(spec), None
        same = digest == recorded if recorded else str(Path(path).resolve()) == old.get("data")
        if not same and not change_data:
            what = (f"{path} has changed since this run was trained on it"
                    if str(Path(path).resolve()) == old.get("data") else
                    f"{path} is not the text this run was trained on ({old.get('data')})")
            raise RunError(f"{what}; resuming on other data would mix two texts in one run; pass --change_data to "
                           f"do it anyway, or train a new run with another --out")
        if not same:
            notes.append(f"resuming on different data: {path}")
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
        path, digest, text, conversations, prepared, train_cfg = _read_for(
            data, tok, is_chat, skip_bad_lines, train_cfg, overrides, notes, prepare_progress)
        notes.append(f"starting from the weights of {origin['path']} (its tokenizer: {tok.kind}, "
                     f"{tok.vocab_size:,} tokens); a fresh optimizer and schedule")
        if is_chat and not isinstance(tok, ChatTokenizer):
            tok = ChatTokenizer(tok)
            model_cfg = model_cfg.with_vocab(tok.vocab_size)
            notes.append(f"added the chat template's {len(tok.specials)} tokens ({', '.join(tok.specials)}) "
                         f"as ids {tok.base.vocab_size}-{tok.vocab_size - 1}")
    else:
        if not data:
            raise ConfigError("--data is required (a UTF-8 text file, a folder of .txt files, or a corpus name)")
        model_cfg, train_cfg = build_configs(overrides, preset)
        if not is_chat:
            prepared = prepared_for_run(data, tokenizer, vocab_size, train_cfg.val_fraction, prepare_progress)
        if prepared is not None:
            path, digest, train_cfg = _prepared_data(prepared, train_cfg, overrides)
            tok = prepared.tokenizer
            notes.append(f"tokenizer: the prepared data's ({prepared.meta['tokenizer']['how']})")
        else:
            path, text, conversations = _load(data, is_chat, skip_bad_lines, notes)
            digest = text_digest(text)
            from tinygpt.tokenizers.choose import tokenizer_for_training
            if is_chat:  # the tokenizer learns from the words of the training conversations
                train_text = "\n".join(m.content for c in split_conversations(conversations, train_cfg.val_fraction)[0]
                                       for m in c.messages)
            else:
                train_text = split_text(text, train_cfg.val_fraction)[0]
            tok, how = tokenizer_for_training(tokenizer or "char", train_text, vocab_size, cache_dir, progress)
            if is_chat and not isinstance(tok, ChatTokenizer):
                tok = ChatTokenizer(tok)
                how += ", plus the chat template's tokens"
            notes.append(f"tokenizer: {how}")
        model_cfg = model_cfg.with_vocab(tok.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # validation characters unseen in training are expected
        if is_chat:
            from tinygpt.tasks.chat import ChatData
            loss_on = loss_on or "assistant"
            train_part, val_part = split_conversations(conversations, train_cfg.val_fraction)
            source = ChatData(train_part, val_part, tok, model_cfg.block_size, loss_on, seed=train_cfg.seed)
        elif prepared is not None:
            source = prepared.source(model_cfg.block_size)
        else:
            source = TextData.from_text(text, tok, model_cfg.block_size, train_cfg.val_fraction)
    unknown = unknown_note(prepared.meta) if prepared is not None else \
        None if is_chat else _unknown_in_training(tok, source, text, train_cfg.val_fraction)
    if unknown:
        notes.append(f"warning: {unknown}")
    meta = {"data": str(Path(path).resolve()), "data_sha256": digest}
    if prepared is not None:
        notes.append(prepared.note)
        if prepared.dir != prepared.data:
            meta["prepared"] = str(prepared.dir)
    if is_chat:
        meta["chat"] = {"loss_on": loss_on}
        if loss_on == "all":
            notes.append("the loss counts every token of the conversations, not only the assistant's replies")
    start = None
    if init_from is not None and not resume:
        meta["init_from"] = origin
        start = Path(origin["path"])
    return TextRunPlan(model_cfg, train_cfg, source, tok, meta, notes, start)


def _unknown_in_training(tok: Tokenizer, data: TextData, text: str, val_fraction: float) -> str | None:
    """A warning when characters of the training split of a text read in memory are not in a character
    tokenizer's vocabulary (one given with --tokenizer, or a resumed run's on other data): they train as <unk>.
    (prepare() counts them for prepared data.)"""
    if not isinstance(tok, CharTokenizer):
        return None
    count = int(np.count_nonzero(data.split("train") == tok.unk_id))
    return unknown_message(count, tok.unseen(split_text(text, val_fraction)[0])) if count else None


def _read_for(spec: str, tok: Tokenizer, chat: bool, skip_bad_lines: bool, train_cfg: TrainConfig,
              overrides: dict[str, Any], notes: list[str], progress: Progress | None, expect: str | None = None
              ) -> tuple[Path, str, str | None, list[Conversation] | None, Prepared | None, TrainConfig]:
    """The data of a run whose tokenizer is known (resumed, or from --init_from): (path, fingerprint, text,
    conversations, prepared data, training config). A big text is read prepared (memory-mapped) with that
    tokenizer; a small one, or conversations, in memory. `expect`: the fingerprint a big text must have, or
    prepare_cache.NotTheExpectedText is raised before it is prepared."""
    prepared = None if chat else prepared_for_run(spec, tok, None, train_cfg.val_fraction, progress, expect=expect)
    if prepared is not None:
        path, digest, train_cfg = _prepared_data(prepared, train_cfg, overrides)
        return path, digest, None, None, prepared, train_cfg
    path, text, conversations = _load(spec, chat, skip_bad_lines, notes)
    return path, text_digest(text), text, conversations, None, train_cfg


def _prepared_data(prepared: Prepared, train_cfg: TrainConfig, overrides: dict[str, Any]
                   ) -> tuple[Path, str, TrainConfig]:
    """(what --data named, the fingerprint of its text, the training config with the prepared split: that was
    made once, when the data was prepared, so another --val_fraction is refused)."""
    fixed = prepared.meta["val_fraction"]
    if "val_fraction" in overrides and parse_value("val_fraction", overrides["val_fraction"]) != fixed:
        raise ConfigError(f"{prepared.dir} was prepared with val_fraction {fixed}; prepare it again for another split")
    return prepared.data, fingerprint(prepared.meta), dataclasses.replace(train_cfg, val_fraction=fixed)


def _is_chat(data: str | None, resumed_run: Any, chat: bool | None) -> bool:
    """Is this run trained on conversations? An explicit chat flag decides; else .jsonl conversations are, and
    a resumed run without --data is what its checkpoint says."""
    from tinygpt.data.conversations import is_chat_file
    if chat is not None:
        return chat
    if data:
        return is_chat_file(data)
    if resumed_run:
        try:
            return isinstance(Run(resumed_run).tokenizer("latest"), ChatTokenizer)
        except Exception:  # the resume itself reports a missing or broken checkpoint, with its own message
            return False
    return False


def _load(spec: str, chat: bool, skip_bad_lines: bool, notes: list[str]
          ) -> tuple[Path, str, list[Conversation] | None]:
    """(path, its text for the fingerprint, its conversations when chat data)."""
    if not chat:
        path, text = load_text(spec)
        return path, text, None
    from tinygpt.data.conversations import read_conversations
    path = Path(spec)
    conversations, skipped = read_conversations(path, skip_bad_lines)
    if skipped:
        notes.append(f"left out {len(skipped)} malformed line(s) of {path}; the first: {skipped[0]}")
    return path, path.read_text(encoding="utf-8"), conversations


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
