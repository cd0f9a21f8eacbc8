"""The library names settings as the Python API calls them; only tinygpt.cli spells them as flags.

A library text that names a setting is a config.SettingText: `str()` of it says "chat_loss", the command line
asks it for "--chat_loss". The source scan below keeps flag text out of the library's strings.

What the scan looks at: every string in tinygpt/ outside tinygpt/cli/ (error messages, notes, help lines, the
pieces of f-strings), except docstrings, which are read by people browsing the code and may describe the
command line ("`tinygpt train --data` prepares..."); comments are not strings. A flag is one of the command
line's own options (collected from its parser), so another program's options quoted in a message (pip's
--no-deps) are not flags of ours.
"""
from __future__ import annotations

import argparse
import ast
import pickle
import re
from pathlib import Path

import pytest

from tinygpt.cli.args import as_flags, error_text
from tinygpt.cli.main import build_parser
from tinygpt.config import ConfigError, SettingText
from tinygpt.training.plan import plan_new

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "tinygpt"
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9_]*)(?![\w-])")


def our_flags() -> set[str]:
    """Every --option of every tinygpt command, without the dashes."""
    names: set[str] = set()

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            names.update(o[2:] for o in action.option_strings if o.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    return names


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of a module, its classes and its functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def library_strings() -> list[tuple[str, int, str]]:
    """(file, line, text) of every string in the library outside tinygpt/cli/ that is not a docstring."""
    out = []
    for path in sorted(LIBRARY.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tinygpt/cli/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = docstrings(tree)
        out += [(rel, node.lineno, node.value) for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]
    return out


def test_no_flag_text_in_the_library_outside_cli():
    flags = our_flags()
    assert {"data", "out", "chat_loss", "resume", "learning_rate"} <= flags  # the scan knows the flags
    found = [f"{rel}:{line}: {text!r}" for rel, line, text in library_strings()
             for name in FLAG.findall(text) if name in flags]
    assert found == [], "name the setting with config.SettingText instead:\n" + "\n".join(found)


def test_the_scan_finds_a_flag_in_a_message_and_not_in_a_docstring():
    tree = ast.parse('"""Run `tinygpt train --data x`."""\ndef f():\n    raise ValueError(f"--out {x} is bad")\n')
    skip = docstrings(tree)
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in skip]
    assert texts == ["--out ", " is bad"] and FLAG.findall(texts[0]) == ["out"]
    assert FLAG.findall("pip download --no-deps --no-binary :all:") == []  # another program's options


def test_every_named_setting_is_marked_in_its_template():
    """SettingText(template, *names): each listed name appears backquoted in the literal text of the template
    (else str() would show it unrenamed and the command line could not spell it as a flag)."""
    calls = 0
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "SettingText" and node.args) \
                    or any(isinstance(a, ast.Starred) for a in node.args):  # SettingText's own joining
                continue
            calls += 1
            template = node.args[0]
            literal = "".join(v.value for v in getattr(template, "values", [template])
                              if isinstance(v, ast.Constant) and isinstance(v.value, str))
            names = [a.value for a in node.args[1:] if isinstance(a, ast.Constant)]
            assert names and len(names) == len(node.args) - 1, f"{path}:{node.lineno}"
            for name in names:
                assert f"`{name}`" in literal, f"{path}:{node.lineno}: {name} is not marked"
    assert calls >= 20


def test_a_setting_text_reads_as_the_library_and_as_the_command_line():
    text = SettingText("`fsdp` does not support float16; use `dtype`=bfloat16 or `dtype`=float32", "fsdp", "dtype")
    assert text == "fsdp does not support float16; use dtype=bfloat16 or dtype=float32"
    assert as_flags(text) == "--fsdp does not support float16; use --dtype=bfloat16 or --dtype=float32"
    assert as_flags("a plain `dtype` text") == "a plain `dtype` text"
    path = SettingText("`out` runs/`out`x: bad", "out")  # only the listed names, and a path's backquotes stay
    assert str(path) == "out runs/outx: bad" and SettingText("runs/`x`", "out") == "runs/`x`"
    joined = text + " (more)"  # joining keeps the names; so does an error pickled to another process
    assert isinstance(joined, SettingText) and as_flags(joined).endswith("--dtype=float32 (more)")
    error = pickle.loads(pickle.dumps(ConfigError(text)))
    assert str(error) == text and error_text(error) == as_flags(text)
    assert error_text(ValueError("no settings")) == "no settings"


def test_python_users_read_setting_names_and_the_command_line_reads_flags(tmp_path, cli):
    (tmp_path / "t.txt").write_text("some text " * 200)
    with pytest.raises(ConfigError) as e:
        plan_new(tmp_path / "t.txt", {}, chat_loss="all")
    assert str(e.value) == "chat_loss applies to chat data (a .jsonl file of conversations)"
    code, _, err = cli("train", "--data", tmp_path / "t.txt", "--out", tmp_path / "r", "--chat_loss", "all")
    assert code == 2 and err.strip() == "error: --chat_loss applies to chat data (a .jsonl file of conversations)"
