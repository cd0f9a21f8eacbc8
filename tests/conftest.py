"""Shared fixtures: a small text, tiny model configs, and a CLI runner. Everything runs on CPU in tmp_path."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


SPEAKERS = ["ROMEO", "JULIET", "NURSE", "FRIAR LAURENCE", "MERCUTIO", "First Citizen", "All"]
WORDS = ("the and I to of a my you that is in not with me it for be his your this but he have thou thee what "
         "so him will by all shall do no we are our if love good lord sir now more come king let how night "
         "speak hear go well death heaven fair sweet o here there day man upon doth hath art why yet 'tis o'er "
         "ne'er summer's").split()


def play_text(n_chars: int = 60_000, seed: int = 0) -> str:
    """A seeded text in the shape of a play (speakers, verse lines, punctuation, capitals): what the suite trains
    on. It is made here, so no test reads a file from outside the repository."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_chars:
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + rng.choice([",", ".", ";", "!", "?", ":", "."]))
        speech = f"{rng.choice(SPEAKERS)}:\n" + "\n".join(lines) + "\n\n"
        out.append(speech)
        size += len(speech)
    return "".join(out)[:n_chars]


@pytest.fixture(scope="session")
def play() -> str:
    return play_text()


@pytest.fixture
def text_file(tmp_path: Path, play: str) -> Path:
    p = tmp_path / "input.txt"
    p.write_text(play, encoding="utf-8")
    return p


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from tinygpt.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse errors and --help
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


TINY_FLAGS = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
              "--eval_iters=2", "--eval_interval=5", "--log_interval=1", "--device=cpu", "--quiet"]

DIALOGUE = "ROMEO:\nWhat say you, my lord?\n\nJULIET:\nNothing, good night.\n" * 40


def train_tiny(root: Path, name: str, max_iters: int, *flags: str) -> Path:
    """Train a tiny run on DIALOGUE (written once into root/input.txt) through the CLI; returns its directory."""
    from tinygpt.cli.main import main

    text = root / "input.txt"
    if not text.exists():
        text.write_text(DIALOGUE, encoding="utf-8")
    out = root / name
    assert main(["train", "--data", str(text), "--out", str(out), f"--max_iters={max_iters}", *flags, *TINY_FLAGS]) == 0
    return out


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory):
    """Nothing the suite makes lands in the user's cache (~/.cache/tinygpt), session fixtures' runs included: a
    test that looks at the cache sets its own TINYGPT_CACHE on top of this one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(autouse=True)
def _fp32_when_auto(monkeypatch):
    """`--dtype=auto` times fp32 against bf16 on CPUs with bf16 units, so two runs on such a CPU may differ in
    precision; in-process tests compare runs exactly, so they see a CPU without bf16 units (auto = fp32), as
    CI's does. tests/test_device.py sets it both ways itself."""
    import tinygpt.device

    monkeypatch.setattr(tinygpt.device, "cpu_has_fast_bf16", lambda: False)
