"""Every doctest in the tinygpt package runs and passes (the worked examples in docstrings stay true)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tinygpt

# Optional extras: a module that needs one of them at import time is skipped (with the reason) when it is missing.
OPTIONAL = ("matplotlib", "PIL", "transformers", "tokenizers", "tiktoken", "tensorboard", "starlette")
# The doctests found when this test was written; fewer means discovery broke or examples were lost.
MIN_EXAMPLES = 10


def _modules() -> list[str]:
    # __main__ runs the command line when imported
    return sorted(m.name for m in pkgutil.walk_packages(tinygpt.__path__, "tinygpt.")
                  if not m.name.endswith(".__main__"))


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        if missing in OPTIONAL:
            pytest.skip(f"{name} needs the optional package {missing}")
        raise


@pytest.mark.parametrize("name", _modules())
def test_module_doctests_pass(name):
    module = _import(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name} (see the captured output)"


def test_the_package_has_its_doctests():
    names = _modules()
    assert {"tinygpt.tokenizers.char", "tinygpt.tokenizers.bpe", "tinygpt.tasks.calculator"} <= set(names)
    finder = doctest.DocTestFinder()
    found = 0
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found += sum(len(t.examples) for t in finder.find(module))
    assert found >= MIN_EXAMPLES
