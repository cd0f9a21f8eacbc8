"""What the CLI does, checked against known answers: Ctrl-C and resume, resume after a crash between the
checkpoint renames, --tensorboard, beam search and stop strings in `sample`, --prompt_file, --num_samples,
and the token counts and fields of `eval --split`."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from tinygpt.cli.main import main
from tinygpt.config import DEFAULT_TEMPERATURE
from tinygpt.generation.generate import beam_search, generate_text
from tinygpt.training.run import load_checkpoint

FLAGS = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--max_iters=4",
         "--eval_interval=2", "--eval_iters=1", "--log_interval=1", "--device=cpu", "--quiet"]
SEPARATOR = "\n" + "-" * 40 + "\n"  # what `sample --num_samples N` prints between samples


def make_text(n_words: int = 900, seed: int = 0) -> str:
    """Seeded words with accents (two UTF-8 bytes), and one character ("Z") that only the last tenth has."""
    rng = random.Random(seed)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "café", "naïve", "whether", "tis"]
    text = "".join(rng.choice(words) + rng.choice([" ", " ", "\n", ", "]) for _ in range(n_words))
    return text + "Zed.\n"


TEXT = make_text()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path) -> Path:
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One small GPT run that the sampling tests only read."""
    root = tmp_path_factory.mktemp("sample_run")
    (root / "input.txt").write_text(TEXT, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_CACHE", str(root / "cache"))
        assert main(["train", "--data", str(root / "input.txt"), "--out", str(root / "run"), *FLAGS,
                     "--max_iters=30", "--eval_interval=10", "--learning_rate=3e-3"]) == 0
    return root / "run"


def metrics(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error")]


# --- interruption and resume ----------------------------------------------------------------------

@pytest.mark.slow
def test_sigint_saves_latest_exits_130_and_resume_completes(tmp_path, data, cli):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tinygpt", "train", "--data", str(data), "--out", str(out), *FLAGS,
           "--max_iters=100000", "--eval_interval=100000"]
    env = {**os.environ, "TINYGPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 90
        # wait for a logged training step (step >= 1): the loop, and its signal handler, are running
        while not (out / "metrics.jsonl").exists() or metrics(out)[-1]["step"] < 1:
            assert proc.poll() is None and time.time() < deadline, "training ended or never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    step = json.loads((out / "latest/config.json").read_text())["step"]
    assert step >= 1 and f"stopped by SIGINT at step {step}" in err and "--resume" in err
    assert metrics(out)[-1]["step"] == step  # the last logged step is the saved one

    code, _, err = cli("train", "--out", out, "--resume", f"--max_iters={step + 3}", "--quiet")
    assert code == 0, err
    assert f"resuming at step {step}" in err
    lines = metrics(out)
    assert [ln["step"] for ln in lines] == list(range(step + 4))  # every step once, up to max_iters
    assert json.loads((out / "latest/config.json").read_text())["step"] == step + 3


def test_resume_from_old_latest_after_a_crash_between_renames(tmp_path, data, cli):
    """The crash left .old-latest/ (the previous checkpoint) and no latest/: --resume continues from it, exactly
    as a run that was never interrupted."""
    flags = [*FLAGS, "--lr_decay_iters=10"]  # the schedule must not depend on max_iters
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert cli("train", "--data", data, "--out", straight, *flags, "--max_iters=4")[0] == 0
    assert cli("train", "--data", data, "--out", crashed, *flags, "--max_iters=2")[0] == 0
    (crashed / "latest").rename(crashed / ".old-latest")

    code, _, err = cli("train", "--out", crashed, "--resume", "--max_iters=4", "--quiet")
    assert code == 0, err
    assert "resuming at step 2" in err
    assert metrics(crashed)[-1]["step"] == 4
    assert json.loads((crashed / "latest/config.json").read_text())["step"] == 4
    assert not (crashed / ".old-latest").exists()  # the next save replaced it
    assert [m["train_loss"] for m in metrics(crashed)] == [m["train_loss"] for m in metrics(straight)]
    a, _, _ = load_checkpoint(straight, "latest")
    b, _, _ = load_checkpoint(crashed, "latest")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


# --- TensorBoard -----------------------------------------------------------------------------------

def test_tensorboard_missing_is_a_one_line_error_and_creates_nothing(tmp_path, data, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", data, "--out", out, "--tensorboard", *FLAGS)
    assert code == 2
    assert error_lines(err) == ["error: --tensorboard needs TensorBoard: pip install 'tinygpt[tensorboard]'"]
    assert not out.exists()


class FakeWriter:
    instances: list["FakeWriter"] = []

    def __init__(self, log_dir: str):
        self.log_dir, self.scalars, self.closed = log_dir, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def close(self) -> None:
        self.closed = True

    def series(self, tag: str) -> list[tuple[int, float]]:
        return [(s, v) for t, v, s in self.scalars if t == tag]


def test_tensorboard_receives_the_logged_losses(tmp_path, data, cli, monkeypatch):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    FakeWriter.instances = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    out = tmp_path / "run"
    code, _, err = cli("train", "--data", data, "--out", out, "--tensorboard", *FLAGS)
    assert code == 0, err
    (writer,) = FakeWriter.instances
    assert writer.log_dir == str(out / "tensorboard") and writer.closed
    lines = metrics(out)
    train_steps = [m for m in lines if m["step"] >= 1]  # log_interval=1: every step; step 0 is an evaluation only
    assert writer.series("train_loss") == [(m["step"], m["train_loss"]) for m in train_steps]
    assert [s for s, _ in writer.series("train_loss")] == [1, 2, 3, 4]
    assert writer.series("val_loss") == [(m["step"], m["val_loss"]) for m in lines if "val_loss" in m]
    assert [s for s, _ in writer.series("val_loss")] == [0, 2, 4]
    assert [s for s, _ in writer.series("eval_train_loss")] == [0, 2, 4]


# --- sample ----------------------------------------------------------------------------------------

def test_beam_search_from_the_cli_equals_the_library(run, cli):
    model, tok, _ = load_checkpoint(run)
    prompt = "to be"
    beams = beam_search(model, tok.encode(prompt), 12, num_beams=3)
    generated = tok.decode(beams[0].tokens)
    assert len(generated) == 12
    code, out, err = cli("sample", run, "--prompt", prompt, "--num_beams", "3", "--max_new_tokens", "12")
    assert code == 0, err
    assert out == prompt + generated + "\n"

    stop = generated[4:6]
    code, out, _ = cli("sample", run, "--prompt", prompt, "--num_beams", "3", "--max_new_tokens", "12",
                       "--stop", stop)
    assert out == prompt + generated[:generated.index(stop)] + "\n"
    assert stop not in out[len(prompt):]
    code, out, _ = cli("sample", run, "--prompt", prompt, "--num_beams", "3", "--max_new_tokens", "12",
                       "--stop", "no such text")
    assert out == prompt + generated + "\n"


def test_prompt_file_equals_the_same_prompt_given_inline(run, cli, tmp_path):
    for content in ["to be or\nnot", "to be or\nnot\n"]:  # $(cat F) would drop the second one's newline
        f = tmp_path / "prompt.txt"
        f.write_text(content, encoding="utf-8")
        for flags in (["--greedy"], ["--seed", "3"]):
            code, from_file, err = cli("sample", run, "--prompt_file", f, "--max_new_tokens", "10", *flags)
            assert code == 0, err
            _, inline, _ = cli("sample", run, "--prompt", content, "--max_new_tokens", "10", *flags)
            assert from_file == inline
            assert from_file.startswith(content) and len(from_file) == len(content) + 10 + 1


def test_num_samples_prints_each_seeded_sample_once_separated(run, cli):
    code, out, err = cli("sample", run, "--prompt", "to", "--num_samples", "3", "--seed", "5",
                         "--max_new_tokens", "15")
    assert code == 0, err
    samples = out.split(SEPARATOR)
    model, tok, _ = load_checkpoint(run)
    expected = ["to" + "".join(generate_text(model, tok, "to", 15, temperature=DEFAULT_TEMPERATURE, seed=5 + i))
                for i in range(3)]
    assert samples == [s + "\n" for s in expected]  # sample i is drawn with seed 5 + i
    assert len(set(expected)) == 3
    assert cli("sample", run, "--prompt", "to", "--num_samples", "3", "--seed", "5", "--max_new_tokens", "15")[1] == out


def test_num_samples_are_generated_as_one_batch(run, cli, monkeypatch):
    """Three samples of 15 tokens take the forward passes of one: the prompt's, then one per new token."""
    from tinygpt.cli import sample as sample_cli

    batches = []
    load = sample_cli.load_checkpoint

    def counting_load(*args, **kwargs):
        model, tok, cfg = load(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: batches.append(inputs[0].shape[0]))
        return model, tok, cfg

    monkeypatch.setattr(sample_cli, "load_checkpoint", counting_load)
    code, out, err = cli("sample", run, "--prompt", "to", "--num_samples", "3", "--seed", "5",
                         "--max_new_tokens", "15")
    assert code == 0, err
    assert len(out.split(SEPARATOR)) == 3
    assert set(batches) == {3} and len(batches) <= 16


# --- eval --split ----------------------------------------------------------------------------------

def bigram_losses(model, ids: list[int]) -> torch.Tensor:
    """Per-token loss of a bigram model, one pair at a time: -log softmax(table[prev])[next]."""
    table = model.wte.weight.detach()
    logp = torch.log_softmax(table[torch.tensor(ids[:-1])], dim=-1)
    return -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


@pytest.mark.filterwarnings("ignore:.*not in the vocabulary")
def test_eval_splits_count_every_token_once_and_report_known_fields(tmp_path, data, cli):
    out = tmp_path / "run"
    assert cli("train", "--data", data, "--out", out, *FLAGS, "--model=bigram")[0] == 0
    res = {}
    for split in ("train", "val", "all"):
        code, text, err = cli("eval", out, "--split", split, "--json", "--batch_size", "3")
        assert code == 0, err
        res[split] = json.loads(text)

    L = len(TEXT)
    n = int(L * 0.9)  # the training split: the first 90 % of the characters (val_fraction 0.1)
    parts = {"train": TEXT[:n], "val": TEXT[n:], "all": TEXT}
    # one token per character; the first token of each part is context only
    assert {s: r["tokens"] for s, r in res.items()} == {"train": n - 1, "val": L - n - 1, "all": L - 1}
    assert res["train"]["tokens"] + res["val"]["tokens"] == res["all"]["tokens"] - 1  # the pair across the cut

    model, tok, _ = load_checkpoint(out)
    per_token = {s: bigram_losses(model, tok.encode(p)) for s, p in parts.items()}
    for split, r in res.items():
        loss = per_token[split].mean().item()
        predicted = parts[split][1:]
        assert set(r) == {"checkpoint", "data", "split", "tokens", "loss", "perplexity", "bits_per_char",
                          "bits_per_byte", "unknown_chars"}
        assert r["checkpoint"] == str(out / "best") and r["data"] == str(data.resolve()) and r["split"] == split
        assert r["loss"] == pytest.approx(loss, rel=1e-5)
        assert r["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
        assert r["bits_per_char"] == pytest.approx(loss * len(predicted) / len(predicted) / math.log(2), rel=1e-5)
        assert r["bits_per_byte"] == pytest.approx(
            loss * len(predicted) / len(predicted.encode("utf-8")) / math.log(2), rel=1e-5)
        assert r["bits_per_byte"] < r["bits_per_char"]  # accented letters are two bytes
    # "Z" appears only in the validation text, so the training-text tokenizer does not know it
    assert (res["train"]["unknown_chars"], res["val"]["unknown_chars"], res["all"]["unknown_chars"]) == \
        (False, True, True)
    # a bigram's loss depends only on each pair, so the whole text is the two splits plus the pair across the cut
    across = bigram_losses(model, tok.encode(TEXT[n - 1:n + 1])).item()
    assert res["all"]["loss"] * (L - 1) == pytest.approx(
        res["train"]["loss"] * (n - 1) + res["val"]["loss"] * (L - n - 1) + across, rel=1e-5)
