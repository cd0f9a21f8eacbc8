"""Patterns in mkdocs.yml's nav: an entry such as `learn/[0-9]*.md` stands for every page it matches, in file-name
order, leaving out the pages that the nav names elsewhere or that an earlier pattern matched. So a new chapter or
guide appears in the site without an edit to mkdocs.yml, and the pages listed by name keep their place. A pattern
that matches nothing is dropped; a page listed by name that does not exist still fails `mkdocs build --strict`.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path


def _named(nav) -> set[str]:
    if isinstance(nav, str):
        return set() if _is_pattern(nav) else {nav}
    if isinstance(nav, dict):
        return set().union(*(_named(v) for v in nav.values()))
    if isinstance(nav, list):
        return set().union(set(), *(_named(v) for v in nav))
    return set()


def _is_pattern(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def expand_nav(nav, pages: list[str]):
    """nav with each pattern entry replaced by the pages (docs-relative paths) it matches, in sorted order."""
    taken = _named(nav)  # pages named in the nav, then those an earlier pattern matched

    def walk(item):
        if isinstance(item, list):
            out = []
            for entry in item:
                if isinstance(entry, str) and _is_pattern(entry):
                    matched = [p for p in sorted(pages) if fnmatch.fnmatchcase(p, entry) and p not in taken]
                    taken.update(matched)
                    out += matched
                else:
                    out.append(walk(entry))
            return out
        if isinstance(item, dict):
            return {title: walk(value) for title, value in item.items()}
        return item

    return walk(nav)


def on_config(config):
    if config["nav"]:
        docs = Path(config["docs_dir"])
        pages = [p.relative_to(docs).as_posix() for p in docs.rglob("*.md")]
        config["nav"] = expand_nav(config["nav"], pages)
    return config
