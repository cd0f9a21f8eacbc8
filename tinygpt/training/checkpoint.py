"""Checkpoints are directories: config.json, model.safetensors, tokenizer.json and (for resuming) state.pt.

One checkpoint directory is the unit here; a run directory (its `latest/` and `best/`, metrics, lock) is
run.py's. Every checkpoint is written into a temporary directory and swapped in with renames, so a crash or a full disk never leaves a half-written checkpoint behind: at
every instant either the new or the old copy is complete (`.old-<name>` is picked up if the crash came
between the two renames). Nothing is unpickled: state.pt is read with torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinygpt.config import ConfigError, ModelConfig, model_config_from_dict
from tinygpt.models import build_model
from tinygpt.tokenizers import Tokenizer, TokenizerError, load_tokenizer
from tinygpt.version import __version__

CONFIG, WEIGHTS, TOKENIZER, STATE = "config.json", "model.safetensors", "tokenizer.json", "state.pt"


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be read; the message is one line, fit for the CLI."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without duplicated (tied) tensors: safetensors refuses shared memory."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.shape)
        if key in seen:
            continue
        seen.add(key)
        out[k] = v.detach().to("cpu").contiguous()
    return out


def save_checkpoint(path: str | Path, model: nn.Module, tokenizer: Tokenizer, meta: dict[str, Any],
                    state: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint directory at `path`, replacing any earlier one atomically.

    meta: JSON-able facts stored in config.json beside the model config (train config, step, task...).
    state: the training state for exact resume (optimizer, RNG, step), saved with torch.save.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    old = path.with_name(f".old-{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        config = {"tinygpt_version": __version__, "model": asdict(model.config),
                  "tokenizer": tokenizer.kind, **meta}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(_weights(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        tokenizer.save(tmp / TOKENIZER)
        if state is not None:
            torch.save(state, tmp / STATE)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old.exists():
            shutil.rmtree(old)
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        reason = getattr(e, "strerror", None) or _os_reason(e) or _full_disk(tmp.parent) or _first_line(e)
        shutil.rmtree(tmp, ignore_errors=True)
        err = CheckpointError(f"could not write {path}: {reason}")
        err.reason = reason  # type: ignore[attr-defined]  # for callers that name the place themselves
        raise err from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _os_reason(e: BaseException) -> str | None:
    """The OS error inside a wrapped one: safetensors and torch.save report a full disk as text such as
    "Error while serializing: I/O error: No space left on device (os error 28)"."""
    m = re.search(r"(?:os error|errno) (\d+)", str(e), re.IGNORECASE)
    return os.strerror(int(m.group(1))) if m else None


def _full_disk(folder: Path) -> str | None:
    """torch.save reports a full disk only as "[enforce fail at inline_container.cc] unexpected pos ...": ask the
    file system (before the temporary files are deleted) whether it is full."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return os.strerror(28) if st.f_bavail * st.f_frsize < (1 << 20) else None  # ENOSPC's own words


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_config(ckpt: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((ckpt / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {CONFIG}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{ckpt / CONFIG} is corrupted (not valid JSON)") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{ckpt / CONFIG} has no model section")
    return cfg


def read_tokenizer(ckpt: Path) -> Tokenizer:
    path = ckpt / TOKENIZER
    try:
        return load_tokenizer(path)
    except TokenizerError as e:
        msg = str(e)  # some tokenizer errors ("unknown tokenizer type None") do not say which file
        raise CheckpointError(msg if str(path) in msg else f"{path}: {msg}") from None


def load_model(ckpt: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    """Rebuild (model in eval mode, tokenizer, config dict) from one checkpoint directory, checking that the
    config, the tokenizer and every weight agree (a mismatch is a one-line CheckpointError)."""
    ckpt = Path(ckpt)
    cfg = read_config(ckpt)
    try:
        model_cfg: ModelConfig = model_config_from_dict(cfg["model"])
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{ckpt / CONFIG}: invalid model config: {e}") from None
    tokenizer = read_tokenizer(ckpt)
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise CheckpointError(f"{ckpt}: the tokenizer has {tokenizer.vocab_size} tokens but the model expects "
                              f"{model_cfg.vocab_size}; the tokenizer does not belong to this model")
    if not (ckpt / WEIGHTS).exists():
        raise CheckpointError(f"{ckpt} has no {WEIGHTS}")
    try:
        weights = load_file(str(ckpt / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{ckpt / WEIGHTS} is corrupted: {e}") from None
    bad = [k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{ckpt / WEIGHTS} holds non-finite weights ({bad[0]}): the run had diverged when "
                              f"it was saved")
    model = build_model(model_cfg)
    expected = model.state_dict()
    for name, tensor in expected.items():  # tied tensors are stored once (safetensors refuses shared memory)
        if name not in weights:
            twin = next((k for k, t in expected.items() if k in weights and t.data_ptr() == tensor.data_ptr()), None)
            if twin is not None:
                weights[name] = weights[twin]
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{ckpt / WEIGHTS} does not match the model config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError:  # a tensor of the wrong shape
        raise CheckpointError(f"{ckpt / WEIGHTS} does not match the model config (tensor shapes differ)") from None
    model.to(device).eval()
    return model, tokenizer, cfg


def load_state(ckpt: Path) -> dict[str, Any]:
    """The training state saved beside a checkpoint, read without unpickling arbitrary objects."""
    try:
        return torch.load(ckpt / STATE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {STATE}: it cannot be resumed") from None
    except Exception as e:  # torch raises several types for a damaged file
        raise CheckpointError(f"{ckpt / STATE} is corrupted: {type(e).__name__}") from None
