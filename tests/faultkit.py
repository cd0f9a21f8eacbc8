"""Helpers of the fault and bad-input suites: a seeded text, tiny training flags, `python -m tinygpt` in a
subprocess, the one-line-error check, and the promise every fault must keep: the run still loads, samples
and resumes."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from tinygpt.training.checkpoint import CONFIG
from tinygpt.training.run import Run, load_checkpoint

FLAGS = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--eval_interval=2",
         "--eval_iters=1", "--log_interval=1", "--device=cpu", "--quiet"]


def make_text(n_words: int = 900, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "mind"]
    return "".join(rng.choice(words) + rng.choice([" ", " ", "\n", ", "]) for _ in range(n_words))


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TINYGPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _sigint_as_in_a_terminal() -> None:
    """In the child before it runs Python: SIGINT back to its default. A suite started as a background job
    (`python -m pytest &`, nohup, some CI runners) has SIGINT ignored, and children inherit that; Python then
    installs no KeyboardInterrupt handler, and the Ctrl-C a test sends would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(args: list, tmp_path: Path, **kwargs) -> subprocess.Popen:
    """`python -m tinygpt ARGS` in the background, stderr (and, unless given, stdout) piped as text, with Ctrl-C
    working as it does for a command typed in a terminal, however the suite itself was started."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, "-m", "tinygpt", *map(str, args)], stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=env(tmp_path), preexec_fn=_sigint_as_in_a_terminal,
                            **kwargs)


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 60,
               poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before the awaited moment: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def error_line(err: str) -> str:
    """The one `error:` line of a failed command: no traceback, no raw control characters, nothing after it."""
    assert "Traceback" not in err, err
    assert not any(c < " " and c not in "\n\r" for c in err), repr(err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def only_line(err: str) -> str:
    """Bad input refused before any work: stderr is exactly one `error:` line."""
    line = error_line(err)
    assert [ln for ln in err.splitlines() if ln.strip()] == [line], err
    return line


def metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]


def checkpoint_step(out: Path, which: str = "latest") -> int:
    """The step of the checkpoint `which` resolves to, read as a user's command would (fallbacks included)."""
    return json.loads((Run(out).checkpoint(which) / CONFIG).read_text(encoding="utf-8"))["step"]


def files_of(out: Path) -> dict[str, bytes]:
    """Every file of a run directory (but the lock) and its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def assert_loads_samples_resumes(cli, out: Path) -> int:
    """The promise a fault must keep: both checkpoints load, `sample` works, and `train --resume` with two more
    steps finishes at N + 2 (N: the step of the latest checkpoint). Returns N."""
    n = checkpoint_step(out, "latest")
    for which in ("best", "latest"):
        load_checkpoint(out, which)
    code, text, err = cli("sample", out, "--max_new_tokens", "5", "--seed", "0")
    assert code == 0 and text, err
    code, _, err = cli("train", "--out", out, "--resume", f"--max_iters={n + 2}", "--quiet")
    assert code == 0, err
    assert metrics(out)[-1]["step"] == n + 2 and checkpoint_step(out, "latest") == n + 2
    return n


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `path` (root only); unmounted on the way out."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        import pytest
        pytest.skip("mounting a small tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        import pytest
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], capture_output=True)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the file system of `disk` up to the last byte, then free `leave` bytes."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
    os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler
