"""Where tinygpt keeps downloaded corpora and trained tokenizers between runs."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$TINYGPT_CACHE, else $XDG_CACHE_HOME/tinygpt, else ~/.cache/tinygpt (created on demand)."""
    root = os.environ.get("TINYGPT_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinygpt"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
