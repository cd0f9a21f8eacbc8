"""Run directories: which checkpoint a name means, the create/resume/overwrite policy, the single-writer lock,
recovery of what a killed writer left, metrics, and the memory check made before a model is built."""
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tinygpt import device
from tinygpt.training.checkpoint import save_checkpoint
from tinygpt.config import ModelConfig, TrainConfig, build_configs
from tinygpt.device import autocast
from tinygpt.training.memory import check_fits, count_parameters, estimate_training_memory
from tinygpt.training.optim import configure_optimizer
from tinygpt.models import attention, build_model, count_params
from tinygpt.training.run import REPLACED, REPLACING, Run, RunError, kind_of
from tinygpt.tokenizers import CharTokenizer

TOK = CharTokenizer.train("abcdef")


def _ckpt(path, step, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=TOK.vocab_size))
    save_checkpoint(path, model, TOK, {"step": step}, {"step": step})
    return model


def _fake_run(path, step=4):
    _ckpt(path / "latest", step)
    _ckpt(path / "best", step)
    (path / "metrics.jsonl").write_text(json.dumps({"step": step}) + "\n")


def test_checkpoint_names_resolve_with_fallbacks(tmp_path):
    _ckpt(tmp_path / "latest", 2)
    run = Run(tmp_path)
    assert run.checkpoint("best") == tmp_path / "latest"  # no best/ yet: the other one
    _ckpt(tmp_path / "best", 1)
    assert run.checkpoint("best") == tmp_path / "best" and run.checkpoint("latest") == tmp_path / "latest"
    (tmp_path / "latest").rename(tmp_path / ".old-latest")  # a crash between the two renames of a swap
    assert run.checkpoint("latest") == tmp_path / ".old-latest"
    assert Run(tmp_path / "best").checkpoint("latest") == tmp_path / "best"  # a checkpoint given directly
    with pytest.raises(RunError, match="unknown checkpoint"):
        run.checkpoint("newest")
    with pytest.raises(RunError, match="no such run"):
        Run(tmp_path / "nope").checkpoint()


def test_kind_comes_from_the_task_entry():
    assert kind_of({"model": {}}) == "text"
    assert kind_of({"model": {}, "task": {"name": "calculator"}}) == "task"
    assert kind_of({"model": {}, "task": None}) == "text"


def test_start_policy(tmp_path):
    with pytest.raises(RunError, match="nothing to resume"):
        Run(tmp_path / "new").start(resume=True)
    assert not (tmp_path / "new").exists()  # a refusal creates nothing
    with pytest.raises(RunError, match="contradict"):
        Run(tmp_path / "new").start(resume=True, overwrite=True)
    _fake_run(tmp_path / "old")
    with pytest.raises(RunError, match="already holds a run"):
        Run(tmp_path / "old").start()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="not a directory"):
        Run(tmp_path / "file").start()


def test_overwrite_keeps_the_old_run_until_the_new_one_saves(tmp_path):
    out = tmp_path / "run"
    _fake_run(out)
    before = (out / "latest/model.safetensors").read_bytes()
    run = Run(out).start(overwrite=True)
    assert not (out / "latest").exists() and (out / REPLACED / "latest/model.safetensors").read_bytes() == before
    assert Run(out).checkpoint("latest") == out / REPLACED / "latest"  # readers still find the old run
    run.undo_unsaved_overwrite()  # the new run failed before saving anything
    run.close()
    assert (out / "latest/model.safetensors").read_bytes() == before and not (out / REPLACED).exists()

    run = Run(out).start(overwrite=True)
    model = _ckpt(tmp_path / "scratch", 9, seed=1)
    run.save(model, TOK, {"step": 9}, {"step": 9}, best=True)
    run.close()
    assert not (out / REPLACED).exists() and json.loads((out / "latest/config.json").read_text())["step"] == 9
    assert not (out / "metrics.jsonl").exists()  # the old run's metrics went with it


def test_recovery_of_an_interrupted_overwrite(tmp_path):
    out = tmp_path / "run"
    _fake_run(out)
    before = (out / "best/model.safetensors").read_bytes()
    # killed while moving the old run aside: part of it in .replacing/
    (out / REPLACING).mkdir()
    os.replace(out / "best", out / REPLACING / "best")
    with Run(out).start(resume=True):
        pass
    assert (out / "best/model.safetensors").read_bytes() == before and not (out / REPLACING).exists()
    # killed after moving it aside, before the new run saved: the old run comes back
    run = Run(out).start(overwrite=True)
    os.close(run._lock_fd)  # the process dies: its lock goes with it
    run._lock_fd = None
    (out / "metrics.jsonl").write_text('{"step": 0}\n')  # the new run's first line
    with Run(out).start(resume=True):
        pass
    assert (out / "best/model.safetensors").read_bytes() == before
    assert json.loads((out / "metrics.jsonl").read_text())["step"] == 4


@pytest.mark.slow
def test_one_writer_at_a_time_and_a_dead_writer_does_not_block(tmp_path):
    out = tmp_path / "run"
    _fake_run(out)
    first = Run(out).start(resume=True)
    with pytest.raises(RunError, match=rf"being written by another tinygpt \(process {os.getpid()} on "):
        Run(out).start(resume=True)
    first.close()
    Run(out).start(resume=True).close()  # released: the next writer gets it
    # a writer killed with SIGKILL: the kernel releases its lock
    script = textwrap.dedent(f"""
        import os, signal
        from tinygpt.training.run import Run
        Run({str(out)!r}).start(resume=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    Run(out).start(resume=True).close()


def test_metrics_survive_a_line_cut_short(tmp_path):
    run = Run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "train_lo')
    assert [m["step"] for m in run.metrics()] == [1, 2]
    run.truncate_metrics(1)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n'
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(RunError, match="line 2 is not valid JSON"):
        run.metrics()


def _peak_training_bytes(model_cfg, train_cfg, dtype, tmp_path) -> int:
    """Bytes allocated at the peak of training from nothing on CPU: the model built, its AdamW, two steps (the
    second with AdamW's state), as the CPU allocator reports each allocation and free to torch.profiler."""
    torch.manual_seed(0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        model = build_model(model_cfg).train()
        optimizer = configure_optimizer(model, train_cfg, "cpu")
        x, y = torch.randint(0, model_cfg.vocab_size, (2, train_cfg.batch_size, model_cfg.block_size))
        for _ in range(2):
            with autocast("cpu", dtype):
                _, loss = model(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    prof.export_chrome_trace(str(tmp_path / "trace.json"))
    events = sorted((e for e in json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
                     if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    return max(itertools.accumulate(e["args"]["Bytes"] for e in events))


LONG = dict(n_layer=1, n_head=2, n_embd=16, block_size=512)  # few dims, many positions: attention's weights dominate


@pytest.mark.parametrize("overrides, dtype, path", [
    ({}, "float32", "fused"),
    ({}, "bfloat16", "written out"),                  # CPU bf16 up to 512 positions: written out
    ({"dropout": 0.1}, "float32", "written out"),     # CPU dropout: written out
    (LONG, "float32", "fused"),
    (LONG, "bfloat16", "written out"),
    ({"norm": "rmsnorm", "activation": "swiglu", "position": "rotary", "qk_norm": True, "bias": False,
      "block_size": 128, "vocab_size": 300}, "bfloat16", "written out"),
    ({"model": "multi_head", "block_size": 128}, "float32", "written out"),
], ids=["fused", "bf16", "dropout", "long-fused", "long-bf16", "modern-bf16", "multi_head"])
def test_memory_estimate_is_within_a_quarter_of_the_measured_peak(overrides, dtype, path, tmp_path, monkeypatch):
    """The estimate against the allocator's own peak of a real training step, for each attention path the model
    takes on CPU: the written-out path keeps every head's T x T weights, the fused kernel none."""
    model_cfg = ModelConfig(**{**dict(n_layer=2, n_head=4, n_embd=32, block_size=256, vocab_size=50), **overrides})
    train_cfg = TrainConfig(batch_size=4, dtype=dtype)
    p = count_params(build_model(model_cfg))
    est = estimate_training_memory(model_cfg, train_cfg, device="cpu")
    assert count_parameters(model_cfg) == est.params == p  # built on the meta device: no memory used
    assert (est.weights, est.gradients, est.optimizer, est.attention) == (4 * p, 4 * p, 8 * p, path)
    taken = []  # the path the model takes: it asks the same rule
    rule = attention.written_out_is_faster
    monkeypatch.setattr(attention, "written_out_is_faster", lambda q, p: taken.append(rule(q, p)) or taken[-1])
    measured = _peak_training_bytes(model_cfg, train_cfg, getattr(torch, dtype), tmp_path)
    assert set(taken) <= {path == "written out"}
    assert 0.75 < est.total / measured < 1.25, f"estimated {est.total:,} bytes, measured {measured:,}"


def test_auto_precision_is_estimated_at_the_larger_of_those_the_cpu_probe_times(monkeypatch):
    """`auto` on a CPU with bf16 units trains a step in fp32 and in bf16 before choosing: both must fit."""
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=256, vocab_size=50)
    est = {d: estimate_training_memory(cfg, TrainConfig(batch_size=4, dtype=d)) for d in ("float32", "bfloat16")}
    assert (est["float32"].attention, est["bfloat16"].attention) == ("fused", "written out")
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert estimate_training_memory(cfg, TrainConfig(batch_size=4, dtype="auto")) == max(
        est.values(), key=lambda e: e.total)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert estimate_training_memory(cfg, TrainConfig(batch_size=4, dtype="auto")) == est["float32"]


def test_a_model_too_big_for_memory_is_refused_before_it_is_built(monkeypatch):
    import tinygpt.training.memory as memory
    model_cfg, train_cfg = build_configs({"n_embd": 64, "n_head": 2}, vocab_size=65)
    monkeypatch.setattr(memory, "available_memory", lambda device: 10**6)
    with pytest.raises(MemoryError, match=r"needs about .* GB .* but only 0\.0 GB is available on cpu"):
        check_fits(model_cfg, train_cfg, "cpu")
    monkeypatch.setattr(memory, "available_memory", lambda device: None)  # unknown: no refusal
    assert check_fits(model_cfg, train_cfg, "cpu").params > 0
    huge, _ = build_configs({"n_embd": 10**9, "n_head": 1}, vocab_size=65)
    with pytest.raises(MemoryError, match="too large for any machine"):
        check_fits(huge, train_cfg, "cpu")


def test_a_crash_between_saving_latest_and_best_is_repaired_on_resume(tmp_path):
    """latest/ was saved as the new best, then the process died before best/ was written: resuming finishes
    that save, so best/ never keeps worse weights than the run's recorded best."""
    import shutil

    from tinygpt.data.text import TextData
    from tinygpt.training.loop import train

    text = "the cat sat on the mat. " * 100
    tok = CharTokenizer.train(text)
    model_cfg, cfg = build_configs(dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=4,
                                        eval_interval=2, eval_iters=2, device="cpu", dtype="float32",
                                        learning_rate=1e-2), vocab_size=tok.vocab_size)
    data = TextData.from_text(text, tok, 16)
    out = tmp_path / "run"
    train(model_cfg, cfg, data, tok, out)
    state = torch.load(out / "latest/state.pt", weights_only=True)
    latest = json.loads((out / "latest/config.json").read_text())
    assert latest["val_loss"] == state["best_val_loss"]  # the last evaluation was the best so far
    shutil.rmtree(out / "best")
    _ckpt(out / "best", 2)  # what a crash leaves: best/ from an earlier, worse step
    (out / "best/config.json").write_text(json.dumps({**json.loads((out / "best/config.json").read_text()),
                                                      "val_loss": latest["val_loss"] + 1.0}))
    assert Run(out).stale_best(state)
    cfg.max_iters = 5
    train(model_cfg, cfg, data, tok, out, resume=True)
    best = json.loads((out / "best/config.json").read_text())
    assert best["step"] in (4, 5) and best["val_loss"] <= latest["val_loss"]


def test_a_python_caller_is_told_the_keyword_arguments_and_the_command_line_its_flags(tmp_path, cli):
    """The Python guide's example run twice: the second call is refused in Python's words (resume=True,
    overwrite=True), never in flags; the same refusal from `tinygpt train` names --resume and --overwrite."""
    import tinygpt
    from tinygpt.cli.args import error_text
    text = "the cat sat on the mat. " * 30
    tokenizer = CharTokenizer.train(text)
    model_cfg, train_cfg = tinygpt.build_configs(
        {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8, "max_iters": 1, "eval_interval": 1,
         "eval_iters": 1, "batch_size": 2, "device": "cpu", "dtype": "float32"}, vocab_size=tokenizer.vocab_size)
    data = tinygpt.TextData.from_text(text, tokenizer, model_cfg.block_size)
    tinygpt.train(model_cfg, train_cfg, data, tokenizer, tmp_path / "cat")
    with pytest.raises(RunError) as e:
        tinygpt.train(model_cfg, train_cfg, data, tokenizer, tmp_path / "cat")
    assert str(e.value) == (f"{tmp_path / 'cat'} already holds a run; use resume=True to continue it or "
                            f"overwrite=True to replace it")
    assert error_text(e.value).endswith("use --resume to continue it or --overwrite to replace it")
    with pytest.raises(RunError, match=r"^resume=True and overwrite=True contradict each other"):
        tinygpt.train(model_cfg, train_cfg, data, tokenizer, tmp_path / "cat", resume=True, overwrite=True)
    (tmp_path / "t.txt").write_text(text)
    code, _, err = cli("train", "--data", tmp_path / "t.txt", "--out", tmp_path / "cat", "--max_iters=1")
    assert code == 2 and "use --resume to continue it or --overwrite to replace it" in err


def test_reading_a_run_still_training_says_that_training_is_under_way(tmp_path, cli):
    """`sample` on a run whose training has not saved its first checkpoint yet: it says the run is being trained
    (and by which process), not only that there is no checkpoint; once the writer is gone, what is left says so."""
    out = tmp_path / "r"
    writer = Run(out).start()
    try:
        code, _, err = cli("sample", out, "--device=cpu")
        assert code == 2 and err.count("\n") == 1, err
        assert f"{out} holds no checkpoint yet: it is being trained (process {os.getpid()} on " in err
        assert "the first checkpoint is saved at its first evaluation" in err
        writer.log({"step": 0, "val_loss": 4.0})
    finally:
        writer.close()
    code, _, err = cli("sample", out, "--device=cpu")
    assert code == 2 and f"{out} holds no checkpoint: its training stopped before saving one" in err
