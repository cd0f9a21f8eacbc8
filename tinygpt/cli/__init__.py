"""The `tinygpt` command line, one module per command group: `main.py` builds the parser and runs a command."""
from tinygpt.cli.main import main

__all__ = ["main"]
