"""Shared fixtures: a small text, tiny model configs, and a CLI runner. Everything runs on CPU in tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    if SHAKESPEARE.exists():
        return SHAKESPEARE.read_text(encoding="utf-8")[:60_000]
    # a fallback so the suite still runs outside the usual layout
    return ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 800)


@pytest.fixture
def text_file(tmp_path: Path, shakespeare_text: str) -> Path:
    p = tmp_path / "input.txt"
    p.write_text(shakespeare_text, encoding="utf-8")
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


@pytest.fixture(autouse=True)
def _fp32_when_auto(monkeypatch):
    """`--dtype=auto` times fp32 against bf16 on CPUs with bf16 units, so two runs on such a CPU may differ in
    precision; in-process tests compare runs exactly, so they see a CPU without bf16 units (auto = fp32), as
    CI's does. tests/test_device.py sets it both ways itself."""
    import tinygpt.device

    monkeypatch.setattr(tinygpt.device, "cpu_has_fast_bf16", lambda: False)
