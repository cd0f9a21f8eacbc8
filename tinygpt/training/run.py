"""A run directory, and the one object that decides what is on disk in it: `Run`.

    runs/baby/
      run.lock        held (flock) by the one process writing the run; names it for anyone refused
      metrics.jsonl   one JSON line per logged step
      latest/         the newest complete checkpoint, with training state (checkpoint.py)
      best/           the weights with the lowest validation loss so far
      .old-latest/    only between the two renames of a checkpoint swap: picked up if a crash came there
      .replaced/      only while an overwriting run starts: the old one, kept until the new one has a
                      checkpoint (then deleted), and put back if the new run stops before that

Every command and the training loop go through `Run`: which checkpoint `best`/`latest` means (and the
`.old-*` recovery), the create / resume / overwrite policy, the single-writer lock, metrics, and what a
run trained on (model config, tokenizer, task, data and its fingerprint, the split).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from tinygpt.config import (MODEL_KEYS, PRESETS, ConfigError, ModelConfig, SettingText, TrainConfig,
                            model_config_from_dict, parse_value, train_config_from_dict)
from tinygpt.files import write_text
from tinygpt.tasks.calculator import task_from_dict
from tinygpt.tokenizers import Tokenizer
from tinygpt.training.checkpoint import (CONFIG, WEIGHTS, CheckpointError, load_model, load_state, read_config,
                                         read_tokenizer, save_checkpoint)

METRICS = "metrics.jsonl"
LOCK = "run.lock"
REPLACED, REPLACING = ".replaced", ".replacing"
# what belongs to a run (and moves aside when a new run overwrites it); the lock stays with the directory
RUN_FILES = ("latest", "best", METRICS, "tensorboard", ".tmp-latest", ".tmp-best", ".old-latest", ".old-best")


class RunError(ValueError):
    """A run directory cannot be used as asked; the message is one line, fit for the CLI."""


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG).exists() and (path / WEIGHTS).exists()


class Run:
    """A run directory. Reading needs nothing but the path; writing (`start`) takes the lock first."""

    def __init__(self, path: str | Path):
        if not str(path).strip():  # Path("") is ".": an empty --out must not mean the current directory
            raise RunError("the run directory name is empty (an unset shell variable?); give a directory")
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --- reading ---------------------------------------------------------------------------------

    def holds_run(self) -> bool:
        return any((self.path / f).exists() for f in ("latest", "best", ".old-latest", METRICS, REPLACED))

    def checkpoint(self, which: str = "best") -> Path:
        """The checkpoint directory `which` ("best" or "latest") names: that one, else the other; each also
        found as `.old-<name>` (a crash between the two renames of a swap) or inside `.replaced/` (an
        overwrite that never saved). A checkpoint directory given directly is returned as it is."""
        if which not in ("best", "latest"):
            raise RunError(f"unknown checkpoint {which!r} (best or latest)")
        path = self.path
        if not path.exists():
            raise RunError(f"no such run or checkpoint directory: {path}")
        if not path.is_dir():
            raise RunError(f"{path} is not a directory (a run or checkpoint directory is expected)")
        if _is_checkpoint(path):
            return path
        order = [which] + [w for w in ("best", "latest") if w != which]
        for base in (path, path / REPLACING, path / REPLACED):
            for name in order:
                for cand in (base / name, base / f".old-{name}"):
                    if (cand / CONFIG).exists():
                        return cand
        raise RunError(self._no_checkpoint())

    def _no_checkpoint(self) -> str:
        """Why there is no checkpoint to read: a run still training towards its first one (another process
        holds the lock), a run that stopped before it, or no run at all."""
        if self._locked():
            return (f"{self.path} holds no checkpoint yet: it is being trained ({self._holder()}), and the first "
                    f"checkpoint is saved at its first evaluation; try again then")
        if (self.path / METRICS).exists():
            return f"{self.path} holds no checkpoint: its training stopped before saving one"
        return f"{self.path} holds no checkpoint (expected {CONFIG} and {WEIGHTS}, or best/ or latest/)"

    def config(self, which: str = "best") -> dict[str, Any]:
        """config.json of a checkpoint, with "path" added."""
        ckpt = self.checkpoint(which)
        return {**read_config(ckpt), "path": str(ckpt)}

    def model_config(self, which: str = "best") -> ModelConfig:
        ckpt = self.checkpoint(which)
        try:
            return model_config_from_dict(read_config(ckpt)["model"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{ckpt / CONFIG}: invalid model config: {e}") from None

    def tokenizer(self, which: str = "best") -> Tokenizer:
        return read_tokenizer(self.checkpoint(which))

    def task(self, which: str = "best") -> Any:
        """The task a task run (the calculator) was trained on, or None for a text run."""
        cfg = read_config(self.checkpoint(which))
        return task_of(cfg)

    def kind(self, which: str = "best") -> str:
        """"task" or "text"."""
        return kind_of(read_config(self.checkpoint(which)))

    def load(self, which: str = "best", device: str | torch.device = "cpu"
             ) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
        """(model in eval mode, tokenizer, config dict with "path") of a checkpoint, validated."""
        ckpt = self.checkpoint(which)
        model, tokenizer, cfg = load_model(ckpt, device)
        return model, tokenizer, {**cfg, "path": str(ckpt)}

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            raise RunError(f"{self.path} has no {METRICS}")
        out = []
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                if i == len(lines):
                    break  # a last line cut short by a crash: ignore it
                raise RunError(f"{path}: line {i} is not valid JSON") from None
        return out

    # --- writing: policy, lock ------------------------------------------------------------------

    def start(self, resume: bool = False, overwrite: bool = False) -> "Run":
        """Make this process the run's writer: check the policy (a directory holding a run is only reused with
        resume or overwrite), take the lock, recover what an interrupted earlier writer left, and (overwrite)
        move the old run aside until the new one has saved a checkpoint. Returns self; `close()` releases."""
        self.check_start(resume, overwrite)  # cheap checks before touching anything (repeated under the lock)
        out = self.path
        out.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
            self._check_policy(resume, overwrite)
            if not resume and self.holds_run():
                self._move_aside()
        except BaseException:
            self.close()
            raise
        return self

    def check_start(self, resume: bool = False, overwrite: bool = False) -> None:
        """Would `start` accept these options? Read-only, so a command can ask before doing any work."""
        if resume and overwrite:
            raise RunError(SettingText("`resume` and `overwrite` contradict each other: resume continues the run, "
                                       "overwrite replaces it", "resume", "overwrite"))
        if self.path.exists() and not self.path.is_dir():
            raise RunError(SettingText(f"`out` {self.path} exists and is not a directory", "out"))
        self._refuse_if_locked()  # another writer comes first: "nothing to resume" would mislead while it saves
        self._check_policy(resume, overwrite)

    def _check_policy(self, resume: bool, overwrite: bool) -> None:
        if resume:
            if not self._resumable():
                raise RunError(f"nothing to resume: {self.path} holds no latest/ checkpoint")
        elif self.holds_run() and not overwrite:
            raise RunError(SettingText(f"{self.path} already holds a run; use `resume` to continue it or `overwrite` "
                                       f"to replace it", "resume", "overwrite"))

    def _resumable(self) -> bool:
        return any((base / name / CONFIG).exists() for base in (self.path, self.path / REPLACING, self.path / REPLACED)
                   for name in ("latest", ".old-latest"))

    def _lock(self) -> None:
        """An exclusive flock on run.lock: the kernel drops it when the process dies (even by SIGKILL), so a
        lock left by a dead process never blocks. The file records who holds it, for the refusal message."""
        path = self.path / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl  # POSIX only: imported where the lock is taken
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock (Windows): single-writer is not enforced
            pass
        except OSError:
            os.close(fd)
            raise RunError(self._held_message()) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._lock_fd = fd

    def _refuse_if_locked(self) -> None:
        """Refuse now if another process holds the lock."""
        if self._locked():
            raise RunError(self._held_message())

    def _locked(self) -> bool:
        """Does another process hold the lock? Probed with a shared flock on a read-only descriptor, so nothing
        is created and nothing stays locked (no lock file, or an unreadable one: no)."""
        if self._lock_fd is not None:
            return False  # this process is the writer
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return False
        try:
            import fcntl  # POSIX only: imported where the lock is taken
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock (Windows)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)  # drops the shared lock if it was taken
        return False

    def _holder(self) -> str:
        try:
            holder = json.loads((self.path / LOCK).read_text(encoding="utf-8"))
            return f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
        except (OSError, ValueError, AttributeError):
            return "another process"

    def _held_message(self) -> str:
        return (f"{self.path} is being written by another tinygpt ({self._holder()}); wait for it to finish or stop "
                f"it first")

    def _owns_lock(self) -> bool:
        """Is the run.lock in the directory still the file this process locked (not removed or replaced)?"""
        try:
            now, ours = os.stat(self.path / LOCK), os.fstat(self._lock_fd)
        except (OSError, TypeError):
            return False
        return (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino)

    def _check_still_ours(self) -> None:
        """The run directory may have been deleted or moved while we write it: saving then would silently
        recreate an unlocked, partial run (mkdir parents) where a second writer could start."""
        if self._lock_fd is None or self._owns_lock():
            return
        if self.path.is_dir() and any((self.path / f).exists() for f in ("latest", METRICS)):
            raise RunError(SettingText(f"{self.path / LOCK} was removed or replaced while training; stopping, so that "
                                       f"two writers never share the run (resume it with `resume`)", "resume"))
        raise RunError(f"{self.path} was deleted or moved while training; nothing more can be saved there "
                       f"(the run is lost unless it was moved: then resume it from its new place)")

    def close(self) -> None:
        """Release the lock (the file stays: removing it would race with a process about to lock it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _recover(self) -> None:
        """Repair what a writer killed at the wrong moment left behind."""
        out = self.path
        replacing = out / REPLACING
        if replacing.exists():  # killed while moving the old run aside: move it back
            for f in replacing.iterdir():
                if not (out / f.name).exists():
                    os.replace(f, out / f.name)
            shutil.rmtree(replacing, ignore_errors=True)
        replaced = out / REPLACED
        if replaced.exists():
            if (out / "latest").exists() or (out / ".old-latest").exists():
                shutil.rmtree(replaced)  # the new run had saved; only the clean-up was missed
            else:  # the new run never saved a checkpoint: the old run is still the run
                for name in RUN_FILES:
                    p = out / name
                    if p.is_dir():
                        shutil.rmtree(p)
                    elif p.exists():
                        p.unlink()
                for f in replaced.iterdir():
                    os.replace(f, out / f.name)
                replaced.rmdir()
        for name in (".tmp-latest", ".tmp-best"):
            if (out / name).exists():
                shutil.rmtree(out / name, ignore_errors=True)

    def undo_unsaved_overwrite(self) -> None:
        """After a failed start of an overwriting run that saved nothing: put the old run back now."""
        if self._lock_fd is not None and self._owns_lock() and (self.path / REPLACED).exists():
            self._recover()

    def _move_aside(self) -> None:
        """Overwriting: the old run goes into .replaced/ (through .replacing/, so an interruption is undone)."""
        out = self.path
        tmp = out / REPLACING
        tmp.mkdir()
        for name in RUN_FILES:
            if (out / name).exists():
                os.replace(out / name, tmp / name)
        os.replace(tmp, out / REPLACED)

    # --- writing: checkpoints and metrics -----------------------------------------------------------

    def save(self, model: nn.Module, tokenizer: Tokenizer, meta: dict[str, Any], state: dict[str, Any],
             best: bool) -> list[Path]:
        """Save latest/ (with the training state) and, if `best`, best/ (weights only). A write that fails
        leaves both as they were before it; a crash between the two is repaired on resume (`stale_best`).
        The first save of an overwriting run deletes the old run it replaced. Errors are one line naming the
        run directory. Returns the paths written, latest/ first."""
        self._check_still_ours()
        saved = []
        try:
            saved.append(save_checkpoint(self.path / "latest", model, tokenizer, meta, state))
            if best:
                saved.append(save_checkpoint(self.path / "best", model, tokenizer, meta))
        except CheckpointError as e:
            reason = getattr(e, "reason", e)
            raise CheckpointError(f"could not write a checkpoint in {self.path}: {reason}; the previous checkpoint "
                                  f"is intact") from None
        if (self.path / REPLACED).exists():
            shutil.rmtree(self.path / REPLACED, ignore_errors=True)
        return saved

    def log(self, line: dict[str, Any]) -> None:
        """Append one metrics line (written in one call, so a crash cuts at most the last line)."""
        try:
            with open(self.path / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        except OSError as e:
            raise RunError(f"could not write {self.path / METRICS}: {e.strerror or e}") from None

    def truncate_metrics(self, step: int) -> None:
        """On resume, drop metric lines logged after the checkpoint (those steps are done again)."""
        path = self.path / METRICS
        if not path.exists():
            return
        kept = []
        for ln in path.read_text(encoding="utf-8").splitlines():
            try:
                if ln.strip() and json.loads(ln).get("step", 0) <= step:
                    kept.append(ln)
            except json.JSONDecodeError:
                pass  # a line cut short by a crash
        write_text(path, "".join(ln + "\n" for ln in kept))

    # --- what a resumed run continues with ---------------------------------------------------------

    def resume_point(self) -> Path:
        for base in (self.path, self.path / REPLACING, self.path / REPLACED):
            for name in ("latest", ".old-latest"):
                if (base / name / CONFIG).exists():
                    return base / name
        raise RunError(f"nothing to resume: {self.path} holds no latest/ checkpoint")

    def stale_best(self, state: dict[str, Any]) -> bool:
        """Did a crash come between saving latest/ as the new best and saving best/? Then latest/ holds the
        best weights and best/ (if any) older, worse ones."""
        latest = read_config(self.resume_point()).get("val_loss")
        if latest is None or latest != state.get("best_val_loss"):
            return False
        try:
            best = read_config(self.checkpoint("best")).get("val_loss")
        except (RunError, CheckpointError):
            return True
        return self.checkpoint("best") == self.resume_point() or best is None or best > latest

    def resume_state(self) -> dict[str, Any]:
        return load_state(self.resume_point())

    def resume_configs(self, overrides: dict[str, Any], preset: str | None = None
                       ) -> tuple[ModelConfig, TrainConfig, dict[str, Any]]:
        """The configs a resumed run continues with: the checkpoint's, updated by explicit training overrides.
        Architecture keys cannot change on resume. A preset (the one the run began with, given again) is
        accepted where it agrees with the run's settings; a key it sets differently is refused, by name, unless
        an override gives that key (the command that started the run, run again with `resume`, is accepted)."""
        point = self.resume_point()
        cfg = read_config(point)
        try:
            model_cfg = model_config_from_dict(cfg["model"])
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{point / CONFIG}: invalid model config: {e}") from None
        changed = [f"{k} {parse_value(k, v)!r} (the run has {getattr(model_cfg, k)!r})" for k, v in overrides.items()
                   if k in MODEL_KEYS and parse_value(k, v) != getattr(model_cfg, k)]
        if changed:
            raise RunError(f"a resumed run keeps its architecture; cannot change {', '.join(changed)}")
        recorded = {**cfg.get("train", {}), **dataclasses.asdict(model_cfg)}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
            other = [f"{k} {v!r} (the run has {recorded.get(k)!r})" for k, v in PRESETS[preset].items()
                     if k not in overrides and recorded.get(k) != v]
            if other:
                more = f" and {len(other) - 3} more" if len(other) > 3 else ""
                raise RunError(SettingText(f"`preset` {preset} sets what this run does not have: "
                                           f"{', '.join(other[:3])}{more}; "
                                           f"a resumed run keeps its settings: drop `preset` (or give a training key "
                                           f"to change it)", "preset"))
        train = {**cfg.get("train", {}), **{k: parse_value(k, v) for k, v in overrides.items() if k not in MODEL_KEYS}}
        return model_cfg, train_config_from_dict(train), cfg


def kind_of(cfg: dict[str, Any]) -> str:
    """A checkpoint's kind from its config.json: "task" (it answers a task's questions) or "text"."""
    return "task" if isinstance(cfg.get("task"), dict) else "text"


def task_of(cfg: dict[str, Any]) -> Any:
    """The task object of a task checkpoint's config, or None for a text checkpoint."""
    if kind_of(cfg) != "task":
        return None
    return task_from_dict(cfg["task"])


def load_checkpoint(path: str | Path, which: str = "best", device: str | torch.device = "cpu",
                    ) -> tuple[nn.Module, Tokenizer, dict[str, Any]]:
    """Rebuild (model in eval mode, tokenizer, config dict) from a run or checkpoint directory."""
    return Run(path).load(which, device)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    return Run(run_dir).metrics()


__all__ = ["Run", "RunError", "METRICS", "kind_of", "task_of", "load_checkpoint", "read_metrics"]
