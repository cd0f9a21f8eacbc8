"""Faults injected into training, and the promise each must keep: the run still loads, samples and resumes,
or nothing changed on disk. SIGKILL at random moments (also during --overwrite), a full disk (a small tmpfs,
and a failing writer in-process), a read-only or vanished run directory, two writers, a diverging run, an
overwrite that fails before its first checkpoint, and resuming on other data."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faultkit import (FLAGS, assert_loads_samples_resumes, checkpoint_step, error_line, files_of, fill, make_text,
                      metrics, only_line, spawn, tmpfs, wait_until)
from tinygpt.training import checkpoint
from tinygpt.training.run import Run, RunError, load_checkpoint


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def data(tmp_path) -> Path:
    p = tmp_path / "input.txt"
    p.write_text(make_text(), encoding="utf-8")
    return p


def good_run(cli, data: Path, out: Path, *extra: str, steps: int = 4) -> Path:
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, f"--max_iters={steps}", *extra)
    assert code == 0, err
    return out


def no_checkpoint_yet(cli, data: Path, out: Path) -> None:
    """A run killed before its first checkpoint: a new `train` there is either simply allowed, or refused with the
    one line that names --resume and --overwrite."""
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=2")
    if code != 0:
        assert code == 2 and "already holds a run" in only_line(err), err
        code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=2", "--overwrite")
        assert code == 0, err


# --- SIGKILL ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_moments_never_costs_the_run(tmp_path, data, cli):
    """Eight training processes killed with SIGKILL: one at a random delay after launch (imports), two at a
    random delay after the run directory is locked (planning done: the first evaluation and the first save),
    five at a random delay after the first checkpoint, saving one every step (so most kills land inside a
    save). Afterwards every run either has no checkpoint yet, or loads, samples and resumes."""
    rng = random.Random(1234)
    plans = [("launch", rng.uniform(0.05, 1.5))] + [("locked", rng.uniform(0.0, 0.3)) for _ in range(2)] + \
            [("checkpointed", rng.uniform(0.0, 0.8)) for _ in range(5)]
    awaited = {"launch": None, "locked": "run.lock", "checkpointed": "latest"}

    def kill_one(i: int) -> tuple[Path, str]:
        out = tmp_path / f"run{i}"
        proc = spawn(["train", "--data", data, "--out", out, *FLAGS, "--max_iters=100000", "--eval_interval=1"],
                     tmp_path)
        try:
            phase, delay = plans[i]
            if awaited[phase]:
                wait_until(lambda: (out / awaited[phase]).exists(), proc)
            time.sleep(delay)
        finally:
            proc.kill()
            proc.communicate()
        left = sorted(p.name for p in out.iterdir()) if out.exists() else []
        return out, f"{phase} +{delay:.2f}s: {left}"

    with ThreadPoolExecutor(2) as pool:
        killed = list(pool.map(kill_one, range(len(plans))))
    outcomes = []
    for out, what in killed:
        try:
            Run(out).checkpoint("latest")
        except RunError:
            no_checkpoint_yet(cli, data, out)
            outcomes.append(f"{what} -> no checkpoint yet")
            continue
        n = assert_loads_samples_resumes(cli, out)
        outcomes.append(f"{what} -> resumed from step {n}")
    print("\n".join(outcomes))
    assert all("resumed" in o for o in outcomes[3:])  # killed after a checkpoint: never back to nothing


@pytest.mark.slow
def test_sigkill_during_overwrite_leaves_the_old_or_the_new_run(tmp_path, data, cli):
    """`train --overwrite` over a good run, killed just after the old run was moved aside (the new run has no
    checkpoint yet), and just after the new run's first checkpoint: a reader finds the old run (seed 1337) in
    the first case, the new one (seed 7) in the second, never neither, and both resume."""
    outs = [good_run(cli, data, tmp_path / f"ow{i}") for i in range(2)]
    moments = [lambda out: (out / ".replaced").exists(),
               lambda out: json.loads((out / "latest" / "config.json").read_text())["train"]["seed"] == 7]

    def kill_one(i: int) -> None:
        out = outs[i]
        proc = spawn(["train", "--data", data, "--out", out, *FLAGS, "--seed=7", "--overwrite",
                      "--max_iters=100000", "--eval_interval=50"], tmp_path)
        try:
            wait_until(lambda: _quietly(moments[i], out), proc)
        finally:
            proc.kill()
            proc.communicate()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(kill_one, range(2)))
    found = []
    for i, out in enumerate(outs):
        latest = out / "latest" / "config.json"
        new_saved = latest.exists() and json.loads(latest.read_text())["train"]["seed"] == 7
        _, _, cfg = load_checkpoint(out)  # before any recovery: whatever a reader finds must load
        assert cfg["train"]["seed"] == (7 if new_saved else 1337)  # the old run until the new one has saved
        found.append(f"killed at moment {i}: {sorted(p.name for p in out.iterdir())} -> seed {cfg['train']['seed']}")
        assert_loads_samples_resumes(cli, out)
        assert not (out / ".replaced").exists() and not (out / ".replacing").exists()
        assert new_saved or i == 0  # (the first kill is meant to land before step 50; a slow machine may miss)
    print("\n".join(found))


def _quietly(condition, out: Path) -> bool:
    try:
        return condition(out)
    except (OSError, ValueError):  # a file caught between its creation and its last byte
        return False


def test_interrupted_move_aside_still_loads_and_resumes(tmp_path, data, cli):
    """Killed between the renames that move the old run into .replacing/: what is already moved is still found
    by readers, and the next writer puts it back."""
    out = good_run(cli, data, tmp_path / "run")
    before = files_of(out)
    (out / ".replacing").mkdir()
    for name in ("latest", "metrics.jsonl"):  # best/ not moved yet
        os.replace(out / name, out / ".replacing" / name)
    assert checkpoint_step(out, "latest") == 4
    load_checkpoint(out, "latest")
    code, _, err = cli("train", "--out", out, "--resume", "--max_iters=4", "--quiet")  # nothing to do but recover
    assert code == 0, err
    assert files_of(out) == before
    assert_loads_samples_resumes(cli, out)


# --- a full disk ------------------------------------------------------------------------------------

def full_disk_line(out: Path) -> str:
    return f"error: could not write a checkpoint in {out}: No space left on device; the previous checkpoint is intact"


@pytest.mark.parametrize("fail_at", [2, 3], ids=["best-of-first-save", "latest-of-second-save"])
def test_full_disk_in_process_is_one_line_and_keeps_the_last_checkpoint(tmp_path, data, cli, monkeypatch, fail_at):
    """safetensors' writer fails with ENOSPC from its `fail_at`-th file on (saves: step 2 latest, best; step 4
    latest...): one line, exit 2, no temporary directory left, and the checkpoint of step 2 loads and resumes."""
    out = tmp_path / "run"
    real, calls = checkpoint.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) >= fail_at:
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=6")
    assert code == 2
    assert error_line(err) == full_disk_line(out)
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))
    monkeypatch.setattr(checkpoint, "save_file", real)
    assert assert_loads_samples_resumes(cli, out) == 2


@pytest.mark.parametrize("leave_kb", [12, 36], ids=["weights-do-not-fit", "training-state-does-not-fit"])
def test_full_disk_on_a_small_tmpfs(tmp_path, data, cli, leave_kb):
    """A real full disk: a run on a 1 MB tmpfs is filled to all but a few kB (metrics lines fit, a checkpoint does
    not: safetensors fails on the weights, or torch.save on state.pt). Resume fails at its checkpoint with one
    line and keeps step 4; --overwrite fails too and gives the old run back byte for byte; once space is freed
    the run resumes."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = good_run(cli, data, disk / "run")
        before = files_of(out)
        filler = fill(disk, leave=leave_kb * 1024)

        code, _, err = cli("train", "--out", out, "--resume", "--max_iters=8", "--quiet")
        assert code == 2 and error_line(err) == full_disk_line(out)
        assert checkpoint_step(out, "latest") == 4 and not list(out.glob(".tmp-*"))
        load_checkpoint(out, "latest")

        code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=4", "--overwrite", "--seed=7")
        assert code == 2 and error_line(err) == full_disk_line(out)
        after = files_of(out)
        assert {k: v for k, v in after.items() if k != "metrics.jsonl"} == \
               {k: v for k, v in before.items() if k != "metrics.jsonl"}
        assert [m["step"] for m in metrics(out)] == [0, 1, 2, 3, 4, 5, 6]  # the failed resume's, as after a crash

        filler.unlink()
        assert assert_loads_samples_resumes(cli, out) == 4
        assert [m["step"] for m in metrics(out)] == list(range(7))  # the resume replaced the unsaved steps' lines


# --- a read-only or vanished run directory ------------------------------------------------------------

def test_read_only_run_directory_by_mount(tmp_path, data, cli):
    """The run's file system is remounted read-only (root ignores chmod, so this is how root sees it): sampling
    works, resume and overwrite are one line each and change nothing; writable again, it resumes."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = good_run(cli, data, disk / "run")
        before = files_of(out)
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
        code, text, err = cli("sample", out, "--max_new_tokens", "5", "--seed", "0")
        assert code == 0 and text, err
        for args in (["--resume", "--max_iters=6"], ["--data", data, *FLAGS, "--overwrite"]):
            code, _, err = cli("train", "--out", out, *args)
            assert code == 2 and "Read-only file system" in error_line(err), err
        assert files_of(out) == before
        assert subprocess.run(["mount", "-o", "remount,rw", str(disk)], capture_output=True).returncode == 0
        assert assert_loads_samples_resumes(cli, out) == 4


def test_read_only_run_directory_by_chmod(tmp_path, data, cli):
    """The same with permissions, for users whom chmod binds: sampling works, resume is one line."""
    out = good_run(cli, data, tmp_path / "run")
    before = files_of(out)
    dirs = [out, *(p for p in out.rglob("*") if p.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    try:
        try:
            (out / "probe").write_text("x")
            pytest.skip("permissions are not enforced for this user (root): see the read-only mount test")
        except PermissionError:
            pass
        code, text, err = cli("sample", out, "--max_new_tokens", "5", "--seed", "0")
        assert code == 0 and text, err
        code, _, err = cli("train", "--out", out, "--resume", "--max_iters=6")
        assert code == 2 and "Permission denied" in error_line(err)
        assert files_of(out) == before
    finally:
        for d in dirs:
            d.chmod(0o755)
        (out / "probe").unlink(missing_ok=True)
    assert assert_loads_samples_resumes(cli, out) == 4


VANISHED = {"deleted": "was deleted or moved while training", "moved": "was deleted or moved while training",
            "lock-removed": "run.lock was removed or replaced while training"}


@pytest.mark.parametrize("fate", list(VANISHED))
def test_run_directory_deleted_or_moved_while_training(tmp_path, data, cli, monkeypatch, fate):
    """The run directory disappears (or its lock file does) after the evaluation of step 4, step 2 being saved:
    one line, exit 2, and nothing is recreated at the old place. A moved run resumes from its new place; a run
    whose lock file was removed resumes where it is."""
    import tinygpt.cli.progress as cli_module

    out, moved = tmp_path / "run", tmp_path / "moved"
    on_eval = cli_module.ProgressHooks.on_eval

    def vanish(self, m):
        on_eval(self, m)
        if m["step"] == 4:
            {"deleted": lambda: shutil.rmtree(out), "moved": lambda: out.rename(moved),
             "lock-removed": lambda: (out / "run.lock").unlink()}[fate]()

    monkeypatch.setattr(cli_module.ProgressHooks, "on_eval", vanish)
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=8")
    assert code == 2 and VANISHED[fate] in error_line(err)
    monkeypatch.setattr(cli_module.ProgressHooks, "on_eval", on_eval)
    if fate == "lock-removed":
        assert assert_loads_samples_resumes(cli, out) == 2
        return
    assert not out.exists()
    if fate == "moved":
        assert assert_loads_samples_resumes(cli, moved) == 2


# --- two writers ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_and_a_dead_writers_lock_is_recovered(tmp_path, data, cli):
    """While one process trains a run, `--resume`, `--overwrite` and a plain `train` on the same directory are
    each refused with one line naming its pid (exit 2), and it finishes undisturbed. A writer killed by SIGKILL
    leaves a lock that does not block the next --resume."""
    a_out, b_out = tmp_path / "a", tmp_path / "b"
    a = spawn(["train", "--data", data, "--out", a_out, *FLAGS, "--max_iters=300", "--eval_interval=300",
               "--log_interval=100"], tmp_path)
    b = spawn(["train", "--data", data, "--out", b_out, *FLAGS, "--max_iters=100000"], tmp_path)
    try:
        wait_until(lambda: (a_out / "metrics.jsonl").exists(), a)
        for args in (["--resume"], ["--data", data, *FLAGS, "--overwrite"], ["--data", data, *FLAGS]):
            t0 = time.monotonic()
            code, _, err = cli("train", "--out", a_out, *args)
            assert code == 2 and f"is being written by another tinygpt (process {a.pid} " in only_line(err), err
            assert time.monotonic() - t0 < 5
        assert a.poll() is None  # the refusals came while it was writing

        wait_until(lambda: (b_out / "latest").exists(), b)
        b.kill()
        b.communicate()
        assert assert_loads_samples_resumes(cli, b_out) >= 2

        _, err = a.communicate(timeout=120)
        assert a.returncode == 0, err
        assert metrics(a_out)[-1]["step"] == 300 and checkpoint_step(a_out) == 300
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert_loads_samples_resumes(cli, a_out)


# --- a diverging run -------------------------------------------------------------------------------

def no_nonfinite_weights(out: Path) -> None:
    for f in out.rglob("model.safetensors"):
        for name, t in load_file(str(f)).items():
            assert torch.isfinite(t).all(), (f, name)


def test_divergence_is_exit_1_and_one_line_and_saves_no_nan(tmp_path, data, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--max_iters=20", "--learning_rate=1e10")
    assert code == 1
    line = error_line(err)
    assert line.startswith("error: training diverged at step ") and "no checkpoint of this run was saved" in line
    assert not list(out.rglob("model.safetensors"))

    # a good run resumed with a learning rate that blows up: its last good checkpoint is kept, finite
    good = good_run(cli, data, tmp_path / "good", "--eval_interval=1")
    code, _, err = cli("train", "--out", good, "--resume", "--max_iters=30", "--learning_rate=1e10", "--quiet")
    assert code == 1
    line = error_line(err)
    assert "training diverged at step" in line and "the last good checkpoint (step 4) is kept" in line, line
    no_nonfinite_weights(good)
    assert checkpoint_step(good, "latest") == 4 and checkpoint_step(good, "best") <= 4
    assert assert_loads_samples_resumes(cli, good) == 4  # the resumed run keeps the checkpoint's learning rate


def test_nan_weight_decay_is_refused_before_any_work(tmp_path, data, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--weight_decay=nan")
    assert code == 2 and only_line(err) == "error: weight_decay must be a finite number, got nan"
    assert not out.exists()


# --- --overwrite keeps the old run until the new one has a checkpoint ----------------------------------

def test_overwrite_that_fails_before_its_first_checkpoint_gives_the_old_run_back(tmp_path, data, cli):
    from tinygpt.config import build_configs
    from tinygpt.data.text import TextData
    from tinygpt.tokenizers import CharTokenizer
    from tinygpt.training.loop import Hooks, train

    out = good_run(cli, data, tmp_path / "run")
    before = files_of(out)

    class Boom(Hooks):
        def on_start(self, info):
            raise RuntimeError("the new run failed at its start")

    text = data.read_text(encoding="utf-8")
    tok = CharTokenizer.train(text)
    model_cfg, train_cfg = build_configs({"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16,
                                          "batch_size": 4, "max_iters": 4, "device": "cpu"})
    model_cfg = model_cfg.with_vocab(tok.vocab_size)
    source = TextData.from_text(text, tok, 16)
    with pytest.raises(RuntimeError, match="failed at its start"):
        train(model_cfg, train_cfg, source, tok, out, overwrite=True, hooks=Boom())
    assert files_of(out) == before and not (out / ".replaced").exists()

    # the same through the CLI, with a run that diverges before its first checkpoint
    code, _, err = cli("train", "--data", data, "--out", out, *FLAGS, "--overwrite", "--learning_rate=1e10",
                       "--max_iters=20")
    assert code == 1 and "training diverged" in error_line(err)
    assert files_of(out) == before
    assert assert_loads_samples_resumes(cli, out) == 4


# --- resuming on other data, and contradicting options -----------------------------------------------

def test_resume_on_different_data_is_refused_unless_asked(tmp_path, data, cli):
    out = good_run(cli, data, tmp_path / "run")
    before = files_of(out)
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1), encoding="utf-8")
    code, _, err = cli("train", "--out", out, "--resume", "--data", other, "--max_iters=6")
    assert code == 2 and "is not the text this run was trained on" in only_line(err) and "--change_data" in err
    for args, words in ((["--resume", "--overwrite"], "contradict each other"),
                        (["--resume", "--tokenizer", "bpe"], "keeps its tokenizer")):
        code, _, err = cli("train", "--out", out, *args, "--max_iters=6")
        assert code == 2 and words in only_line(err)
    assert files_of(out) == before

    code, _, err = cli("train", "--out", out, "--resume", "--data", other, "--change_data", "--max_iters=6", "--quiet")
    assert code == 0 and "resuming on different data" in err
    assert json.loads((out / "latest" / "config.json").read_text())["data"] == str(other.resolve())
    assert assert_loads_samples_resumes(cli, out) == 6
