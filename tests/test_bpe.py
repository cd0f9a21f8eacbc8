"""Tests of the byte-level BPE tokenizer: round trips, known answers, slow reference equivalence, persistence, CLI."""
from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.cli.tokenizer import add_tokenizer_parser
from tinygpt.tokenizers import ByteBPETokenizer, TokenizerError, bpe, chunk_cache, load_tokenizer
from tinygpt.tokenizers.ascii_pattern import ascii_pattern
from tinygpt.tokenizers.bpe import ENDOFTEXT, GPT2_PATTERN, GPT4_PATTERN
from tinygpt.tokenizers.stats import tokenizer_stats

WORDS = ("the quick brown fox jumps over lazy dog It's we'll they've I'm don't 12345 2024 3.14 hello HELLO "
         "naïve café 日本語 テキスト Ελληνικά русский 😀 🚀 👍🏽 \t \n \r\n , . ! ? -- ...").split(" ")


def make_corpus(n_words: int = 6000, seed: int = 0) -> str:
    """Seeded text: fixed words (many scripts, emoji, digits, whitespace runs) and made-up syllable words."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvwzq" for v in ("a", "e", "i", "o", "u", "ou", "ie", "é")]
    words = []
    for _ in range(n_words):
        if rng.random() < 0.4:
            word = rng.choice(WORDS)
        else:
            word = "".join(rng.choice(syllables[: rng.randint(10, len(syllables))]) for _ in range(rng.randint(1, 4)))
            word = word.capitalize() if rng.random() < 0.2 else word
        words.append(word + rng.choice(["", "", "", " ", "  ", "\n", "\n\n", ",", "."]))
    return " ".join(words)


CORPUS = make_corpus()
ROUND_TRIP_TOK = ByteBPETokenizer.train(CORPUS[:20000], 400, special_tokens=[ENDOFTEXT])
NO_SPLIT = r"[\s\S]+"  # one chunk for the whole text: merges may cross anything
ODD_TEXTS = [
    "", " ", "a", "hello world", "😀", "👩‍👩‍👧‍👦 family", "日本語とEnglishとрусский", "x\x00y\x01\x7f\x1b[31m",
    "\u200b\u200d\ufeff\u0301e", "\r\n\r\n   \t\n", "<|endoftext|>", "a" * 1000, "  leading and trailing  ",
]


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def tok(request) -> ByteBPETokenizer:
    return ByteBPETokenizer.train(CORPUS, 600, pattern=request.param, special_tokens=[ENDOFTEXT])


# --- slow obvious references (minbpe style) ------------------------------------------------------
def naive_train(text: str, n_merges: int, pattern: str) -> list[tuple[int, int]]:
    """Recount every pair after every merge; most frequent pair first, ties to the smallest pair."""
    chunks = [list(c.encode("utf-8")) for c in regex.findall(pattern, text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        stats: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                stats[pair] = stats.get(pair, 0) + 1
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        merges.append(pair)
        chunks = [bpe.merge_pair(ids, pair, new_id) for ids in chunks]
    return merges


def naive_encode(tok: ByteBPETokenizer, text: str) -> list[int]:
    """Apply every merge in training order to every chunk: the definition of BPE encoding."""
    ids = []
    for chunk in regex.findall(bpe.resolve_pattern(tok.pattern), text):
        chunk_ids = list(chunk.encode("utf-8"))
        for new_id, pair in enumerate(tok.merges, start=256):
            chunk_ids = bpe.merge_pair(chunk_ids, pair, new_id)
        ids.extend(chunk_ids)
    return ids


# --- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ODD_TEXTS)
def test_round_trip_odd_texts(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(text):
    tok = ROUND_TRIP_TOK
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text



def test_lone_surrogates_become_replacement_char(tok):
    assert tok.decode(tok.encode("a\ud800b\udfffc")) == "a\ufffdb\ufffdc"
    assert tok.decode(tok.encode("\ud83d\ude00")) == "😀"  # a valid pair is its character


def test_invalid_utf8_decodes_with_replacement(tok):
    assert tok.decode([0xFF]) == "\ufffd"
    assert tok.decode([ord("a"), 0xF0, 0x9F, ord("b")]) == "a\ufffdb"  # half an emoji
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(TokenizerError):
        tok.decode([-1])


def test_custom_pattern_that_skips_text_still_round_trips():
    tok = ByteBPETokenizer.train(CORPUS[:5000], 300, pattern=r"\w+")
    text = "héllo, wörld!! 😀 ok"
    assert tok.decode(tok.encode(text)) == text


# --- known answers ---------------------------------------------------------------------------------
def test_wikipedia_example():
    # https://en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac -> ZabdZabac -> ZYdZYac -> XdXac
    tok = ByteBPETokenizer.train("aaabdaaabac", 259, pattern=NO_SPLIT)
    Z, Y, X = 256, 257, 258
    assert tok.merges == [(ord("a"), ord("a")), (ord("a"), ord("b")), (Z, Y)]
    assert tok.encode("aaabdaaabac") == [X, ord("d"), X, ord("a"), ord("c")]
    assert [tok.id_to_piece(i) for i in (Z, Y, X)] == ["aa", "ab", "aaab"]


def test_ties_go_to_the_smallest_pair():
    # every pair of "abcd" occurs once: (a, b) first; then (c, d) = (99, 100) beats (ab, c) = (256, 99)
    tok = ByteBPETokenizer.train("abcd", 259, pattern=NO_SPLIT)
    assert tok.merges == [(97, 98), (99, 100), (256, 257)]


def test_training_depends_only_on_chunk_counts():
    lines = CORPUS.splitlines(keepends=True)
    a = ByteBPETokenizer.train(lines, 500)
    b = ByteBPETokenizer.train(list(reversed(lines)), 500)
    assert a.merges == b.merges


def test_training_stops_when_nothing_is_left_to_merge():
    tok = ByteBPETokenizer.train("ab ab", 1000)  # chunks "ab", " ab": merges ab, then " " + ab
    assert tok.merges == [(97, 98), (32, 256)] and tok.vocab_size == 258


# --- equivalence with the slow references ----------------------------------------------------------
@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN, NO_SPLIT])
def test_training_matches_naive_trainer(pattern):
    text = CORPUS[:4000] if pattern == NO_SPLIT else CORPUS[:15000]
    assert ByteBPETokenizer.train(text, 256 + 80, pattern=pattern).merges == naive_train(text, 80, pattern)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab c\n", max_size=80), st.integers(1, 12))
def test_training_matches_naive_trainer_on_repetitive_text(text, n_merges):
    # small alphabets make overlapping pairs (a a a, a b a b), the hard case for incremental updates
    for pattern in (NO_SPLIT, GPT2_PATTERN):
        fast = ByteBPETokenizer.train(text, 256 + n_merges, pattern=pattern)
        assert fast.merges == naive_train(text, n_merges, pattern)


def test_encode_matches_naive_encoder(tok):
    text = make_corpus(800, seed=1) + "unseen words: xylophone zebra 🦓 ÆØÅ"
    assert tok.encode(text) == naive_encode(tok, text)


def test_encode_after_cache_clears(tok, monkeypatch):
    monkeypatch.setattr(chunk_cache, "CACHE_LIMIT", 3)
    text = make_corpus(300, seed=2)
    fresh = ByteBPETokenizer.from_dict(tok.to_dict())
    texts = [text, text[:50], text]
    assert [fresh.encode(t) for t in texts] == [tok.encode(t) for t in texts]
    assert [fresh.encode_array(t).tolist() for t in texts] == [tok.encode(t) for t in texts]
    assert tok.encode_batch([text, "x"]) == [tok.encode(text), tok.encode("x")]



def test_chunk_caches_equal_encoding_every_chunk_afresh(tok):
    """chunk_cache.py against its reference: each chunk's ids computed anew (_encode_chunk), on misses and hits."""
    chunks = tok.chunks(make_corpus(200, seed=4) + " 🦓 ÆØÅ unseen")
    afresh = [i for c in chunks for i in tok._encode_chunk(c)]
    cache = chunk_cache.ChunkCache(tok._encode_chunk)
    packed = chunk_cache.PackedChunkCache(tok._encode_chunk, np.dtype(np.uint16))
    for _ in range(2):  # first misses, then hits
        assert cache.encode(chunks) == afresh and packed.encode_array(chunks).tolist() == afresh
    assert len(cache) == len(set(chunks)) and packed.encode_array(chunks).dtype == np.uint16


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_the_ascii_twins_of_the_known_patterns_find_regex_chunks(text):
    """ascii_pattern.py's translation: on ASCII text, `re` with the twin finds exactly what `regex` finds."""
    for source in (GPT2_PATTERN, GPT4_PATTERN):
        twin = ascii_pattern(source)
        if twin is not None:  # (None before Python 3.11 for GPT-4's possessive quantifiers)
            assert twin.findall(text) == regex.findall(source, text)


# --- special tokens --------------------------------------------------------------------------------
def test_special_token_policy(tok):
    eot = tok.special_ids[ENDOFTEXT]
    text = f"a{ENDOFTEXT}b"
    assert eot not in tok.encode(text)  # default "none": ordinary text
    assert tok.encode(text) == tok.encode_ordinary(text)
    assert tok.encode(text, allowed_special="all") == [ord("a"), eot, ord("b")]
    assert tok.encode(text, allowed_special={ENDOFTEXT}) == [ord("a"), eot, ord("b")]
    assert tok.decode([eot]) == ENDOFTEXT and tok.id_to_piece(eot) == ENDOFTEXT
    assert tok.encode("ab", allowed_special="none_raise") == tok.encode("ab")
    with pytest.raises(TokenizerError, match="special token"):
        tok.encode(text, allowed_special="none_raise")
    with pytest.raises(TokenizerError, match="allowed_special must be"):
        tok.encode(text, allowed_special="al")
    with pytest.raises(TokenizerError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_longest_special_wins_and_training_ignores_specials():
    specials = ["<|a|>", "<|a|><|b|>"]
    text = "x<|a|><|b|>y<|a|>" * 50
    tok = ByteBPETokenizer.train(text, 300, special_tokens=specials)
    ids = tok.special_ids
    assert tok.encode("<|a|><|b|><|a|>", allowed_special="all") == [ids["<|a|><|b|>"], ids["<|a|>"]]
    assert tok.merges == ByteBPETokenizer.train(["x", "y"] * 50, 300, special_tokens=specials).merges


# --- validation and persistence -----------------------------------------------------------------------
def test_bad_arguments():
    with pytest.raises(TokenizerError, match="below 256"):
        ByteBPETokenizer.train("abc", 256, special_tokens=[ENDOFTEXT])
    with pytest.raises(TokenizerError, match="bad split pattern"):
        ByteBPETokenizer.train("abc", 300, pattern="(unclosed")
    with pytest.raises(TokenizerError, match="unknown split pattern name 'gpt3'"):
        ByteBPETokenizer.train("abc", 300, pattern="gpt3")
    with pytest.raises(TokenizerError, match="capturing groups"):
        ByteBPETokenizer(pattern=r"(\w+)")
    with pytest.raises(TokenizerError, match="not yet defined"):
        ByteBPETokenizer([(97, 300)])


def test_save_load_same_ids(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, ByteBPETokenizer) and loaded == tok
    assert loaded.pattern == tok.pattern and loaded.vocab_size == tok.vocab_size == 600
    text = make_corpus(300, seed=3) + ENDOFTEXT
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_vocab_view(tok, tmp_path):
    tok.save_vocab(tmp_path / "vocab.txt")
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + tok.vocab_size
    assert lines[1 + 10] == "10\t[\\n]\tbyte 0x0a"
    a, b = tok.merges[0]
    piece = tok.id_to_piece
    assert lines[1 + 256] == f"256\t[{piece(256)}]\t[{piece(a)}] + [{piece(b)}]  ({a} + {b})"
    assert lines[-1].endswith("\tspecial")


def test_render_piece():
    assert bpe.render_piece(b" the") == " the"
    assert bpe.render_piece(b"\n\t\\") == "\\n\\t\\\\"
    assert bpe.render_piece(b"\xe2\x82") == "\\xe2\\x82"
    assert bpe.render_piece("é😀".encode()) == "é😀"


def test_stats(tok):
    s = tokenizer_stats(tok, CORPUS, top=3)
    assert s.n_bytes == len(CORPUS.encode()) and s.n_tokens == len(tok.encode(CORPUS))
    assert s.vocab_used == len(set(tok.encode(CORPUS))) and s.vocab_usage == s.vocab_used / 600
    assert len(s.longest) == 3 and s.longest[0][2] >= s.longest[-1][2]
    assert all(i < 256 + len(tok.merges) for i, _, _ in s.longest)  # special tokens are not learned tokens
    # the worked example: aaabdaaabac -> X d X a c with X = aaab (id 258)
    wiki = ByteBPETokenizer.train("aaabdaaabac", 259, pattern=NO_SPLIT)
    w = tokenizer_stats(wiki, "aaabdaaabac", top=3)
    assert (w.n_bytes, w.n_tokens, w.vocab_size, w.vocab_used) == (11, 5, 259, 4)
    assert w.bytes_per_token == 11 / 5 and w.vocab_usage == 4 / 259
    assert w.longest == [(258, "aaab", 4), (256, "aa", 2), (257, "ab", 2)]  # equal lengths: lower id first
    assert w.most_common[0] == (258, "aaab", 2) and sorted(c for _, _, c in w.most_common) == [1, 1, 2]


# --- CLI -----------------------------------------------------------------------------------------
def run_cli(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="tinygpt")
    add_tokenizer_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


@pytest.mark.parametrize("argv", [[], ["train"], ["encode"], ["export"], ["stats"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli("tokenizer", *argv, "--help")
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_cli_train_encode_export_stats(tmp_path, capsys):
    data, out = tmp_path / "data.txt", tmp_path / "tok.json"
    data.write_text(CORPUS, encoding="utf-8")
    run_cli("tokenizer", "train", "--data", str(data), "--vocab_size", "400", "--out", str(out),
            "--pattern", "gpt4", "--special", ENDOFTEXT, "--vocab_out", str(tmp_path / "vocab.txt"))
    tok = load_tokenizer(out)
    assert tok.vocab_size == 400 and tok.pattern == "gpt4" and (tmp_path / "vocab.txt").exists()
    run_cli("tokenizer", "encode", str(out), "--text", f"the fox{ENDOFTEXT}", "--allow_special")
    printed = capsys.readouterr().out
    assert " ".join(map(str, tok.encode(f"the fox{ENDOFTEXT}", allowed_special="all"))) in printed
    assert f"[{ENDOFTEXT}]" in printed and "[ fox]" in printed
    run_cli("tokenizer", "export", str(out), "--format", "tiktoken", "--out", str(tmp_path / "tok.tiktoken"))
    assert len((tmp_path / "tok.tiktoken").read_text().splitlines()) == 399
    sample = "the quick brown fox, naïve café 😀\n" * 40  # no \r: the count is the same however lines are read
    (tmp_path / "sample.txt").write_text(sample, encoding="utf-8")
    run_cli("tokenizer", "stats", str(out), "--data", str(tmp_path / "sample.txt"))
    n_bytes, n_tokens = len(sample.encode("utf-8")), len(tok.encode(sample))
    assert f"\n{n_bytes:,} bytes -> {n_tokens:,} tokens: {n_bytes / n_tokens:.3f} bytes per token\n" in \
        capsys.readouterr().out


def test_cli_errors(tmp_path):
    from tinygpt.data.text import DataError

    out = str(tmp_path / "x")
    data = tmp_path / "data.txt"
    data.write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="not found"):  # --data reads like train's: files, folders, corpora
        run_cli("tokenizer", "train", "--data", str(tmp_path / "missing.txt"), "--vocab_size", "300", "--out", out)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        run_cli("tokenizer", "train", "--data", str(tmp_path / "latin1.txt"), "--vocab_size", "300", "--out", out)
    with pytest.raises(TokenizerError, match="below 256"):
        run_cli("tokenizer", "train", "--data", str(data), "--vocab_size", "256", "--out", out, "--special", "<s>")
    with pytest.raises(TokenizerError, match="not found"):
        run_cli("tokenizer", "encode", str(tmp_path / "missing.json"), "--text", "hi")
    with pytest.raises(SystemExit):  # argparse rejects an unknown --format
        run_cli("tokenizer", "export", "tok.json", "--format", "onnx", "--out", out)
