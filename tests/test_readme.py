"""The README's promises about itself: its two set-up commands (CI runs the test one; the demo one installs what
the tour uses), every `pip install` hint in it and in the guides names an extra that exists, and the Python example
(in the Python guide) runs as written, twice."""
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

import tinygpt

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: tomli, a dependency there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = ROOT / "docs/guides"
PYTHON_GUIDE = GUIDES / "python.md"
HINT = re.compile(r"pip install[^\n`]*?tinygpt\[([a-z,]+)\]")  # pip install 'tinygpt[viz]'
SETUP = re.compile(r"pip install -q -c constraints.txt -e \"\.\[([a-z,]+)\]\"")  # the set-up commands


def _extras() -> dict[str, set[str]]:
    """pyproject.toml's extras: name -> the distributions it installs (names only, lower case)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    return {name: {re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in reqs} for name, reqs in table.items()}


def _setup_commands() -> dict[str, str]:
    """The README's two bash commands under **Run the demo** and **Run the tests**."""
    text = README.read_text(encoding="utf-8")
    return {which: re.search(rf"\*\*Run the {which}\*\*.*?```bash\n(.*?)\n```", text, re.DOTALL).group(1)
            for which in ("demo", "tests")}


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _library_hints() -> list[tuple[str, str]]:
    """(file, extra) for every `pip install 'tinygpt[...]'` the library prints or documents."""
    return sorted({(str(path.relative_to(ROOT)), extra)
                   for path in (ROOT / "tinygpt").rglob("*.py")
                   for m in HINT.finditer(path.read_text(encoding="utf-8")) for extra in m.group(1).split(",")})


def test_ci_runs_the_readme_test_command():
    ci = [line for line in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == _setup_commands()["tests"]


def test_readme_install_hints_name_extras_that_exist():
    """The README's hints and set-up commands, and the guides' hints (what the README said moved there)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in [README, *sorted(GUIDES.glob("*.md"))])
    named = {e for m in HINT.finditer(text) for e in m.group(1).split(",")}
    named |= {e for m in SETUP.finditer(text) for e in m.group(1).split(",")}
    assert {"plot", "viz", "web", "parquet", "test"} <= named  # the hints are found at all
    assert named <= set(_extras())


@pytest.mark.parametrize("where, extra", _library_hints())
def test_library_install_hints_name_extras_that_exist(where, extra):
    assert extra in _extras(), f"{where} tells the user to install tinygpt[{extra}], which pyproject.toml lacks"


def test_library_hints_are_found():
    assert {e for _, e in _library_hints()} >= {"viz", "web", "parquet"}  # (plot's hint may say viz instead)


def test_demo_setup_installs_what_the_tour_uses():
    """Every extra the tour names, and every one the library asks for in the commands the tour runs (plot,
    inspect, serve, the demo's own suggestions), is installed by the demo's set-up command."""
    extras = _extras()
    (setup,) = SETUP.findall(_setup_commands()["demo"])
    installed = set().union(*(extras[e] for e in setup.split(",")))
    tour = _section("A five-minute tour")
    needed = {e for m in HINT.finditer(tour) for e in m.group(1).split(",")}
    needed |= {e for where, e in _library_hints()
               if where.startswith(("tinygpt/inspect/", "tinygpt/serve/", "tinygpt/cli/demo", "tinygpt/cli/serve"))}
    assert needed >= {"viz", "web"}
    missing = {e: sorted(extras[e] - installed) for e in needed if not extras[e] <= installed}
    assert not missing, f"the demo's set-up ({setup}) does not install what the tour needs: {missing}"
    assert shlex.split(_setup_commands()["demo"])[-2:] == [".venv/bin/tinygpt", "demo"]


def _example() -> str:
    section = PYTHON_GUIDE.read_text(encoding="utf-8").split("## Train and sample in a dozen lines", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_public_api_names():
    for name in ("load_tokenizer", "load_checkpoint", "train", "GPT", "Decoder", "Run", "ModelConfig",
                 "TrainConfig", "generate", "generate_text"):
        assert name in tinygpt.__all__ and getattr(tinygpt, name) is not None
    assert callable(tinygpt.train) and tinygpt.train.__module__ == "tinygpt.training.loop"  # the function, not the module


@pytest.mark.slow
def test_readme_python_example_trains_and_samples(tmp_path, monkeypatch):
    """It runs as written and does what it says; run again (here with 10 steps instead of 150, to save time), it
    starts over instead of refusing the run the first time left."""
    monkeypatch.chdir(tmp_path)

    def run_example(code: str) -> list[str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "python.md", "exec"), {})  # noqa: S102 (the guide's own example)
        return out.getvalue().splitlines()

    loss_line, sample = run_example(_example())[:2]
    loss = float(re.match(r"val loss ([0-9.]+) after 150 steps", loss_line).group(1))
    assert loss < 0.5  # a 24-character cycle: far below uniform guessing over 11 characters (2.4 nats)
    assert sample == ("the cat sat on the mat. " * 3)[7:47]  # greedy: the 40 characters that follow "the cat"
    run = tinygpt.Run(tmp_path / "runs/cat")
    assert run.kind() == "text" and run.metrics()[-1]["step"] == 150
    again = _example().replace("STEPS = 150", "STEPS = 10").replace('"eval_interval": 50', '"eval_interval": 5')
    assert again != _example()
    assert run_example(again)[0].endswith("after 10 steps")
    assert [m["step"] for m in run.metrics()][-1] == 10 and 150 not in [m["step"] for m in run.metrics()]
