import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinygpt.training.run import load_checkpoint
from tinygpt.config import TrainConfig, build_configs
from tinygpt.data.text import TextData
from tinygpt.tokenizers import CharTokenizer
from tinygpt.training.optim import lr_at
from tinygpt.training.run import RunError as RunDirError, read_metrics
from tinygpt.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


def test_lr_schedule_known_values():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=1100, max_iters=2000)
    assert lr_at(0, cfg) == pytest.approx(1e-3 / 101)
    assert lr_at(99, cfg) == pytest.approx(1e-3 * 100 / 101)
    assert lr_at(100, cfg) == pytest.approx(1e-3)
    assert lr_at(600, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway through the cosine
    assert lr_at(1100, cfg) == pytest.approx(1e-4) and lr_at(1999, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(100, 1100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay
    assert lr_at(500, TrainConfig(decay_lr=False, learning_rate=3e-4, min_lr=0)) == 3e-4


def _setup(text, **kw):
    overrides = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_iters=2,
                     eval_interval=5, log_interval=1, device="cpu", dropout=0.1, lr_decay_iters=10,
                     warmup_iters=2)
    overrides.update(kw)
    model_cfg, cfg = build_configs(overrides)
    tok = CharTokenizer.train(text)
    model_cfg.vocab_size = tok.vocab_size
    return model_cfg, cfg, TextData.from_text(text, tok, model_cfg.block_size), tok


def test_resume_is_bit_exact(tmp_path, play):
    """10 steps straight == 5 steps + resume + 5 steps: same losses and weights, bit for bit (dropout on)."""
    text = play[:20_000]
    m, c, data, tok = _setup(text, max_iters=10, gradient_accumulation_steps=2)
    train(m, c, data, tok, tmp_path / "straight")
    m, c, data, tok = _setup(text, max_iters=5, gradient_accumulation_steps=2)
    train(m, c, data, tok, tmp_path / "split")
    m, c, data, tok = _setup(text, max_iters=10, gradient_accumulation_steps=2)
    res = train(m, c, data, tok, tmp_path / "split", resume=True)
    assert res.step == 10
    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [x["step"] for x in a] == [x["step"] for x in b] == list(range(11))
    assert [x["train_loss"] for x in a] == [x["train_loss"] for x in b]
    assert [x.get("val_loss") for x in a] == [x.get("val_loss") for x in b]
    wa, _, _ = load_checkpoint(tmp_path / "straight", "latest")
    wb, _, _ = load_checkpoint(tmp_path / "split", "latest")
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.slow
def test_metrics_and_checkpoints(tmp_path, play):
    m, c, data, tok = _setup(play[:20_000], max_iters=12)
    res = train(m, c, data, tok, tmp_path / "run", meta={"data": "x.txt"})
    lines = read_metrics(tmp_path / "run")
    for ln in lines:
        assert {"step", "train_loss", "lr", "tokens_per_sec", "elapsed_s"} <= set(ln)
    evals = [ln["step"] for ln in lines if "val_loss" in ln]
    assert evals == [0, 5, 10, 12]
    assert lines[-1]["step"] == 12 and lines[1]["tokens_per_sec"] > 0
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"latest", "best", "metrics.jsonl"}
    latest = json.loads((tmp_path / "run/latest/config.json").read_text())
    assert latest["step"] == 12 and latest["data"] == "x.txt" and latest["train"]["max_iters"] == 12
    assert set(os.listdir(tmp_path / "run/latest")) == {"config.json", "model.safetensors", "tokenizer.json", "state.pt"}
    best = json.loads((tmp_path / "run/best/config.json").read_text())
    assert best["val_loss"] == pytest.approx(res.best_val_loss)
    assert lines[-1]["val_loss"] < lines[0]["val_loss"]  # it learned something
    # initial loss is close to uniform over the vocabulary
    assert abs(lines[0]["val_loss"] - math.log(tok.vocab_size)) < 0.3


@pytest.mark.slow
def test_stop_when_ends_training_at_an_evaluation(tmp_path, play):
    seen = []

    def stop_when(model, metrics):
        seen.append((metrics["step"], model.training))
        return "good enough" if metrics["step"] >= 10 else None

    m, c, data, tok = _setup(play[:20_000], max_iters=30)
    res = train(m, c, data, tok, tmp_path / "run", stop_when=stop_when)
    assert res.step == 10 and res.finished_early == "good enough" and res.stopped_by is None
    assert seen == [(5, False), (10, False)]  # asked after each evaluation, with the model in eval mode
    lines = read_metrics(tmp_path / "run")
    assert lines[-1]["step"] == 10 and lines[-1]["finished_early"] == "good enough"
    assert json.loads((tmp_path / "run/latest/config.json").read_text())["step"] == 10


@pytest.mark.slow
def test_run_dir_is_protected(tmp_path, play):
    m, c, data, tok = _setup(play[:20_000], max_iters=2)
    train(m, c, data, tok, tmp_path / "run")
    before = (tmp_path / "run/latest/model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        train(m, c, data, tok, tmp_path / "run")
    assert (tmp_path / "run/latest/model.safetensors").read_bytes() == before
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(m, c, data, tok, tmp_path / "empty", resume=True)
    train(m, c, data, tok, tmp_path / "run", overwrite=True)


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path, text_file):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(text_file), "--out", str(out),
           "--n_layer=1", "--n_head=1", "--n_embd=16", "--block_size=16", "--batch_size=2", "--max_iters=100000",
           "--eval_interval=100000", "--eval_iters=1", "--device=cpu", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "--resume" in err
    cfg = json.loads((out / "latest/config.json").read_text())
    assert cfg["step"] >= 2


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, text_file):
    """torchrun with 2 CPU processes (gloo) through the CLI, which starts and leaves the process group itself:
    trains, syncs, and writes one checkpoint. That DDP and FSDP take one process's steps: tests/test_distributed.py."""
    out = tmp_path / "ddp"
    from distributed_runs import torchrun
    stderr = torchrun(["-m", "tinygpt", "train", "--data", str(text_file), "--out", str(out),
                       "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2",
                       "--max_iters=4", "--eval_interval=2", "--eval_iters=1", "--device=cpu", "--quiet"], tmp_path)
    state = torch.load(out / "latest/state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["step"] == 4
    lines = read_metrics(out)
    assert lines[-1]["step"] == 4
    # tokens per step count both processes: 2 ranks x 2 rows x 16 positions
    assert "64 tokens per step" in stderr
