import itertools

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generate import beam_search, generate, generate_text, keep_after_slide
from tinygpt.models import GPT, BigramLM
from tinygpt.tokenizers import CharTokenizer


def model(block=16, vocab=13, seed=0, layers=2):
    torch.manual_seed(seed)
    m = GPT(ModelConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.transformer.wte.weight.mul_(20)
    return m


def test_keep_after_slide():
    assert keep_after_slide(256) == 192 and keep_after_slide(4) == 3 and keep_after_slide(1) == 1


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


def test_seeded_sampling_is_repeatable_and_cache_independent():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    a = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=3)
    b = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=3, use_cache=False)
    c = generate(m, [1, 2], 40, temperature=1.0, top_k=5, seed=4)
    assert a == b and a != c


def test_batched_generation_matches_single_rows():
    m = model()
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6]])
    from tinygpt.generate import generate_tokens
    rows = torch.stack(list(generate_tokens(m, prompts, 10, temperature=0)), dim=1)
    for i in range(2):
        assert rows[i].tolist() == generate(m, prompts[i].tolist(), 10, temperature=0)


def test_bigram_generates_without_cache_support():
    torch.manual_seed(0)
    m = BigramLM(ModelConfig(model="bigram", vocab_size=5, block_size=4)).eval()
    out = generate(m, [0], 12, temperature=0)
    assert len(out) == 12
    assert out[0] == int(m.wte.weight[0].argmax())


class Repeat(torch.nn.Module):
    """A fake model that always predicts a fixed cycle, for testing text-level logic."""

    def __init__(self, cycle, vocab):
        super().__init__()
        self.cycle, self.vocab = cycle, vocab
        self.config = ModelConfig(vocab_size=vocab, block_size=64, n_layer=1, n_head=1, n_embd=8)
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, **kw):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.vocab)
        n = idx.shape[1]
        logits[:, -1, self.cycle[n % len(self.cycle)]] = 10.0
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


def brute_force_best(m, prompt, length, vocab):
    best, best_seq = -1e9, None
    for seq in itertools.product(range(vocab), repeat=length):
        ids = torch.tensor([prompt + list(seq)])
        with torch.no_grad():
            logp = torch.log_softmax(m(ids)[0][0], -1)
        s = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(seq))
        if s > best:
            best, best_seq = s, list(seq)
    return best_seq, best


def test_beam_search_with_enough_beams_finds_the_exact_optimum():
    torch.manual_seed(1)
    m = GPT(ModelConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=8)).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(30)
    seq, score = brute_force_best(m, [0], 3, 4)
    beams = beam_search(m, [0], 3, num_beams=16, length_penalty=0.0)
    assert beams[0].tokens == seq and abs(beams[0].logprob - score) < 1e-4


def test_one_beam_is_greedy():
    m = model()
    assert beam_search(m, [1, 2], 25, num_beams=1)[0].tokens == generate(m, [1, 2], 25, temperature=0)


def test_beam_search_stops_at_eos():
    m = model()
    greedy = generate(m, [1], 10, temperature=0)
    eos = greedy[3]
    beams = beam_search(m, [1], 10, num_beams=1, eos_id=eos)
    assert beams[0].tokens[-1] == eos and len(beams[0].tokens) <= 4


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        generate(model(), [], 3)
