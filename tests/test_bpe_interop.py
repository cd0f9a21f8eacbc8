"""Byte-level BPE interop: our ids equal Hugging Face tokenizers/transformers and tiktoken ids; GPT-2 file import."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.tokenizers import ByteBPETokenizer, TokenizerError, interop
from tinygpt.tokenizers.bpe import ENDOFTEXT


def make_corpus(n_words: int, seed: int) -> str:
    """Seeded text of made-up words, a few fixed words in several scripts, digits and whitespace runs."""
    rng = random.Random(seed)
    fixed = "It's we'll they've DON'T 2024 3.14159 naïve café 日本語 русский 😀 👍🏽 \t \r\n ... --".split(" ")
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ou", "é")]
    words = [rng.choice(fixed) if rng.random() < 0.3 else
             "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n_words)]
    return "".join(w + rng.choice([" ", " ", "  ", "\n", "\n\n", ", "]) for w in words)


CORPUS = make_corpus(6000, seed=0)
TEXTS = ["", " ", "😀", "👩‍👩‍👧‍👦 family", "日本語とEnglishとрусский", "x\x00y\x1b[31m", "\u200b\ufeff\u0301e",
         "\r\n\r\n   \t\n", ENDOFTEXT, "a" * 500, make_corpus(500, seed=7), f"one{ENDOFTEXT}two {ENDOFTEXT}\n",
         "It's  we'LL 123456 x\u00a0y"]
TIKTOKEN_CACHE: dict = {}  # pattern -> tiktoken.Encoding, built once for the hypothesis test


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def tok(request) -> ByteBPETokenizer:
    return ByteBPETokenizer.train(CORPUS, 700, pattern=request.param, special_tokens=[ENDOFTEXT])


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path_factory.mktemp("hf") / f"tokenizer_{tok.pattern}.json"
    interop.save_hf(tok, path)
    return tokenizers.Tokenizer.from_file(str(path)), path


def test_hf_tokenizers_same_ids(tok, hf_tok):
    hf, _ = hf_tok
    for text in TEXTS:
        ids = tok.encode(text, allowed_special="all")  # HF always recognises its special tokens
        assert hf.encode(text).ids == ids
        assert hf.decode(ids, skip_special_tokens=False) == text
    assert hf.get_vocab_size() == tok.vocab_size


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_hf_tokenizers_same_ids_any_text(tok, hf_tok, text):
    assert hf_tok[0].encode(text).ids == tok.encode(text, allowed_special="all")


def test_transformers_same_ids(tok, hf_tok):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_tok[1]))
    for text in TEXTS:
        assert fast.encode(text) == tok.encode(text, allowed_special="all")


def test_tiktoken_same_ids(tok, tmp_path, monkeypatch):
    pytest.importorskip("tiktoken")
    import tiktoken.load

    enc = interop.to_tiktoken(tok)
    for text in TEXTS:
        assert enc.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
        assert enc.encode_ordinary(text) == tok.encode(text)
    # the .tiktoken file reads back with tiktoken's own loader (cache off, so nothing is written elsewhere)
    interop.save_tiktoken(tok, tmp_path / "tok.tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    ranks = tiktoken.load.load_tiktoken_bpe(str(tmp_path / "tok.tiktoken"))
    assert ranks == interop.load_tiktoken_ranks(tmp_path / "tok.tiktoken") == interop.tiktoken_ranks(tok)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_tiktoken_same_ids_any_text(tok, text):
    tiktoken_enc = TIKTOKEN_CACHE.get(tok.pattern)
    if tiktoken_enc is None:
        pytest.importorskip("tiktoken")
        tiktoken_enc = TIKTOKEN_CACHE[tok.pattern] = interop.to_tiktoken(tok)
    assert tiktoken_enc.encode_ordinary(text) == tok.encode(text)



def test_duplicate_tokens_cannot_be_exported(tmp_path):
    tok = ByteBPETokenizer([(97, 97), (256, 97), (97, 256)])  # "aaa" made twice
    with pytest.raises(TokenizerError, match="same token"):
        interop.export(tok, "hf", tmp_path / "t.json")
    with pytest.raises(TokenizerError, match="unknown export format"):
        interop.export(tok, "onnx", tmp_path / "t.json")


# --- GPT-2 vocab.json + merges.txt -------------------------------------------------------------------
def write_gpt2_files(folder, merges: list[str]) -> None:
    """GPT-2 layout by hand: the 256 byte tokens in GPT-2's order, merge k -> 256 + k, <|endoftext|> last."""
    pieces = list(interop.bytes_to_unicode().values())
    for m in merges:
        pieces.append(m.replace(" ", ""))
    vocab = {p: i for i, p in enumerate(pieces + [ENDOFTEXT])}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


HAND_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "e r", "Ġ ð", "Ġð Ł"]


@pytest.mark.parametrize("source", ["hand", "trained"])
def test_gpt2_files_import_same_ids_as_hf(source, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    if source == "hand":
        write_gpt2_files(tmp_path, HAND_MERGES)
    else:
        interop.save_gpt2_files(ByteBPETokenizer.train(CORPUS, 600, special_tokens=[ENDOFTEXT]), tmp_path)
    ours = interop.load_gpt2_files(tmp_path)
    # from_pretrained on a local folder reads vocab.json + merges.txt (the constructor's arguments vary by version)
    gpt2_fast = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path), local_files_only=True)
    byte_level = tokenizers.ByteLevelBPETokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in TEXTS + ["the world, the weather 😀"]:
        assert gpt2_fast.encode(text) == ours.encode(text, allowed_special="all")
        assert byte_level.encode(text).ids == ours.encode(text)  # no special tokens registered there
        assert ours.decode(ours.encode(text)) == text
    assert ours.special_ids == {ENDOFTEXT: 256 + len(ours.merges)}


def test_gpt2_files_round_trip(tmp_path):
    write_gpt2_files(tmp_path, HAND_MERGES)
    ours = interop.load_gpt2_files(tmp_path)
    assert ours.byte_order[0] == ord("!")  # GPT-2's byte order is kept, and saved
    assert ByteBPETokenizer.from_dict(ours.to_dict()) == ours
    interop.save_gpt2_files(ours, tmp_path / "again")
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_gpt2_files_other_layout_is_refused(tmp_path):
    write_gpt2_files(tmp_path, HAND_MERGES)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    shifted = {p: (i + 1) % len(vocab) for p, i in vocab.items()}  # special token first, as some trainers write
    (tmp_path / "vocab.json").write_text(json.dumps(shifted), encoding="utf-8")
    with pytest.raises(TokenizerError, match="256 byte tokens"):
        interop.load_gpt2_files(tmp_path)
    with pytest.raises(TokenizerError, match="not found"):
        interop.load_gpt2_files(tmp_path / "nowhere")
