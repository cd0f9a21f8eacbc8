"""The house's rules, checked on every test run: imports run one way, from the command line down to the ground
floor (the `layers` contract in pyproject.toml), and no module imports itself back through others."""
from __future__ import annotations

import sys
from pathlib import Path

import grimp
import pytest
from importlinter import cli as importlinter_cli
from importlinter.contracts.layers import LayersContract

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_is_kept(monkeypatch):
    monkeypatch.chdir(ROOT)  # import-linter reads pyproject.toml from the working directory
    assert importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import circles of a package: each strongly connected group of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_module_imports_itself_back_through_others():
    assert import_cycles(grimp.build_graph("tinygpt")) == []


def test_the_cycle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def layers_contract() -> LayersContract:
    with open(ROOT / "pyproject.toml", "rb") as f:
        spec = tomllib.load(f)["tool"]["importlinter"]["contracts"][0]
    return LayersContract(name=spec["name"], session_options={"root_packages": ["tinygpt"]},
                          contract_options={"layers": spec["layers"], "containers": []})


@pytest.mark.parametrize("importer, imported", [("tinygpt.models.gpt", "tinygpt.training.loop"),
                                                ("tinygpt.data.text", "tinygpt.cli.main"),
                                                ("tinygpt.training.loop", "tinygpt.inspect.views"),
                                                ("tinygpt.interop.gpt2", "tinygpt.inspect.interpret")])
def test_an_upward_or_sideways_import_breaks_the_contract(importer, imported):
    """The contract is not vacuous: one import from a lower layer to a higher one, or between the two independent
    rooms of one layer, breaks it."""
    graph = grimp.build_graph("tinygpt")
    assert layers_contract().check(graph, verbose=False).kept
    graph.add_import(importer=importer, imported=imported)
    assert not layers_contract().check(graph, verbose=False).kept
