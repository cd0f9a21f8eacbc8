"""What the docs tests read in the Markdown pages, and the runner of a page's Python blocks.

The conventions every page of docs/ (and README.md, for commands and links) follows:

- Python blocks (docs/index.md, docs/learn/, docs/guides/, docs/reference/): every fenced block whose info string
  starts with `python` runs, in page order, in one namespace per page (like a notebook), with a fresh temporary
  directory as the working directory, no terminal (stdin empty), matplotlib drawing to files, and
  `TINYGPT_CACHE` pointing at a temporary cache whose named corpora (every name in tinygpt.data.corpora.CORPORA)
  are small local stand-ins: a made-up play, after one line holding every printable ASCII character, so any
  prompt a character model is given is in its vocabulary. Nothing needs the network.
- `NAME = VALUE  # test: SMALL` runs as `NAME = SMALL` in the tests (a `# test:` comment on any other kind of
  line is an error). A reader, and `--full`, run VALUE.
- `<!-- no-test: the reason -->` on the line just before a fence skips that block; the reason is required, and
  the comment anywhere else is an error.
- Commands: in bash/sh/shell/console blocks, every command that starts with `tinygpt` (also `.venv/bin/tinygpt`,
  `python -m tinygpt`, `torchrun ... -m tinygpt`), and every inline code span starting with `tinygpt `, is parsed
  by the real parser (tinygpt.cli.main.build_parser). Handled: `\\` line continuations, quoted text over several
  lines, `# comments`, `$ ` prompts (in a console block with prompts, the other lines are output), pipes and
  `&&`/`;` chains, redirections (`> out`, `2> err`, `2>&1`, `< in`), leading `NAME=value` assignments.
  Placeholders: `...` stands for more arguments and is dropped; `[--flag]` brackets mark an option and are
  removed; `a/b/c` in a subcommand's place means each of a, b, c; an upper-case word in a subcommand's place
  (`tinygpt COMMAND --help`) is not checked; an upper-case word as a flag's value (`--vocab_size N`) passes.
  An inline span may name a flag without its value or leave out required arguments (`tinygpt train`,
  `tinygpt sample --seed`); a line in a block may not.
- Links: every relative link or image (Markdown or HTML) must name an existing file; a page under docs/ must
  link inside docs/ and to a page, not a folder (the site cannot reach other files: name source files in code
  spans instead). An `#anchor` into a Markdown file must be the id of one of its headings by GitHub's rule,
  which the site uses too (mkdocs.yml's toc slugify): lower case; characters other than letters, digits, `-`,
  `_` and spaces removed; each space a `-` (so "2026-11-21 — A title" is `2026-11-21--a-title`). A repeated
  heading is `-1`, `-2` on GitHub but `_1`, `_2` in the site, so a page of the site cannot link to one.

Run a page at its full budget, and time it:  python tests/docs_blocks.py docs/learn/03-tokenization.md --full
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import re
import shlex
import shutil
import string
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<mark>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
NO_TEST = re.compile(r"^\s*<!--\s*no-test\b:?(?P<reason>.*?)-->\s*$")
BUDGET = re.compile(r"^(?P<indent>[ \t]*)(?P<name>[A-Za-z_]\w*)[ \t]*=[ \t]*(?P<value>[^#\n]*?)[ \t]*#[ \t]*test:"
                    r"[ \t]*(?P<small>\S.*?)[ \t]*$")
SHELL = {"bash", "console", "sh", "shell", "zsh", "shell-session"}


class ConventionError(ValueError):
    """A page breaks one of the conventions above; the message names the page and line."""


def rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# --- fenced blocks ----------------------------------------------------------------------------------------------------

@dataclass
class Fence:
    line: int          # the opening fence's line, 1-based
    info: str          # the info string: `python`, `bash title="x"`, ...
    code: str          # the content, with the fence's indentation removed
    before: str        # the line just before the opening fence
    end: int           # the closing fence's line (the page's last line when it is never closed)

    @property
    def lang(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


def fences(text: str) -> list[Fence]:
    lines = text.splitlines()
    out: list[Fence] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, mark = len(m.group("indent").expandtabs()), m.group("mark")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = FENCE.match(lines[j])
            if close and close.group("mark")[0] == mark[0] and len(close.group("mark")) >= len(mark) \
                    and not close.group("info").strip():
                break
            line = lines[j].expandtabs()
            body.append(line[min(indent, len(line) - len(line.lstrip())):])
            j += 1
        out.append(Fence(i + 1, m.group("info").strip(), "\n".join(body), lines[i - 1] if i else "",
                         min(j + 1, len(lines))))
        i = j + 1
    return out


def prose(text: str) -> str:
    """The page with every fenced block's lines blanked (line numbers kept): where inline spans and links live."""
    lines = text.splitlines()
    for f in fences(text):
        for k in range(f.line - 1, f.end):
            lines[k] = ""
    return "\n".join(lines)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# --- Python blocks ----------------------------------------------------------------------------------------------------

@dataclass
class Block:
    page: Path
    line: int                    # the opening fence's line
    code: str                    # as written
    skip: str | None = None      # the no-test reason
    budgets: list[tuple[int, str, str, str]] = field(default_factory=list)  # (line, NAME, VALUE, SMALL)

    def source(self, full: bool = False) -> str:
        """The code to run: with `# test:` budgets applied unless full, padded so line numbers are the page's."""
        lines = self.code.splitlines()
        if not full:
            for number, name, _, small in self.budgets:
                k = number - self.line - 1
                indent = re.match(r"[ \t]*", lines[k]).group(0)
                lines[k] = f"{indent}{name} = {small}"
        return "\n" * self.line + "\n".join(lines) + "\n"


def python_blocks(page: Path) -> list[Block]:
    """The page's Python blocks, checked against the conventions (ConventionError names page:line)."""
    text = page.read_text(encoding="utf-8")
    where = rel(page)
    blocks: list[Block] = []
    for f in fences(text):
        skip = NO_TEST.match(f.before)
        if skip and not skip.group("reason").strip():
            raise ConventionError(f"{where}:{f.line - 1}: <!-- no-test: ... --> needs a reason after the colon")
        if not f.lang.startswith("python"):
            if skip:
                raise ConventionError(f"{where}:{f.line - 1}: a no-test comment before a block that is not python")
            continue
        block = Block(page, f.line, f.code, skip.group("reason").strip() if skip else None)
        for k, line in enumerate(f.code.splitlines()):
            if re.search(r"#\s*test:", line):
                m = BUDGET.match(line)
                if not m:
                    raise ConventionError(f"{where}:{f.line + k + 1}: `# test:` belongs on a line "
                                          f"`NAME = VALUE  # test: SMALL`, not on {line.strip()!r}")
                block.budgets.append((f.line + k + 1, m.group("name"), m.group("value"), m.group("small")))
        blocks.append(block)
    for number, line in enumerate(text.splitlines(), 1):  # a no-test comment must sit on a fence
        if NO_TEST.match(line) and not any(f.line == number + 1 for f in fences(text)):
            raise ConventionError(f"{where}:{number}: a no-test comment must be on the line just before a fence")
    return blocks


def stand_in_text(n_chars: int, seed: int) -> str:
    """A corpus stand-in: the suite's made-up play, and every printable ASCII character once."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import play_text

    printable = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c")
    return f"{printable}\n\n" + play_text(n_chars, seed)


def write_stand_ins(cache: Path, n_chars: int) -> None:
    """cache/corpora/NAME.txt for every named corpus, as tinygpt.data.corpora lays its cache out."""
    from tinygpt.data.corpora import CORPORA

    (cache / "corpora").mkdir(parents=True, exist_ok=True)
    text = stand_in_text(n_chars, seed=0)
    for name in CORPORA:
        (cache / "corpora" / f"{name}.txt").write_text(text, encoding="utf-8")


@contextlib.contextmanager
def page_place(cache: Path | None = None, stand_ins: Path | None = None, n_chars: int = 100_000):
    """A fresh working directory and TINYGPT_CACHE for one page; everything put back afterwards. cache: use that
    cache as it is (the real corpora, say); else a temporary one with stand-ins (copied from stand_ins when
    given, to make them once per session)."""
    import torch

    old_cwd, old_env = os.getcwd(), dict(os.environ)
    old_torch = (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled())
    old_stdin, old_argv = sys.stdin, sys.argv
    with tempfile.TemporaryDirectory(prefix="tinygpt-docs-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        if cache is None:
            cache = Path(tmp) / "cache"
            if stand_ins is not None:
                shutil.copytree(stand_ins, cache)
            else:
                write_stand_ins(cache, n_chars)
        os.environ["TINYGPT_CACHE"] = str(cache)
        os.environ["MPLBACKEND"] = "Agg"  # pictures go to files, never to a window
        os.chdir(work)
        sys.stdin, sys.argv = io.StringIO(""), ["docs"]  # no terminal to read from
        try:
            yield work
        finally:
            os.chdir(old_cwd)
            os.environ.clear()
            os.environ.update(old_env)
            sys.stdin, sys.argv = old_stdin, old_argv
            torch.set_default_dtype(old_torch[0])
            torch.set_num_threads(old_torch[1])
            torch.set_grad_enabled(old_torch[2])


def run_blocks(page: Path, full: bool = False, report=None) -> list[tuple[Block, float]]:
    """Run the page's blocks in order in one namespace, in the current directory; (block, seconds) each, a
    skipped block with seconds -1. An exception propagates, its traceback naming the page's own lines."""
    namespace: dict = {"__name__": "__main__"}
    times = []
    for block in python_blocks(page):
        if block.skip:
            times.append((block, -1.0))
            continue
        start = time.perf_counter()
        exec(compile(block.source(full), rel(page), "exec"), namespace)  # noqa: S102 (our own docs)
        times.append((block, time.perf_counter() - start))
        if report:
            report(block, times[-1][1])
    return times


# --- commands ---------------------------------------------------------------------------------------------------------

@dataclass
class Command:
    page: Path
    line: int
    text: str           # as written (continuations joined)
    inline: bool        # an inline code span rather than a line of a block


def _balanced(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
        return True
    except ValueError:
        return False


def _logical_lines(code: str, first: int) -> list[tuple[int, str]]:
    """(line, text) of each shell line: `\\` continuations joined, and a quoted string that spans lines kept whole."""
    out, buf, start = [], "", None
    lines = code.splitlines()
    for k, line in enumerate(lines):
        if start is None:
            start = first + k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if not _balanced(buf) and k + 1 < len(lines):
            buf += "\n"
            continue
        out.append((start, buf))
        buf, start = "", None
    if buf:
        out.append((start, buf))
    return out


def commands(page: Path) -> list[Command]:
    """Every tinygpt command in the page's shell blocks and inline code spans."""
    text = page.read_text(encoding="utf-8")
    out = []
    for f in fences(text):
        if f.lang not in SHELL:
            continue
        lines = _logical_lines(f.code, f.line + 1)
        prompted = f.lang in ("console", "shell-session") and any(re.match(r"\s*\$\s", line) for _, line in lines)
        for number, line in lines:
            if prompted and not re.match(r"\s*\$\s", line):
                continue  # a console block's output
            line = re.sub(r"^\s*\$\s+", "", line)
            if re.search(r"(^|[\s/|;&(])tinygpt(\s|$)", line):
                out.append(Command(page, number, line.strip(), inline=False))
    body = prose(text)
    for m in re.finditer(r"(?<!`)`(tinygpt [^`]+)`(?!`)", body):
        out.append(Command(page, line_of(body, m.start()), " ".join(m.group(1).split()), inline=True))
    return out


def _tinygpt_args(words: list[str]) -> list[str] | None:
    """The arguments after the program, for one simple command of a pipeline; None if it is not tinygpt."""
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):  # NAME=value before the program
        words = words[1:]
    while words and words[0] in ("time", "nohup", "exec", "env"):
        words = words[1:]
    if not words:
        return None
    if Path(words[0]).name == "tinygpt":
        return words[1:]
    if "-m" in words and words.index("-m") + 1 < len(words) and words[words.index("-m") + 1] == "tinygpt" \
            and Path(words[0]).name.startswith(("python", "torchrun")):
        return words[words.index("-m") + 2:]
    return None


def split_command(text: str) -> list[list[str]]:
    """The tinygpt invocations in one shell line: argument lists, redirections and placeholders handled."""
    text = re.sub(r"(?<=\s)\d?>&\d", " ", text)  # 2>&1
    text = re.sub(r"(?<=\s)\d?(>>?|<)", r" \1 ", text)  # 2>err, >out, <in: the operator its own word
    lex = shlex.shlex(text, posix=True, punctuation_chars="|&;<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    words = list(lex)
    out, current = [], []
    for w in [*words, ";"]:
        if w in ("|", "||", "&&", ";", "&", ";;"):
            args = _tinygpt_args(current)
            if args is not None:
                out.append(args)
            current = []
        else:
            current.append(w)
    cleaned = []
    for args in out:
        kept, skip_next = [], False
        for w in args:
            if skip_next:
                skip_next = False
                continue
            if w in (">", ">>", "<", ">&", "<&"):
                skip_next = True
                continue
            w = w.removeprefix("[").removesuffix("]") if w.startswith("[") or w.endswith("]") else w
            if w in ("...", "…", ""):
                continue
            kept.append(w)
        cleaned.append(kept)
    return cleaned


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _expand(args: list[str], parser) -> list[list[str]] | None:
    """`inspect attention/steps RUN` -> one argument list per alternative; None when a placeholder stands in a
    subcommand's place (nothing to check)."""
    choices = _subcommands(parser)
    if not choices or not args or args[0].startswith("-"):
        return [args]
    head, rest = args[0], args[1:]
    if head in choices:
        tails = _expand(rest, choices[head])
        return None if tails is None else [[head, *t] for t in tails]
    if "/" in head and all(part in choices for part in head.split("/")):
        out = []
        for part in head.split("/"):
            tails = _expand(rest, choices[part])
            if tails is None:
                return None
            out += [[part, *t] for t in tails]
        return out
    if re.fullmatch(r"[A-Z][A-Z_]*", head):
        return None
    return [args]


PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
TOLERATED_INLINE = ("the following arguments are required", "expected one argument")


def _without_placeholder(args: list[str], message: str) -> list[str] | None:
    """args less the flag whose value is an upper-case placeholder the parser refused (`--vocab_size N`), or None."""
    for value in re.findall(r"'([^']*)'", message):
        if not PLACEHOLDER.fullmatch(value):
            continue
        for k, w in enumerate(args):
            if w == value and k and args[k - 1].startswith("-"):
                return args[:k - 1] + args[k + 1:]
            if w.startswith("-") and w.endswith("=" + value):
                return args[:k] + args[k + 1:]
    return None


@functools.lru_cache(maxsize=1)
def _parser():
    from tinygpt.cli.main import build_parser

    return build_parser()


def parse_error(args: list[str], inline: bool = False) -> str | None:
    """The real parser's complaint about `tinygpt ARGS`, or None when it parses. An upper-case placeholder may
    stand for any value (`--vocab_size N`); an inline span may name a flag without its value or leave out required
    arguments."""
    from tinygpt.cli.args import UsageError, unknown_arguments

    parser = _parser()
    pending = list(_expand(args, parser) or [])
    while pending:
        variant = pending.pop(0)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ns, extras = parser.parse_known_args(variant)
            if extras:
                return unknown_arguments(extras, getattr(ns, "_parser", parser))
        except SystemExit as e:  # --help, --version
            if e.code not in (0, None):
                return f"exit {e.code}"
        except UsageError as e:
            fewer = _without_placeholder(variant, str(e))
            if fewer is not None:
                pending.insert(0, fewer)
                continue
            if inline and any(t in str(e) for t in TOLERATED_INLINE):
                continue
            return str(e)
    return None


def command_errors(page: Path) -> list[str]:
    errors = []
    for c in sorted(commands(page), key=lambda c: c.line):
        try:
            invocations = split_command(c.text)
        except ValueError as e:  # unbalanced quotes
            errors.append(f"{rel(page)}:{c.line}: {c.text!r}: cannot split it as a shell line ({e})")
            continue
        for args in invocations:
            problem = parse_error(args, c.inline)
            if problem:
                errors.append(f"{rel(page)}:{c.line}: `tinygpt {shlex.join(args)}`: {problem}")
    return errors


# --- links ------------------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?P<target>\S+)", re.MULTILINE)
HTML = re.compile(r"<(?:img|a|source)\b[^>]*?\s(?:src|href)=\"(?P<target>[^\"]+)\"", re.IGNORECASE)
HEADING = re.compile(r"^(#{1,6})[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$")


def _plain(title: str) -> tuple[str, str | None]:
    """A heading's text as rendered (links, code and emphasis marks removed), and its {#id} if it sets one."""
    explicit = re.search(r"\{[^}]*#(?P<id>[\w-]+)[^}]*\}\s*$", title)
    title = re.sub(r"\s*\{[^}]*\}\s*$", "", title)
    title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)
    title = re.sub(r"<[^>]+>", "", title).replace("`", "")
    title = re.sub(r"(\*\*|__|\*)", "", title)
    return title, explicit.group("id") if explicit else None


def slug(title: str) -> str:
    """GitHub's heading id, which mkdocs.yml asks of the site too (pymdownx.slugs.slugify, lower case)."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(page: Path, where: str) -> set[str]:
    """The heading ids of a page as `where` ("github" or "site") numbers repeated ones."""
    sep = "-" if where == "github" else "_"
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        m = HEADING.match(line)
        if not m:
            continue
        title, explicit = _plain(m.group("title"))
        if explicit and where == "site":
            out.add(explicit)
            continue
        s = slug(title)
        if s in seen:
            seen[s] += 1
            s = f"{s}{sep}{seen[s]}"
        else:
            seen[s] = 0
        out.add(s)
    return out


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every link, image and HTML src/href outside code."""
    body = prose(page.read_text(encoding="utf-8"))
    body = re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: re.sub(r"[^\n]", " ", m.group(0)), body, flags=re.DOTALL)
    found = []
    for pattern in (LINK, REF_DEF, HTML):
        for m in pattern.finditer(body):
            found.append((m.start(), line_of(body, m.start()), m.group("target").strip("<>")))
    return [(line, target) for _, line, target in sorted(found)]  # in the page's order


def link_errors(page: Path) -> list[str]:
    page = page.resolve()
    in_site = page.is_relative_to(DOCS.resolve())
    errors = []
    for number, target in links(page):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
            continue  # https:, mailto:, ...: not ours to check offline
        where = f"{rel(page)}:{number}: link {target!r}"
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if path.startswith("/"):
            errors.append(f"{where}: absolute paths break on GitHub or in the site; link relative to the page")
            continue
        if not file.exists():
            errors.append(f"{where}: no such file ({rel(file)})")
            continue
        if in_site and not file.is_relative_to(DOCS.resolve()):
            errors.append(f"{where}: outside docs/, which the site cannot link to (name the file in a code span)")
            continue
        if in_site and file.is_dir():
            errors.append(f"{where}: a folder; link a page (its index.md)")
            continue
        if anchor and file.suffix == ".md":
            known = anchors(file, "github")
            if in_site:  # read on GitHub and in the site: the id must be the same in both
                known &= anchors(file, "site")
            if anchor not in known:
                close = sorted(known, key=lambda k: -len(os.path.commonprefix([k, anchor])))[:3]
                errors.append(f"{where}: no heading with the id #{anchor} in {rel(file)}"
                              + (f" (closest: {', '.join(close)})" if close else ""))
    return errors


# --- the pages --------------------------------------------------------------------------------------------------------

def site_pages() -> list[Path]:
    """Every Markdown page of the site (docs/hooks holds code, not pages)."""
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def pages_with_code() -> list[Path]:
    """The pages whose Python blocks run: the home page, the course, the guides and the reference."""
    return sorted([DOCS / "index.md", *DOCS.glob("learn/*.md"), *DOCS.glob("guides/*.md"),
                   *DOCS.glob("reference/*.md")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the Python blocks of docs pages, in order, and time them.")
    ap.add_argument("pages", nargs="+", type=Path, help="Markdown pages (docs/learn/03-tokenization.md ...)")
    ap.add_argument("--full", action="store_true", help="the budgets as written (no `# test:` substitutions)")
    ap.add_argument("--cache", type=Path, help="a corpus cache to use as it is (e.g. ~/.cache/tinygpt with the "
                    "real corpora); default: a temporary one with stand-ins the size of tinyshakespeare")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    total = 0.0
    for page in args.pages:
        page = page.resolve()
        print(f"{rel(page)} ({'full budget' if args.full else 'test budget'})", flush=True)
        with page_place(args.cache.expanduser() if args.cache else None,
                        n_chars=1_100_000 if args.full else 100_000):
            times = run_blocks(page, args.full, report=lambda b, s: print(f"  line {b.line}: {s:.1f} s", flush=True))
        seconds = sum(s for _, s in times if s >= 0)
        skipped = [b.line for b, s in times if s < 0]
        total += seconds
        print(f"{rel(page)}: {seconds:.1f} s" + (f" ({len(skipped)} block(s) not run: lines {skipped})"
                                                  if skipped else ""), flush=True)
    if len(args.pages) > 1:
        print(f"all pages: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
