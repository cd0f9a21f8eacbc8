"""Docs that cannot rot: every Python block of the site's pages runs, every `tinygpt ...` command in README.md and
docs/ parses with the real parser, every relative link resolves, every source() include finds its code, and the
site builds with `mkdocs build --strict`, offline. The conventions are in tests/docs_blocks.py's docstring; each
check is also shown to fail on a page made to break it."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from docs_blocks import (DOCS, ROOT, ConventionError, command_errors, commands, link_errors, page_place,
                         pages_with_code, python_blocks, rel, run_blocks, site_pages, split_command,
                         write_stand_ins)


def _hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}_hook", DOCS / f"hooks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as MkDocs loads a hook (its dataclass needs the module registered)
    spec.loader.exec_module(module)
    return module


source_hook, nav_hook = _hook("source"), _hook("nav")
MARKDOWN = [ROOT / "README.md", *site_pages()]


def _ids(paths):
    return [rel(p) for p in paths]


# --- Python blocks ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory) -> Path:
    """A corpus cache with stand-ins for every named corpus, made once and copied for each page."""
    cache = tmp_path_factory.mktemp("docs-cache")
    write_stand_ins(cache, 100_000)
    return cache


@pytest.mark.parametrize("page", pages_with_code(), ids=_ids(pages_with_code()))
def test_python_blocks_follow_the_conventions(page):
    """Quick: each block compiles (with its test budgets), each `# test:` line and no-test comment is well formed."""
    for block in python_blocks(page):
        compile(block.source(), rel(page), "exec")
        compile(block.source(full=True), rel(page), "exec")


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_code(), ids=_ids(pages_with_code()))
def test_python_blocks_run(page, stand_ins, capsys):
    if not any(not b.skip for b in python_blocks(page)):
        pytest.skip("no Python block to run")
    with page_place(stand_ins=stand_ins):
        run_blocks(page)
    out, err = capsys.readouterr()
    assert len(out) + len(err) < 50_000, f"{rel(page)} prints {len(out) + len(err):,} characters: show long " \
        "outputs in ```text blocks, not from the code"


# --- commands --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", MARKDOWN, ids=_ids(MARKDOWN))
def test_commands_parse(page):
    errors = command_errors(page)
    assert not errors, "commands the parser refuses:\n" + "\n".join(errors)


def test_commands_are_found():
    """The command finder sees the README's commands: blocks, continued lines and inline spans."""
    found = commands(ROOT / "README.md")
    assert any(not c.inline for c in found) and any(c.inline for c in found)
    assert len(found) > 10


def test_shell_lines_are_split_as_a_shell_would():
    assert split_command('tinygpt sample runs/a --prompt "x | y" | tinygpt chat runs/b > out.txt 2>&1') == \
        [["sample", "runs/a", "--prompt", "x | y"], ["chat", "runs/b"]]
    assert split_command("TINYGPT_API_KEY=k .venv/bin/tinygpt serve RUN [RUN ...]  # two runs") == \
        [["serve", "RUN", "RUN"]]
    assert split_command("torchrun --standalone --nproc_per_node=4 -m tinygpt train --fsdp --out r ...") == \
        [["train", "--fsdp", "--out", "r"]]
    assert split_command("cd runs && python -m tinygpt eval a 2> err.txt; ls") == [["eval", "a"]]
    assert split_command("pip install 'tinygpt[viz]'") == []


def test_a_wrong_command_is_reported_with_its_line(tmp_path):
    page = tmp_path / "bad.md"
    page.write_text("# Bad\n\nRun `tinygpt sample RUN --temprature 0.5`, then:\n\n```bash\n"
                    "$ tinygpt train --data x \\\n    --out runs/x --no_such_flag 3\n"
                    "tinygpt frobnicate runs/x\ntinygpt inspect attention/nonsense RUN --prompt x\n"
                    "tinygpt train --data x\n```\n\n`tinygpt train` and `tinygpt COMMAND --help` are fine inline.\n",
                    encoding="utf-8")
    errors = command_errors(page)
    assert len(errors) == 5, errors
    assert re.search(r"bad.md:3: .*unknown option --temprature \(did you mean --temperature\?\)", errors[0])
    assert re.search(r"bad.md:6: .*unknown option --no_such_flag", errors[1])
    assert "bad.md:8:" in errors[2] and "frobnicate" in errors[2]
    assert "bad.md:9:" in errors[3] and "nonsense" in errors[3]
    assert "bad.md:10:" in errors[4] and "--out" in errors[4]  # a line in a block gives every required argument


def test_alternatives_and_placeholders_are_understood(tmp_path):
    page = tmp_path / "ok.md"
    page.write_text("`tinygpt inspect attention/animate/steps/logit-lens/saliency/report RUN --prompt X`, "
                    "`tinygpt tokenizer train/encode/export/stats`, `tinygpt train ... --tensorboard`,\n"
                    "`tinygpt train --out runs/baby --resume [--max_iters=4000]` and `tinygpt CMD --help`.\n",
                    encoding="utf-8")
    assert command_errors(page) == []


# --- links -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", MARKDOWN, ids=_ids(MARKDOWN))
def test_links_resolve(page):
    errors = link_errors(page)
    assert not errors, "broken links:\n" + "\n".join(errors)


def test_a_broken_link_is_reported(tmp_path, monkeypatch):
    import docs_blocks

    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "img").mkdir()
    (docs / "img/a.png").write_bytes(b"")
    (docs / "guides/train.md").write_text("# Train\n\n## Resume a run\n\n## Resume a run\n", encoding="utf-8")
    (tmp_path / "tinygpt").mkdir()
    (tmp_path / "tinygpt/gpt.py").write_text("", encoding="utf-8")
    page = docs / "guides/chat.md"
    page.write_text("# Chat\n\n"
                    "[ok](train.md#resume-a-run) ![ok](../img/a.png) [ok](https://example.com/x) [ok](#chat)\n"
                    "[gone](train.md#resume) [gone](tran.md) [repeated](train.md#resume-a-run-1)\n"
                    "<img src=\"../img/b.png\">\n"
                    "[outside](../../tinygpt/gpt.py) [folder](../img) `[in code](nowhere.md)`\n\n"
                    "```markdown\n[in a block](nowhere.md)\n```\n", encoding="utf-8")
    monkeypatch.setattr(docs_blocks, "ROOT", tmp_path)
    monkeypatch.setattr(docs_blocks, "DOCS", docs)
    errors = link_errors(page)
    assert [e.split(": link ")[0] for e in errors] == ["docs/guides/chat.md:4"] * 3 + ["docs/guides/chat.md:5"] + \
        ["docs/guides/chat.md:6"] * 2, errors
    assert "#resume" in errors[0] and "closest: resume-a-run" in errors[0]
    assert "no such file" in errors[1] and "resume-a-run-1" in errors[2]  # GitHub's id, not the site's (_1)
    assert "no such file" in errors[3] and "outside docs/" in errors[4] and "a folder" in errors[5]


def test_heading_ids_are_githubs_and_the_sites():
    """The checker's rule is GitHub's, and the site's (mkdocs.yml's slugify) gives the same ids."""
    from docs_blocks import slug

    cases = {"Serve: a playground in the browser, and an OpenAI-compatible API":
             "serve-a-playground-in-the-browser-and-an-openai-compatible-api",
             "2026-11-21 — CPU précision, `init_from` (target ≤ 1.89)":
             "2026-11-21--cpu-précision-init_from-target--189"}
    for title, expected in cases.items():
        assert slug(title.replace("`", "")) == expected
    pymdownx = pytest.importorskip("pymdownx.slugs")
    site = pymdownx.slugify(case="lower")
    for title, expected in cases.items():
        assert site(title.replace("`", ""), "-") == expected


# --- source() includes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", MARKDOWN, ids=_ids(MARKDOWN))
def test_source_includes_resolve(page):
    source_hook.expand(page.read_text(encoding="utf-8"), ROOT, rel(page))  # raises, naming page:line


def test_a_source_include_is_the_exact_lines():
    snippet = source_hook.find_source(ROOT, "tinygpt/training/signals.py", "StopFlag.__enter__")
    lines = (ROOT / "tinygpt/training/signals.py").read_text(encoding="utf-8").splitlines()
    assert lines[snippet.start - 1].strip().startswith("def __enter__")
    assert snippet.code.splitlines()[0].startswith("def __enter__")  # dedented
    assert snippet.title == f"tinygpt/training/signals.py · StopFlag.__enter__ (lines {snippet.start}–{snippet.end})"
    page = 'Text\n\n- item\n\n    {{ source("tinygpt/training/signals.py", "StopFlag") }}\n\n' \
           '```\n{{ source("in/a/block.py") }}\n```\n'
    out = source_hook.expand(page, ROOT)
    assert '    ```python title="tinygpt/training/signals.py · StopFlag (lines' in out
    assert '    class StopFlag:' in out and '{{ source("in/a/block.py") }}' in out  # blocks are left alone
    decorated = source_hook.find_source(ROOT, "tinygpt/config.py", "ModelConfig")
    assert decorated.code.startswith("@dataclass")  # decorators included
    whole = source_hook.find_source(ROOT, "tinygpt/version.py")
    assert whole.start == 1 and whole.name is None


def test_a_bad_source_include_fails_with_a_clear_message():
    with pytest.raises(source_hook.SourceError, match=r"learn/x.md:3: source\(\): no 'forwrd' in GPT "
                                                      r"\(it defines: .*forward"):
        source_hook.expand('a\n\n{{ source("tinygpt/models/gpt.py", "GPT.forwrd") }}\n', ROOT, "learn/x.md")
    with pytest.raises(source_hook.SourceError, match="no file 'tinygpt/nothing.py'"):
        source_hook.find_source(ROOT, "tinygpt/nothing.py", "x")
    with pytest.raises(source_hook.SourceError, match="no file"):
        source_hook.find_source(ROOT, "../../etc/passwd")


# --- the Python block conventions fail loudly ------------------------------------------------------------------

def test_budgets_skips_and_failures(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# P\n\n```python\nSTEPS = 1000  # test: 3\nseen = []\n```\n\n"
                    "<!-- no-test: needs a GPU -->\n```python\nraise SystemExit('never run')\n```\n\n"
                    "```python title=\"more\"\nseen.append(STEPS)\nprint(seen)\n```\n", encoding="utf-8")
    with page_place() as work:
        times = run_blocks(page)
        assert Path.cwd() == work and (Path(os.environ["TINYGPT_CACHE"]) / "corpora/tinyshakespeare.txt").is_file()
    assert [s < 0 for _, s in times] == [False, True, False]
    assert capsys.readouterr().out == "[3]\n"
    with page_place():
        run_blocks(page, full=True)
    assert capsys.readouterr().out == "[1000]\n"
    page.write_text("# P\n\n```python\nx = 1\n\n\n1 / 0\n```\n", encoding="utf-8")
    with pytest.raises(ZeroDivisionError) as e, page_place():
        run_blocks(page)
    frames = traceback.extract_tb(e.value.__traceback__)
    assert frames[-1].filename.endswith("page.md") and frames[-1].lineno == 7  # the page's own line


@pytest.mark.parametrize("text, message", [
    ("<!-- no-test: -->\n```python\npass\n```\n", "needs a reason"),
    ("<!-- no-test: slow -->\n\n```python\npass\n```\n", "just before a fence"),
    ("```python\nmodel.train(steps=100)  # test: 2\n```\n", "`# test:` belongs on a line"),
])
def test_a_convention_broken_is_an_error(tmp_path, text, message):
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    with pytest.raises(ConventionError, match=message):
        python_blocks(page)


def test_the_home_page_has_the_readmes_set_up_commands():
    def bash(path):
        return re.findall(r"```bash\n(python3 -m venv .*?)\n```", path.read_text(encoding="utf-8"))

    assert bash(ROOT / "README.md")[:2] == bash(DOCS / "index.md")


def test_nav_patterns_take_the_pages_nobody_named():
    nav = [{"Home": "index.md"}, {"Learn": ["learn/index.md", "learn/[0-9]*.md", "learn/*.md"]},
           {"Guides": ["guides/train.md", "guides/*.md"]}, {"Lab notebook": "LOG.md"}]
    pages = ["index.md", "LOG.md", "learn/index.md", "learn/02-b.md", "learn/01-a.md", "learn/glossary.md",
             "guides/train.md", "guides/chat.md", "guides/data.md"]
    assert nav_hook.expand_nav(nav, pages) == [
        {"Home": "index.md"}, {"Learn": ["learn/index.md", "learn/01-a.md", "learn/02-b.md", "learn/glossary.md"]},
        {"Guides": ["guides/train.md", "guides/chat.md", "guides/data.md"]}, {"Lab notebook": "LOG.md"}]


# --- the site ---------------------------------------------------------------------------------------------------

FETCHED = re.compile(r"""(<(?:script|img|iframe|source|audio|video)\b[^>]*\ssrc=["']?(?:https?:)?//"""
                     r"""|<link\b[^>]*\shref=["']?(?:https?:)?//|@import\s+(?:url\()?["']?(?:https?:)?//"""
                     r"""|url\(["']?(?:https?:)?//|fonts\.googleapis|fonts\.gstatic)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built with `mkdocs build --strict` (when the docs extra is installed)."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs the docs extra (pip install -e '.[docs]'): {module} is missing")
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


@pytest.mark.slow
def test_the_site_builds_strict_and_offline(site):
    assert (site / "index.html").is_file() and (site / "reference/index.html").is_file()
    fetched = [f"{p.relative_to(site)}: {m.group(0)}" for p in site.rglob("*")
               if p.suffix in (".html", ".css") for m in FETCHED.finditer(p.read_text(encoding="utf-8"))]
    assert not fetched, "the site fetches from the network:\n" + "\n".join(fetched[:20])
    api = (site / "reference/index.html").read_text(encoding="utf-8")
    import tinygpt
    missing = [n for n in tinygpt.__all__ if n != "__version__" and f'id="tinygpt.{n}"' not in api]
    assert not missing, f"the API reference lacks {missing}"


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_the_site_shows_in_a_browser_without_the_network(site):
    """Served from this machine, the home page, a page with included source and the API reference load, with
    every request that leaves the site refused and counted, and the search finds a page."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    outside, errors = [], []
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()

            def route(r):
                if r.request.url.startswith(base):
                    r.continue_()
                else:
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            for path in ("", "reference/", "reference/cli/", "LOG/"):
                assert page.goto(base + path, wait_until="networkidle").ok, path
            page.keyboard.press("s")
            page.keyboard.type("tokenizer")
            page.wait_for_selector(".md-search-result__item", timeout=10_000)
            browser.close()
    finally:
        server.shutdown()
    assert not outside, f"requests that left the site: {outside}"
    assert not errors, errors
