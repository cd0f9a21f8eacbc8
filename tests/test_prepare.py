"""Prepared data (tinygpt prepare): the same ids as TextData.from_text, whatever the pieces and the workers;
places to cut that change no id; the fast chunk finder and array encoders equal their references; sources
(folders, JSONL, Parquet) and their one-line errors; training from a prepared directory and from the cache;
nothing complete-looking left by an interrupted preparation."""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import string
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_FLAGS
from faultkit import error_line, only_line
import tinygpt.data.prepare as prep
import tinygpt.data.prepared_cache as prep_cache
from tinygpt.data.text import DataError, TextData, read_text, split_text, text_digest
from tinygpt.data.prepare import _pieces, is_prepared, open_prepared, prepare, prepared_tokenizer, read_meta
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer, load_tokenizer
from tinygpt.tokenizers.ascii_pattern import chunks_by_stretch
from tinygpt.tokenizers.bpe import pretokenize as reference_chunks

WORDS = ["the", "king", "queen", "don't", "we'll", "crown", "1599", "42", "café", "naïve", "日本語", "😀", "--", "?!",
         "O", "I", "it's", "'tis", "x"]
GAPS = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n", "\r\n", "\n ", "   ", ", ", ". ", "\u00a0", "\u3000", ""]


def mixed_text(n_words: int, seed: int = 0) -> str:
    """Words, numbers, contractions, non-ASCII and emoji between every kind of whitespace run."""
    rng = random.Random(seed)
    return "".join(rng.choice(WORDS) + rng.choice(GAPS) for _ in range(n_words))


@pytest.fixture(scope="module")
def text() -> str:
    return mixed_text(6000)


@pytest.fixture(scope="module")
def short() -> str:
    """A text for training runs: their evaluations read all of its validation split."""
    return mixed_text(1500, seed=5)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE", str(tmp_path / "cache"))


def reference(text: str, tok, block_size: int = 8, val_fraction: float = 0.1) -> TextData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TextData.from_text(text, tok, block_size, val_fraction)


def assert_same(a: TextData, b: TextData) -> None:
    assert a.train.dtype == b.train.dtype and a.val.dtype == b.val.dtype
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.chars == b.chars and a.bytes == b.bytes


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# --- the fast path equals the reference path ------------------------------------------------------

@pytest.mark.parametrize("kind, workers", [("char", 1), ("char", 2), ("bpe", 1), ("bpe", 2)])
def test_prepared_ids_equal_textdata(tmp_path, text, kind, workers):
    """Small pieces (many cuts) and several processes give TextData.from_text's arrays exactly."""
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    meta = prepare(tmp_path / "t.txt", tmp_path / "d", kind, 300 if kind == "bpe" else None, workers=workers,
                   piece_chars=997, val_fraction=0.15)
    tok = prepared_tokenizer(tmp_path / "d")
    train_text = split_text(text, 0.15)[0]
    assert tok == (CharTokenizer.train(train_text) if kind == "char" else ByteBPETokenizer.train(train_text, 300))
    assert_same(open_prepared(tmp_path / "d", 8), reference(text, tok, val_fraction=0.15))
    assert meta["text"]["sha256"][:16] == text_digest(text) == prep.fingerprint(read_meta(tmp_path / "d"))
    raw = (tmp_path / "t.txt").read_bytes()
    assert meta["sources"] == [{"path": str((tmp_path / "t.txt").resolve()), "bytes": len(raw),
                                "sha256": hashlib.sha256(raw).hexdigest()}]
    assert meta["dtype"] == "uint16" and meta["tokens"]["train"] == (tmp_path / "d/train.bin").stat().st_size // 2


def test_a_vocabulary_over_65536_is_stored_as_uint32(tmp_path):
    rng = random.Random(0)
    text = "".join(chr(0x10000 + rng.randrange(70_000)) for _ in range(400_000))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    meta = prepare(tmp_path / "t.txt", tmp_path / "d", "char", workers=1, piece_chars=50_000)
    tok = prepared_tokenizer(tmp_path / "d")
    assert tok.vocab_size > 1 << 16 and meta["dtype"] == "uint32"
    assert_same(open_prepared(tmp_path / "d", 8), reference(text, tok))


def test_a_given_tokenizer_and_the_gpt4_pattern(tmp_path, text):
    tok = ByteBPETokenizer.train(text[:20000], 400, pattern="gpt4")
    tok.save(tmp_path / "tok.json")
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    prepare(tmp_path / "t.txt", tmp_path / "d", str(tmp_path / "tok.json"), piece_chars=500, workers=1)
    assert prepared_tokenizer(tmp_path / "d") == tok
    assert_same(open_prepared(tmp_path / "d", 8), reference(text, tok))


@pytest.fixture(scope="module")
def bpe(text) -> dict[str, ByteBPETokenizer]:
    return {p: ByteBPETokenizer.train(text[:30000], 350, pattern=p) for p in ("gpt2", "gpt4")}


TRICKY = list(" \t\n\r\x0b\x0c\x1c\x85\u00a0\u2028\u3000'sdtlvrmeSLXy09²٣.,!-_éß中😀") + ["'ll", "'ve", "\r\n", "  "]


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(TRICKY), min_size=2, max_size=40).map("".join),
       before=st.lists(st.sampled_from(TRICKY), max_size=4).map("".join),
       after=st.lists(st.sampled_from(TRICKY), max_size=4).map("".join),
       near=st.integers(0, 40), pattern=st.sampled_from(["gpt2", "gpt4"]))
def test_cutting_where_bpe_allows_changes_no_id(bpe, text, before, after, near, pattern):
    tok = bpe[pattern]
    p = tok.cut(text, near)
    if p is not None:
        assert 0 < p < len(text)
        assert tok.encode(before + text[:p]) + tok.encode(text[p:] + after) == tok.encode(before + text + after)


def test_where_bpe_cuts():
    tok = ByteBPETokenizer()
    assert tok.cut("ab cd ef", 4) == 2  # before the space that follows "b": the last at or before 4
    assert tok.cut("ab cd ef", 5) == 5
    assert tok.cut("ab  cd", 1) == 2 and tok.cut("ab\ncd", 1) == 3  # after a newline between non-spaces
    assert tok.cut("ab\n\ncd", 3) is None and tok.cut("abcd", 2) is None  # runs of whitespace, no space at all
    assert ByteBPETokenizer(pattern=r"\w+|\W").cut("ab cd", 2) is None  # a custom pattern: nothing is known
    assert CharTokenizer.train("abc").cut("abc", 0) == 1 and CharTokenizer.train("abc").cut("a", 0) is None


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(TRICKY + list(string.printable)), max_size=80).map("".join),
       pattern=st.sampled_from(["gpt2", "gpt4"]))
def test_fast_chunks_equal_the_regex_chunks(bpe, text, pattern):
    tok = bpe[pattern]
    assert tok.chunks(text) == reference_chunks(tok._split_re, text, True)
    if not text.isascii():
        assert chunks_by_stretch(text, tok._split_re, tok._ascii_re) == reference_chunks(tok._split_re, text, True)


def test_fast_chunks_on_every_character():
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    sparse = mixed_text(3000, seed=3).replace("café", "cafe").replace("naïve", "naive")
    for pattern in ("gpt2", "gpt4"):
        tok = ByteBPETokenizer(pattern=pattern)
        assert tok.chunks(every) == reference_chunks(tok._split_re, every, True)
        assert chunks_by_stretch(every, tok._split_re, tok._ascii_re) == reference_chunks(tok._split_re, every, True)
        assert tok.chunks(sparse) == reference_chunks(tok._split_re, sparse, True)


def test_array_encoders_equal_encode(bpe, text):
    char = CharTokenizer.train(text[:5000])
    for t in (text, text.encode("ascii", "ignore").decode(), "", "zzz\u2603 unseen \U0001F600"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert char.encode_array(t).tolist() == char.encode(t)
        assert bpe["gpt2"].encode_array(t).tolist() == bpe["gpt2"].encode(t)
    with pytest.warns(UserWarning, match="not in the vocabulary"):
        CharTokenizer.train("ab").encode_array("abc")


def test_pieces_end_only_where_allowed_and_at_the_split():
    text = "aaaa|bbbbbbbbbbbbbbbbbbbb|cc|dddddd"
    cut = lambda t, near: (lambda i: None if i < 0 else i + 1)(t.rfind("|", 0, near)) \
        if t.rfind("|", 0, near) >= 0 else (lambda i: None if i < 0 else i + 1)(t.find("|", near))  # noqa: E731
    blocks = [text[i:i + 3] for i in range(0, len(text), 3)]
    pieces = list(_pieces(blocks, 30, 4, cut))
    assert "".join(p for _, p in pieces) == text
    assert [s for s, _ in pieces] == ["train"] * (len(pieces) - 1) + ["val"]
    assert "".join(p for s, p in pieces if s == "val") == text[30:]
    assert all(p.endswith("|") for s, p in pieces[:-2])  # every cut inside a split is one `cut` allowed
    never = list(_pieces(blocks, 30, 4, lambda t, near: None))
    assert [p for _, p in never] == [text[:30], text[30:]]


# --- sources ---------------------------------------------------------------------------------------

def write_jsonl(path: Path, records: list, extra: str = "") -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) + extra, encoding="utf-8")


def test_a_folder_is_its_documents_joined_by_newlines(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("\ufeffsecond file\n", encoding="utf-8")
    write_jsonl(folder / "a.jsonl", [{"text": "doc one", "id": 1}, {"text": "doc\ntwo"}], extra="\n  \n")
    (folder / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (folder / "notes.md").write_text("not read", encoding="utf-8")
    assert read_text(folder) == "doc one\ndoc\ntwo\nsecond file\n\nthird"
    write_jsonl(tmp_path / "other.jsonl", [{"body": "x y"}, {"body": "z"}])
    assert read_text(tmp_path / "other.jsonl", text_field="body") == "x y\nz"


def test_prepare_a_folder_and_a_jsonl_field(tmp_path, text):
    folder = tmp_path / "corpus"
    folder.mkdir()
    docs = text.split("\n\n")
    write_jsonl(folder / "a.jsonl", [{"content": d} for d in docs[:len(docs) // 2]])
    (folder / "b.txt").write_text("\n\n".join(docs[len(docs) // 2:]), encoding="utf-8")
    prepare(folder, tmp_path / "d", "bpe", 300, text_field="content", piece_chars=700, workers=1)
    joined = "\n".join(docs[:len(docs) // 2]) + "\n" + "\n\n".join(docs[len(docs) // 2:])
    tok = prepared_tokenizer(tmp_path / "d")
    assert tok == ByteBPETokenizer.train(split_text(joined, 0.1)[0], 300)
    assert_same(open_prepared(tmp_path / "d", 8), reference(joined, tok))
    assert [s["path"] for s in read_meta(tmp_path / "d")["sources"]] == [str((folder / n).resolve())
                                                                        for n in ("a.jsonl", "b.txt")]


def test_parquet(tmp_path, text):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    docs = text.split("\n\n")
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}), tmp_path / "t.parquet", row_group_size=50)
    assert read_text(tmp_path / "t.parquet") == "\n".join(docs)
    prepare(tmp_path / "t.parquet", tmp_path / "d", "char", piece_chars=600, workers=2)
    tok = prepared_tokenizer(tmp_path / "d")
    assert_same(open_prepared(tmp_path / "d", 8), reference("\n".join(docs), tok))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(DataError, match="row 2"):
        read_text(tmp_path / "null.parquet")


def test_parquet_without_pyarrow_is_one_line(tmp_path, cli, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    code, _, err = cli("prepare", "--data", tmp_path / "t.parquet", "--out", tmp_path / "d")
    assert code == 2 and "needs pyarrow: pip install 'tinygpt[parquet]'" in only_line(err)


BAD = {  # file name, content, words of the one error line
    "missing": (None, None, "data file not found"),
    "binary": ("b.txt", b"ab\x00cd" * 10, "looks binary"),
    "not-utf8": ("l.txt", "café au lait\n".encode("latin-1"), "not valid UTF-8 (bad byte at offset 3)"),
    "empty": ("e.txt", b" \n\n", "is empty"),
    "bad-json": ("x.jsonl", b'{"text": "a"}\n\n{"text": "b",}\n', "line 3 is not valid JSON"),
    "no-field": ("x.jsonl", b'{"text": "a"}\n{"body": "b"}\n', "line 2 has no 'text' field"),
    "not-a-string": ("x.jsonl", b'{"text": 7}\n', "line 1: the 'text' field is int, not a string"),
    "not-an-object": ("x.jsonl", b'["text"]\n', "line 1 is not a JSON object"),
    "empty-folder": ("folder", None, "holds no .txt, .jsonl or .parquet files"),
    "conversations": ("convs.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n',
                      'holds conversations (a "messages" list per line), which are not prepared: training reads them '
                      'as they are (--data '),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, cli, case):
    name, content, words = BAD[case]
    data = tmp_path / "in" / (name if name is not None else "nope.txt")
    data.parent.mkdir()
    if content is not None:
        data.write_bytes(content)
    elif name == "folder":
        data.mkdir()
        (data / "readme.md").write_text("no text here")
    code, _, err = cli("prepare", "--data", data, "--out", tmp_path / "out" / "d")
    assert code == 2 and words in only_line(err), err
    assert not (tmp_path / "out").exists() or (not (tmp_path / "out" / "d").exists() and no_leftovers(tmp_path / "out"))


def test_help_says_what_bpe_learns_from(cli):
    code, out, _ = cli("prepare", "--help")
    assert code == 0 and out.startswith("usage: tinygpt prepare ")
    assert f"up to {prep.BPE_SAMPLE_CHARS >> 20} Mi characters" in " ".join(out.split())


def test_prepare_refuses_an_existing_out_and_bad_settings(tmp_path, cli, text):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    code, _, err = cli("prepare", "--data", tmp_path / "t.txt", "--out", tmp_path / "d")
    assert code == 2 and "already exists" in only_line(err) and (tmp_path / "d/keep.txt").read_text() == "mine"
    for flags, words in ((["--vocab_size", "500"], "--vocab_size applies to BPE"),
                         (["--tokenizer", "bpe", "--vocab_size", "100"], "must be > 256"),
                         (["--val_fraction", "1.5"], "val_fraction must be in (0, 1)")):
        code, _, err = cli("prepare", "--data", tmp_path / "t.txt", "--out", tmp_path / "e", *flags)
        assert code == 2 and words in only_line(err) and not (tmp_path / "e").exists()


# --- atomicity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, workers, error", [(CharTokenizer, 1, KeyboardInterrupt),
                                                 (ByteBPETokenizer, 2, RuntimeError)])
def test_an_interrupted_prepare_leaves_nothing_complete_looking(tmp_path, monkeypatch, text, cls, workers, error):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    calls = []
    real = cls.encode_array

    def failing(self, piece):
        calls.append(piece)
        if len(calls) == 3:
            raise error("stopped in the middle")
        return real(self, piece)

    monkeypatch.setattr(cls, "encode_array", failing)  # forked workers inherit it: each fails on its third piece
    with pytest.raises(error):
        prepare(tmp_path / "t.txt", tmp_path / "d", cls.kind, 300 if cls.kind == "bpe" else None, workers=workers,
                piece_chars=500)
    assert not (tmp_path / "d").exists() and not is_prepared(tmp_path / "d") and no_leftovers(tmp_path)


def test_a_damaged_prepared_directory_is_one_line(tmp_path, cli, text):
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    prepare(tmp_path / "t.txt", tmp_path / "d", workers=1)
    with open(tmp_path / "d/val.bin", "r+b") as f:
        f.truncate(10)
    code, _, err = cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r", *TINY_FLAGS)
    assert code == 2 and "is damaged: val.bin has 10 bytes" in only_line(err)


def test_token_ids_beyond_the_vocabulary_are_one_line(tmp_path, cli, text):
    """A .bin of the right size whose ids were overwritten: training and exact evaluation say the data is damaged
    (no index error from inside the model), and the run trained before it stays intact."""
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    prepare(tmp_path / "t.txt", tmp_path / "d", workers=1)
    assert cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r", "--max_iters=2", *TINY_FLAGS)[0] == 0
    before = (tmp_path / "r/latest/model.safetensors").read_bytes()
    meta = read_meta(tmp_path / "d")
    for split in ("train", "val"):
        ids = np.memmap(tmp_path / f"d/{split}.bin", dtype=meta["dtype"], mode="r+")
        ids[:] = 60000  # every id: each batch and the whole split see one
        ids.flush()
        del ids
    code, _, err = cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r2", *TINY_FLAGS)
    assert code == 2 and error_line(err).startswith(f"error: prepared data {tmp_path / 'd'} is damaged: its train "
                                                    f"split holds token id 60000"), err
    assert not (tmp_path / "r2" / "latest").exists()  # the first batch: no checkpoint was written
    code, _, err = cli("eval", tmp_path / "r", "--data", tmp_path / "d", "--device=cpu")
    assert code == 2 and "is damaged: its val split holds token id 60000" in error_line(err), err
    assert (tmp_path / "r/latest/model.safetensors").read_bytes() == before


# --- training from prepared data ---------------------------------------------------------------------

def config(run: Path) -> dict:
    return json.loads((run / "latest" / "config.json").read_text())


def test_train_from_a_prepared_directory_resume_and_eval(tmp_path, cli, short):
    (tmp_path / "t.txt").write_text(short, encoding="utf-8")
    code, out, err = cli("prepare", "--data", tmp_path / "t.txt", "--out", tmp_path / "d", "--quiet")
    assert code == 0 and "training and" in out, err
    run = tmp_path / "run"
    code, _, err = cli("train", "--data", tmp_path / "d", "--out", run, "--max_iters=4", *TINY_FLAGS)
    assert code == 0, err
    assert f"the prepared directory {tmp_path / 'd'}" in err
    cfg = config(run)
    assert cfg["data"] == str((tmp_path / "d").resolve()) and cfg["data_sha256"] == text_digest(short)
    code, _, err = cli("train", "--out", run, "--resume", "--max_iters=6", "--quiet")
    assert code == 0 and config(run)["step"] == 6, err
    # the same loss, read from the prepared val.bin or encoded from the text
    code, from_dir, _ = cli("eval", run, "--json", "--device=cpu")
    code2, from_text, _ = cli("eval", run, "--json", "--device=cpu", "--data", tmp_path / "t.txt")
    a, b = json.loads(from_dir), json.loads(from_text)
    assert code == code2 == 0 and a["tokens"] == b["tokens"]
    for k in ("loss", "bits_per_char", "bits_per_byte"):
        assert a[k] == pytest.approx(b[k], rel=1e-6)
    # refused: another tokenizer, another split, other data on resume
    code, _, err = cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r2", "--tokenizer", "bpe", *TINY_FLAGS)
    assert code == 2 and "brings its own tokenizer" in only_line(err)
    code, _, err = cli("train", "--data", tmp_path / "d", "--out", tmp_path / "r2", "--val_fraction=0.2", *TINY_FLAGS)
    assert code == 2 and "prepared with val_fraction 0.1" in only_line(err)
    (tmp_path / "u.txt").write_text(mixed_text(1500, seed=9), encoding="utf-8")
    assert cli("prepare", "--data", tmp_path / "u.txt", "--out", tmp_path / "e", "--quiet")[0] == 0
    code, _, err = cli("train", "--out", run, "--resume", "--data", tmp_path / "e", "--max_iters=8", "--quiet")
    assert code == 2 and "is not the text this run was trained on" in err


def test_resume_from_text_onto_its_prepared_copy(tmp_path, cli, short):
    """A run trained on a text in memory resumes on the same text prepared: the fingerprints agree."""
    (tmp_path / "t.txt").write_text(short, encoding="utf-8")
    run = tmp_path / "run"
    assert cli("train", "--data", tmp_path / "t.txt", "--out", run, "--max_iters=2", *TINY_FLAGS)[0] == 0
    prepare(tmp_path / "t.txt", tmp_path / "d", load_tokenizer(run / "latest" / "tokenizer.json"), workers=1)
    code, _, err = cli("train", "--out", run, "--resume", "--data", tmp_path / "d", "--max_iters=4", "--quiet")
    assert code == 0 and "different data" not in err, err
    prepare(tmp_path / "t.txt", tmp_path / "other", "bpe", 300, workers=1)
    code, _, err = cli("train", "--out", run, "--resume", "--data", tmp_path / "other", "--max_iters=6", "--quiet")
    assert code == 2 and "prepared with another tokenizer" in only_line(err)


def test_a_large_text_is_prepared_once_into_the_cache(tmp_path, cli, text, monkeypatch):
    monkeypatch.setattr(prep_cache, "AUTO_PREPARE_BYTES", 1)  # every text counts as large
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    flags = ["--tokenizer", "bpe", "--vocab_size", "300", "--max_iters=2", *TINY_FLAGS]
    code, _, err = cli("train", "--data", tmp_path / "t.txt", "--out", tmp_path / "r1", *flags)
    assert code == 0 and "(made now, and cached)" in err, err
    entry = Path(config(tmp_path / "r1")["prepared"])
    assert is_prepared(entry) and entry.parent == tmp_path / "cache" / "prepared"

    def no(*args, **kwargs):
        raise AssertionError("the second start read the text again")

    monkeypatch.setattr(prep_cache, "scan", no)
    monkeypatch.setattr(prep_cache, "prepare", no)
    code, _, err = cli("train", "--data", tmp_path / "t.txt", "--out", tmp_path / "r2", *flags)
    assert code == 0 and f"read from its prepared copy {entry} (found in the cache)" in err, err
    cfg = config(tmp_path / "r2")
    assert cfg["data"] == str((tmp_path / "t.txt").resolve()) and cfg["data_sha256"] == text_digest(text)
    code, _, err = cli("train", "--out", tmp_path / "r2", "--resume", "--max_iters=3", "--quiet")
    assert code == 0 and "found in the cache" in err, err  # the run's own tokenizer finds the same entry
    tok = prepared_tokenizer(entry)
    assert_same(open_prepared(entry, 8), reference(text, tok))


def test_a_resumed_run_finds_its_cached_text_by_content_and_refuses_a_changed_one_unprepared(
        tmp_path, cli, text, monkeypatch):
    """A run begun on a large text with "char" resumes with the tokenizer it saved: after the file was touched or
    copied elsewhere the entry its start made is found by content, not prepared a second time. A changed text is
    refused (saying so) before any of it is prepared, and the cache is left as it was."""
    import os
    monkeypatch.setattr(prep_cache, "AUTO_PREPARE_BYTES", 1)
    src = tmp_path / "t.txt"
    src.write_text(text, encoding="utf-8")
    run = tmp_path / "r"
    code, _, err = cli("train", "--data", src, "--out", run, "--max_iters=2", *TINY_FLAGS)
    assert code == 0 and "(made now, and cached)" in err, err
    entry = Path(config(run)["prepared"])
    os.utime(src, ns=(1, 1))  # the same text, new stamps: only its content can find the entry
    shutil.copy(src, tmp_path / "copy.txt")

    def no(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(prep_cache, "prepare", no)
    for data, steps in ((src, 3), (tmp_path / "copy.txt", 4)):
        code, _, err = cli("train", "--out", run, "--resume", "--data", data, f"--max_iters={steps}", "--quiet")
        assert code == 0 and f"{entry} (found in the cache)" in err, err
    entries = sorted(p.name for p in entry.parent.iterdir())
    changed = tmp_path / "copy.txt"  # the run now records the copy as its data
    with open(changed, "a", encoding="utf-8") as f:
        f.write("one more line\n")
    code, _, err = cli("train", "--out", run, "--resume", "--data", changed, "--max_iters=5", "--quiet")
    assert code == 2 and only_line(err).startswith(f"error: {changed} has changed since this run was trained on it")
    code, _, err = cli("train", "--out", run, "--resume", "--data", src, "--max_iters=5", "--quiet")
    assert code == 0 and f"{entry} (found in the cache)" in err, err  # the unchanged original still resumes
    assert sorted(p.name for p in entry.parent.iterdir()) == entries


def test_training_characters_missing_from_a_given_tokenizer_are_reported(tmp_path, cli, monkeypatch):
    """A char tokenizer from elsewhere that lacks characters of the training text: `prepare` and `train` (in
    memory and through the cache) say how many became <unk> and which; the tokenizer built from the text never
    warns, though validation characters unseen in training are <unk> too."""
    base = "the cat sat on the mat. " * 200
    (tmp_path / "base.txt").write_text(base, encoding="utf-8")
    tok_file = tmp_path / "tok.json"
    CharTokenizer.train(base).save(tok_file)
    odd = ("\ufeff" + base[:2000] + "\r\n") * 4 + "ZQ" + base[:1000]  # BOM, CR, Z and Q are not in base
    (tmp_path / "odd.txt").write_text(odd, encoding="utf-8", newline="")
    train_part = split_text(odd[1:], 0.1)[0]  # the file's first character, a byte-order mark, is not text
    missing = "".join(sorted("\ufeff\r\nZQ"))  # base has no line breaks either
    n = sum(train_part.count(c) for c in missing)
    expected = "characters of the training text are not in the tokenizer's vocabulary and map to <unk>"
    code, _, err = cli("prepare", "--data", tmp_path / "odd.txt", "--out", tmp_path / "p", "--tokenizer", tok_file,
                       "--quiet")
    assert code == 0 and err.strip() == f"warning: {n:,} {expected}: {missing!r}", err
    assert read_meta(tmp_path / "p")["unknown"] == {"train_tokens": n, "chars": missing}
    code, _, err = cli("train", "--data", tmp_path / "odd.txt", "--out", tmp_path / "r", "--tokenizer", tok_file,
                       "--max_iters=1", *TINY_FLAGS)
    assert code == 0 and expected in err, err  # in memory
    monkeypatch.setattr(prep_cache, "AUTO_PREPARE_BYTES", 1)
    code, _, err = cli("train", "--data", tmp_path / "odd.txt", "--out", tmp_path / "r2", "--tokenizer", tok_file,
                       "--max_iters=1", *TINY_FLAGS)
    assert code == 0 and expected in err and "prepared copy" in err, err
    held_out = base[:3000] + "XYZ" * 40  # characters only in the validation split
    (tmp_path / "v.txt").write_text(held_out, encoding="utf-8")
    for args in (("prepare", "--data", tmp_path / "v.txt", "--out", tmp_path / "pv", "--quiet"),
                 ("train", "--data", tmp_path / "v.txt", "--out", tmp_path / "rv", "--max_iters=1", *TINY_FLAGS)):
        code, _, err = cli(*args)
        assert code == 0 and "warning" not in err, err


def test_a_damaged_cache_entry_says_how_to_recover_and_recovers(tmp_path, cli, text, monkeypatch):
    monkeypatch.setattr(prep_cache, "AUTO_PREPARE_BYTES", 1)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    args = ["train", "--data", tmp_path / "t.txt", "--max_iters=1", *TINY_FLAGS]
    assert cli(*args, "--out", tmp_path / "r1")[0] == 0
    entry = Path(config(tmp_path / "r1")["prepared"])
    with open(entry / "train.bin", "r+b") as f:
        f.truncate(10)
    code, _, err = cli(*args, "--out", tmp_path / "r2")
    assert code == 2 and error_line(err).endswith(f"(a copy in the cache: delete {entry} and the next start "
                                                  f"prepares {(tmp_path / 't.txt').resolve()} again)"), err
    shutil.rmtree(entry)
    code, _, err = cli(*args, "--out", tmp_path / "r2")
    assert code == 0 and f"{entry} (made now, and cached)" in err, err
    meta = read_meta(entry)
    ids = np.memmap(entry / "train.bin", dtype=meta["dtype"], mode="r+")
    ids[:] = meta["tokenizer"]["vocab_size"]  # the right size, ids one past the vocabulary
    ids.flush()
    del ids
    code, _, err = cli(*args, "--out", tmp_path / "r3")
    assert code == 2 and error_line(err).endswith(f"; delete {entry} and the next start prepares "
                                                  f"{(tmp_path / 't.txt').resolve()} again"), err
