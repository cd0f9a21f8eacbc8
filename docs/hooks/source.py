"""The site's `source()` include: a line `{{ source("tinygpt/models/gpt.py", "GPT.forward") }}` on its own in a page
becomes, in the built site, a fenced python block of exactly those lines of the file (decorators and docstring
included), titled `path · name (lines a–b)` and numbered as in the file. On GitHub the line shows as written.

The name is a dotted path of classes and functions (`GPT.forward`), or the name of an assignment at module or
class level (`CORPORA`, `ModelConfig.n_layer`), found with `ast`: nothing is imported. Without a name, the whole
file. An unknown file or name stops the build with the page, its line and what the file does hold.

MkDocs loads this file as a hook (mkdocs.yml, `hooks:`); the docs tests import it by path and call `expand` and
`find_source`, so a page whose include no longer resolves fails there too.
"""
from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

# {{ source("path") }} or {{ source("path", "Dotted.name") }}, alone on its line (indentation allowed)
INCLUDE = re.compile(r'^(?P<indent>[ \t]*)\{\{\s*source\(\s*"(?P<path>[^"]+)"\s*(?:,\s*"(?P<name>[^"]*)"\s*)?\)\s*\}\}'
                     r'[ \t]*$')
FENCE = re.compile(r"^[ \t]*(?P<mark>`{3,}|~{3,})")


class SourceError(ValueError):
    """An include that names a file or an object that is not there; the message says where and why."""


@dataclass(frozen=True)
class Snippet:
    path: str         # as written in the include, relative to the repository root
    name: str | None  # the dotted name, or None for the whole file
    start: int        # first line, 1-based
    end: int          # last line, inclusive
    code: str         # those lines, dedented

    @property
    def title(self) -> str:
        where = f"{self.path} · {self.name}" if self.name else self.path
        return f"{where} (lines {self.start}–{self.end})"


def _span(node: ast.AST) -> tuple[int, int]:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)]), node.end_lineno


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What a module or class body defines: classes, functions and assigned names (the first definition wins)."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found.setdefault(node.name, node)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found.setdefault(node.target.id, node)
    return found


def find_source(root: Path | str, path: str, name: str | None = None) -> Snippet:
    """The lines of `name` (dotted) in the file `path` under `root`, or the whole file when name is None."""
    root = Path(root).resolve()
    file = (root / path).resolve()
    if not file.is_relative_to(root) or not file.is_file():
        raise SourceError(f"source(): no file {path!r} in the repository")
    text = file.read_text(encoding="utf-8")
    lines = text.splitlines()
    if not name:
        return Snippet(path, None, 1, len(lines), text.rstrip("\n") + "\n")
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        raise SourceError(f"source(): {path} does not parse as Python ({e.msg}, line {e.lineno})") from None
    node: ast.AST = tree
    for depth, part in enumerate(name.split(".")):
        found = _names(getattr(node, "body", []) if isinstance(node, (ast.Module, ast.ClassDef)) else [])
        if part not in found:
            inside = ".".join(name.split(".")[:depth]) or path
            known = ", ".join(sorted(found)) or "nothing"
            raise SourceError(f"source(): no {part!r} in {inside} (it defines: {known})")
        node = found[part]
    start, end = _span(node)
    return Snippet(path, name, start, end, textwrap.dedent("\n".join(lines[start - 1:end])) + "\n")


def render(snippet: Snippet, indent: str = "") -> str:
    """The fenced block that replaces an include: python, titled, numbered from the snippet's first line."""
    fence = "````" if "```" in snippet.code else "```"
    body = [f'{fence}python title="{snippet.title}" linenums="{snippet.start}"', *snippet.code.splitlines(), fence]
    return "\n".join(indent + line if line else line for line in body)


def includes(markdown: str) -> list[tuple[int, str, str, str | None]]:
    """(line number, indent, path, name) of every include line outside fenced code blocks."""
    found, fence = [], None
    for number, line in enumerate(markdown.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group("mark")
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip()[len(mark):].strip():
                fence = None
            continue
        if fence is None:
            inc = INCLUDE.match(line)
            if inc:
                found.append((number, inc.group("indent"), inc.group("path"), inc.group("name") or None))
    return found


def expand(markdown: str, root: Path | str, where: str = "page") -> str:
    """The page with every include replaced by its code; SourceError names `where:line` for a bad one."""
    lines = markdown.splitlines()
    for number, indent, path, name in reversed(includes(markdown)):
        try:
            snippet = find_source(root, path, name)
        except SourceError as e:
            raise SourceError(f"{where}:{number}: {e}") from None
        lines[number - 1] = render(snippet, indent)
    return "\n".join(lines) + ("\n" if markdown.endswith("\n") else "")


# --- the MkDocs hook --------------------------------------------------------------------------------------------

def on_page_markdown(markdown, page, config, files):
    from mkdocs.exceptions import PluginError

    root = Path(config["config_file_path"]).parent
    try:
        return expand(markdown, root, f"docs/{page.file.src_uri}")
    except SourceError as e:
        raise PluginError(str(e)) from None
