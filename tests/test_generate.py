"""The Decoder engine and the generation built on it: the window policy, cached ≡ uncached (greedy, sampled,
beams, across slides), end-of-sequence ids, stop strings, and beam search against brute force."""
import itertools

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generation.decoder import Decoder, keep_after_slide, prompt_start, slide
from tinygpt.generation.generate import (beam_search, beam_search_text, end_of_text_id, generate, generate_text,
                                         generate_tokens)
from tinygpt.models import GPT, BigramLM, build_model
from tinygpt.models.base import LanguageModel
from tinygpt.tokenizers import ByteBPETokenizer, CharTokenizer


def model(block=16, vocab=13, seed=0, layers=2):
    torch.manual_seed(seed)
    m = GPT(ModelConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.transformer.wte.weight.mul_(20)
    return m


# --- mock models whose logits are known ------------------------------------------------------------

class MockCache:
    """Remembers the tokens fed so far, per row; reorder keeps rows like KVCache.reorder."""

    def __init__(self, batch_size):
        self.tokens = torch.zeros(batch_size, 0, dtype=torch.long)

    def reorder(self, index):
        self.tokens = self.tokens[index]


class MockRowCache:
    """The batched engine's cache for WindowSum, like RowKVCache: a slot per row holding the tokens fed so far;
    point(write_at) says where each slot's next token goes (max_len: it sits the step out)."""

    def __init__(self, slots, max_len):
        self.tokens, self.max_len = [[] for _ in range(slots)], max_len

    @property
    def slots(self):
        return len(self.tokens)

    def point(self, write_at, keys=None):
        self.write_at = write_at.tolist()

    def first(self, n):
        view = MockRowCache(0, self.max_len)
        view.tokens = self.tokens[:n]  # the same lists: writes land in this cache
        return view

    def store(self, slots, cache):
        for s, row in zip(slots.tolist(), cache.tokens.tolist()):
            self.tokens[s][:] = row

    def copy_slot(self, src, dst):
        self.tokens[dst][:] = self.tokens[src]

    def grown(self, slots):
        bigger = MockRowCache(slots, self.max_len)
        for mine, theirs in zip(bigger.tokens, self.tokens):
            mine[:] = theirs
        return bigger


class WindowSum(LanguageModel):
    """Predicts (sum of the tokens it can see + how many) mod V, with certainty: any mistake in what the model
    is shown changes the answer. Records the length of every input it was given."""

    can_cache = True
    can_cache_rows = True

    def __init__(self, vocab=7, block=4):
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=1, n_embd=8)
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[int] = []

    @staticmethod
    def answer(context, vocab=7):
        return (sum(context) + len(context)) % vocab

    def new_cache(self, batch_size, device=None, dtype=None, max_len=None):
        return MockCache(batch_size)

    def new_row_cache(self, slots):
        return MockRowCache(slots, self.config.block_size)

    def forward(self, idx, targets=None, *, cache=None, capture=None):
        self._check_abilities(cache, capture)
        self.calls.append(idx.size(1))
        V = self.config.vocab_size
        if isinstance(cache, MockRowCache):  # one token per slot, each at its own position
            logits = torch.zeros(idx.size(0), 1, V)
            for i, (at, tok) in enumerate(zip(cache.write_at, idx[:, 0].tolist())):
                if at < cache.max_len:
                    assert len(cache.tokens[i]) >= at, "a slot was asked to skip a position"
                    cache.tokens[i][:] = cache.tokens[i][:at] + [tok]
                    logits[i, 0, self.answer(cache.tokens[i], V)] = 10.0
            return logits, None
        if cache is not None:
            cache.tokens = torch.cat([cache.tokens, idx], dim=1)
            idx = cache.tokens
        assert idx.size(1) <= self.config.block_size, "the model was shown more than its window"
        V = self.config.vocab_size
        logits = torch.zeros(idx.size(0), idx.size(1), V)
        nxt = (idx.sum(dim=1) + idx.size(1)) % V
        logits[torch.arange(idx.size(0)), -1, nxt] = 10.0
        return logits, None


class NoCacheWindowSum(WindowSum):
    can_cache = False
    can_cache_rows = False


def test_window_policy_known_answers():
    assert keep_after_slide(256) == 192 and keep_after_slide(4) == 3 and keep_after_slide(1) == 1
    assert prompt_start(20, 16) == 4 and prompt_start(3, 16) == 0
    assert slide(0, 16, 16) == 0 and slide(0, 17, 16) == 17 - 12


@pytest.mark.parametrize("use_cache", [True, False])
def test_decoder_windows_are_the_documented_policy_and_what_the_model_read(use_cache):
    m = WindowSum(block=4)
    dec = Decoder(m, [1, 2, 3], use_cache=use_cache)
    for _ in dec.generate(6, temperature=0):
        pass
    # block 4, keep 3: grow to the full window, then slide to keep the last 3 (the module docstring's example)
    assert dec.windows == [(0, 3), (0, 4), (2, 5), (2, 6), (4, 7), (4, 8)] and dec.window == (6, 9)
    seq = dec.seq[0].tolist()
    for (a, b), tok in zip(dec.windows, dec.new_tokens[0].tolist()):
        assert tok == WindowSum.answer(seq[a:b])
    # a prompt longer than the window is cut to its last block_size tokens
    dec = Decoder(WindowSum(block=4), [5, 1, 2, 3, 4, 6], use_cache=use_cache)
    for _ in dec.generate(3, temperature=0):
        pass
    assert dec.windows == [(2, 6), (4, 7), (4, 8)]


def test_cached_path_prefills_once_per_window_and_then_feeds_one_token():
    m = WindowSum(block=4)
    generate(m, [1, 2, 3], 6, temperature=0)
    assert m.calls == [3, 1, 3, 1, 3, 1]  # prefill, one token, refill after each slide (keep = 3), ...
    u = WindowSum(block=4)
    generate(u, [1, 2, 3], 6, temperature=0, use_cache=False)
    assert u.calls == [3, 4, 3, 4, 3, 4]  # the reference reads the whole window every step
    assert generate(m, [1, 2, 3], 6, temperature=0) == generate(u, [1, 2, 3], 6, temperature=0, use_cache=False)


def test_a_model_without_a_cache_takes_the_uncached_path():
    m = NoCacheWindowSum(block=4)
    dec = Decoder(m, [1, 2, 3])  # use_cache=True is only a wish
    assert not dec.cached
    out = generate(m, [1, 2, 3], 6, temperature=0)  # would raise Unsupported if a cache were passed
    assert m.calls == [3, 4, 3, 4, 3, 4]
    assert out == generate(WindowSum(block=4), [1, 2, 3], 6, temperature=0)
    torch.manual_seed(0)
    bigram = BigramLM(ModelConfig(model="bigram", vocab_size=5, block_size=4)).eval()
    assert not Decoder(bigram, [0]).cached
    out = generate(bigram, [0], 12, temperature=0)
    assert len(out) == 12 and out[0] == int(bigram.wte.weight[0].argmax())
    for kind in ("single_head", "multi_head"):
        m = build_model(ModelConfig(model=kind, vocab_size=5, block_size=4, n_head=2, n_embd=8)).eval()
        assert not Decoder(m, [0]).cached and len(generate(m, [0], 9, temperature=0)) == 9  # slides twice


@pytest.mark.parametrize("prompt_len", [1, 5, 16, 30])
def test_cached_and_uncached_greedy_are_identical_past_block_size(prompt_len):
    m = model()
    prompt = torch.randint(0, 13, (prompt_len,), generator=torch.Generator().manual_seed(prompt_len)).tolist()
    a = generate(m, prompt, 60, temperature=0, use_cache=True)
    b = generate(m, prompt, 60, temperature=0, use_cache=False)
    assert a == b and len(a) == 60


def test_uncached_path_follows_the_documented_window():
    """The reference path: each step sees at most block_size tokens; when full it keeps the last 3/4."""
    m = model(block=8)
    prompt = [1, 2, 3]
    out = generate(m, prompt, 20, temperature=0, use_cache=False)
    seq, start = list(prompt), 0
    for tok in out:
        with torch.no_grad():
            logits, _ = m(torch.tensor([seq[start:]]))
        assert int(logits[0, -1].argmax()) == tok
        seq.append(tok)
        if len(seq) - start > 8:
            start = len(seq) - 6


def test_seeded_sampling_is_repeatable_and_cache_independent_across_slides():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    a = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=3)  # 42 tokens > 16: the window slides twice
    b = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=3, use_cache=False)
    c = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=4)
    assert a == b and a != c


def test_batched_generation_matches_single_rows():
    m = model()
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    rows = torch.stack(list(generate_tokens(m, prompts, 10, temperature=0)), dim=1)
    for i in range(2):
        assert rows[i].tolist() == generate(m, prompts[i].tolist(), 10, temperature=0)


def test_generation_stops_once_every_row_has_an_eos():
    m = WindowSum(vocab=7, block=16)
    free = generate(m, [1], 10, temperature=0)  # 1 -> (1+1)%7=2 -> (3+2)%7=5 -> ...
    assert free[:3] == [2, 5, 4]
    assert generate(m, [1], 10, temperature=0, eos_ids=[5]) == [2, 5]
    assert generate(m, [2], 4, temperature=0) == [3, 0, 1, 3]
    # two rows: the first ends at step 2, the second at step 3; generation goes on until both have, and a row
    # that has ended repeats its end id (it takes no more room in the batch)
    rows = torch.stack(list(generate_tokens(m, torch.tensor([[1], [2]]), 10, temperature=0, eos_ids=[5, 1])), 1)
    assert rows.tolist() == [[2, 5, 5], [3, 0, 1]]


class Repeat(LanguageModel):
    """A fake model that always predicts a fixed cycle (by sequence length), for testing text-level logic."""

    def __init__(self, cycle, vocab, block=64):
        super().__init__()
        self.cycle, self.vocab = cycle, vocab
        self.config = ModelConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=1, n_embd=8)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, *, cache=None, capture=None):
        self._check_abilities(cache, capture)
        B, T = idx.shape
        logits = torch.zeros(B, T, self.vocab)
        logits[:, -1, self.cycle[T % len(self.cycle)]] = 10.0
        return logits, None


def test_stop_strings_cut_before_the_stop_and_never_leak():
    tok = CharTokenizer.train("abcd\n")
    ids = [tok.encode(c)[0] for c in "abc\nd"]
    m = Repeat(ids, tok.vocab_size)
    pieces = list(generate_text(m, tok, "a", 50, stop=["c\nd"], temperature=0))
    # The prompt "a" has length 1, so the cycle starts at "b".
    assert "".join(pieces) == "b"
    assert not any("c" in p for p in pieces)
    pieces = list(generate_text(m, tok, "a", 7, stop=["zz"], temperature=0))
    assert "".join(pieces) == "bc\ndabc"


def test_generate_text_ends_at_an_end_of_text_id_without_printing_it():
    tok = CharTokenizer(list("abcd"), specials=["<unk>", "<eos>"])
    assert end_of_text_id(tok) == 1
    cycle = [tok.encode(c)[0] for c in "abc"] + [1, tok.encode("d")[0]]
    m = Repeat(cycle, tok.vocab_size)
    assert "".join(generate_text(m, tok, "a", 20, temperature=0)).startswith("bc\ufffdda")  # <eos> is not text
    assert "".join(generate_text(m, tok, "a", 20, eos_ids=[1], temperature=0)) == "bc"


def test_end_of_text_ids_of_each_tokenizer():
    from tinygpt.tasks.calculator import calculator_tokenizer

    bpe = ByteBPETokenizer.train("hello world " * 20, 262, special_tokens=["<|endoftext|>"])
    assert end_of_text_id(bpe) == bpe.special_ids["<|endoftext|>"] == 261
    assert end_of_text_id(ByteBPETokenizer.train("hello world " * 20, 262)) is None
    assert end_of_text_id(CharTokenizer.train("abc")) is None
    words = calculator_tokenizer()
    assert end_of_text_id(words) == words.stoi["<eos>"]


# --- beam search ---------------------------------------------------------------------------------------

def brute_force_best(m, prompt, length, vocab, ended=lambda seq: False, length_penalty=0.0):
    """The best-scoring continuation among all sequences that end (ended(seq) at their last token and not
    before) or reach `length` tokens: what beam search with enough beams must find. One batched forward pass
    over every sequence of `length` tokens scores all their prefixes too (the model is causal)."""
    full = torch.tensor([prompt + list(s) for s in itertools.product(range(vocab), repeat=length)])
    with torch.no_grad():
        logp = torch.log_softmax(m(full)[0].float(), -1)  # (V**length, P + length, V)
    new = full[:, len(prompt):]
    steps = logp[:, len(prompt) - 1:-1].gather(-1, new[..., None])[..., 0].cumsum(-1)  # (rows, length)
    best, best_seq = -1e9, None
    for row, seq in enumerate(new.tolist()):
        for n in range(1, length + 1):
            if n < length and not ended(seq[:n]):
                continue
            s = float(steps[row, n - 1]) / n ** length_penalty
            if s > best:
                best, best_seq = s, seq[:n]
            break  # a sequence that ended is not continued
    return best_seq, best


def tiny_gpt(vocab=4, seed=1, sharpen=30.0):
    torch.manual_seed(seed)
    m = GPT(ModelConfig(vocab_size=vocab, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(sharpen)
    return m


def test_beam_search_with_enough_beams_finds_the_exact_optimum():
    m = tiny_gpt()
    seq, score = brute_force_best(m, [0], 3, 4)
    beams = beam_search(m, [0], 3, num_beams=16, length_penalty=0.0)
    assert beams[0].tokens == seq and abs(beams[0].logprob - score) < 1e-4


@pytest.mark.parametrize("eos", [0, 1, 2, 3])
def test_beam_search_with_an_eos_finds_the_exact_optimum(eos):
    m = tiny_gpt()
    for penalty in (0.0, 1.0):
        seq, score = brute_force_best(m, [0], 3, 4, ended=lambda s: s[-1] == eos, length_penalty=penalty)
        best = beam_search(m, [0], 3, num_beams=16, length_penalty=penalty, eos_ids=[eos])[0]
        assert best.tokens == seq and abs(best.score - score) < 1e-4
        assert eos not in best.tokens[:-1]


def test_one_beam_is_greedy():
    m = model()
    assert beam_search(m, [1, 2], 25, num_beams=1)[0].tokens == generate(m, [1, 2], 25, temperature=0)


def test_beam_search_stops_at_eos():
    m = model()
    greedy = generate(m, [1], 10, temperature=0)
    eos = greedy[3]
    beams = beam_search(m, [1], 10, num_beams=1, eos_ids=[eos])
    assert beams[0].tokens == greedy[:greedy.index(eos) + 1]


def test_cached_and_uncached_beams_are_identical_across_slides():
    m = model(block=8)
    for prompt in ([1, 2, 3], list(range(12))):  # 30 new tokens: the window slides several times
        a = beam_search(m, prompt, 30, num_beams=3)
        b = beam_search(m, prompt, 30, num_beams=3, use_cache=False)
        assert [x.tokens for x in a] == [x.tokens for x in b]
        assert [x.logprob for x in a] == pytest.approx([x.logprob for x in b], abs=1e-4)


def test_stop_strings_end_beams_during_the_search():
    """A beam that writes a stop string is finished at once and ranked on what it keeps; the text stops
    before the stop string. Equal to the best over all sequences cut at their first stop string, which is
    not what cutting the unstopped search's best beam would give."""
    tok = CharTokenizer(list("ab\n"))  # ids: <unk> 0, a 1, b 2, \n 3
    m = tiny_gpt(vocab=tok.vocab_size, seed=1, sharpen=3.0)
    prompt = tok.encode("a")
    changed = 0
    for stop in ("\n", "ba", "b"):
        ended = lambda s: stop in tok.decode(s)  # noqa: E731
        for penalty in (0.0, 1.0):
            seq, score = brute_force_best(m, prompt, 3, tok.vocab_size, ended=ended, length_penalty=penalty)
            text, best = beam_search_text(m, tok, "a", 3, num_beams=16, length_penalty=penalty, stop=[stop])[0]
            assert best.tokens == seq and abs(best.score - score) < 1e-4
            assert stop not in text and text == tok.decode(seq).split(stop)[0]
            changed += beam_search(m, prompt, 3, num_beams=16, length_penalty=penalty)[0].tokens != seq
    assert changed >= 3  # the stop strings changed which beam wins


def test_beam_text_drops_the_end_of_text_token():
    tok = CharTokenizer(list("abcd"), specials=["<unk>", "<eos>"])
    cycle = [tok.encode(c)[0] for c in "abc"] + [1, tok.encode("d")[0]]
    m = Repeat(cycle, tok.vocab_size)
    text, beam = beam_search_text(m, tok, "a", 20, num_beams=2, eos_ids=[1])[0]
    assert text == "bc" and beam.tokens[-1] == 1


def test_empty_prompt_and_bad_beams_are_errors():
    with pytest.raises(ValueError, match="empty"):
        generate(model(), [], 3)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model(), [1], 3, num_beams=0)
