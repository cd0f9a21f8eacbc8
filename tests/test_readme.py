"""The README's Python example runs as written and does what it says."""
import contextlib
import io
import re
from pathlib import Path

import pytest

import tinygpt

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text(encoding="utf-8").split("## Use it from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_public_api_names():
    for name in ("load_tokenizer", "load_checkpoint", "train", "GPT", "Decoder", "Run", "ModelConfig",
                 "TrainConfig", "generate", "generate_text"):
        assert name in tinygpt.__all__ and getattr(tinygpt, name) is not None
    assert callable(tinygpt.train) and tinygpt.train.__module__ == "tinygpt.training.loop"  # the function, not the module


@pytest.mark.slow
def test_readme_python_example_trains_and_samples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), "README.md", "exec"), {})
    loss_line, sample = out.getvalue().splitlines()[:2]
    loss = float(re.match(r"val loss ([0-9.]+) after 150 steps", loss_line).group(1))
    assert loss < 0.5  # a 24-character cycle: far below uniform guessing over 11 characters (2.4 nats)
    assert sample == ("the cat sat on the mat. " * 3)[7:47]  # greedy: the 40 characters that follow "the cat"
    run = tinygpt.Run(tmp_path / "runs/cat")
    assert run.kind() == "text" and run.metrics()[-1]["step"] == 150
