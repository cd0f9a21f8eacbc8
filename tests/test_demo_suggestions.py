"""The demos' "Next, try" suggestions: each one parses with the real argument parser, the Shakespeare step is the
README's tour command, and a step that needs an extra the README's set-up lacks names that extra."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from tinygpt.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]


def suggested(text: str) -> list[str]:
    """The commands after "Next, try:" in a demo's output, comments and a leading `echo ... |` left out."""
    block = text.split("Next, try:\n", 1)[1]
    commands = []
    for line in block.splitlines():
        if not line.strip().startswith(("tinygpt ", "echo ")):
            break
        command = line.split("  #", 1)[0].strip()
        commands.append(command.split("|", 1)[1].strip() if command.startswith("echo ") else command)
    return commands


def assert_parses(command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "tinygpt", command
    args, extras = build_parser().parse_known_args(argv[1:])
    assert not extras and callable(args.func), command


def test_the_calculator_demos_suggestions_parse_and_follow_the_readme(monkeypatch):
    from tinygpt.cli.demo import SHAKESPEARE_TOUR, next_steps

    steps = next_steps(Path("runs/calculator"))
    for command, _ in steps:
        assert_parses(command)
    tour = [ln.split("#")[0].strip() for ln in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if re.match(r"\s*tinygpt train --data shakespeare\b", ln)]
    assert SHAKESPEARE_TOUR in tour  # the preset the README's tour trains with, not the defaults
    assert any(command == SHAKESPEARE_TOUR for command, _ in steps)


@pytest.mark.parametrize("installed", [True, False])
def test_plotting_names_its_extra_when_matplotlib_is_missing(monkeypatch, installed):
    import tinygpt.cli.demo as demo

    real = importlib.util.find_spec
    monkeypatch.setattr(demo.importlib.util, "find_spec",
                        lambda name, *a: (real("json") if installed else None) if name == "matplotlib" else real(name))
    (what,) = [w for c, w in demo.next_steps(Path("runs/calculator")) if c.startswith("tinygpt plot")]
    assert ("pip install 'tinygpt[plot]'" in what) == (not installed)


def test_every_extra_a_message_names_exists():
    """Every `pip install 'tinygpt[X]'` the package prints names an extra that pyproject.toml declares."""
    section = (ROOT / "pyproject.toml").read_text(encoding="utf-8").split("[project.optional-dependencies]")[1]
    extras = set(re.findall(r"^(\w+) = \[", section.split("\n[", 1)[0], re.M))
    assert {"plot", "viz", "web"} <= extras
    named = {m for f in (ROOT / "tinygpt").rglob("*.py")
             for m in re.findall(r"tinygpt\[(\w+)\]", f.read_text(encoding="utf-8"))}
    assert named and named <= extras, named - extras
