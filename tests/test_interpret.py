"""interpret.py: known answers and invariants of attention maps, logit lens, saliency and traces."""
import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.generation.generate import generate
from tinygpt.generation.decoder import keep_after_slide
from tinygpt.inspect.interpret import (InterpretError, attention, attention_maps, capture, generation_attention,
                                       logit_lens, saliency, trace_generation, window)
from tinygpt.models import build_model
from tinygpt.generation.sampling import filter_logits


def tiny(model="gpt", **kw):
    torch.manual_seed(0)
    base = dict(model=model, vocab_size=13, block_size=16, n_layer=3, n_head=4, n_embd=32, dropout=0.0)
    base.update(kw)
    return build_model(ModelConfig(**base)).eval()


PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.mark.parametrize("kind", ["gpt", "single_head", "multi_head", "gpt_no_pos", "gpt_no_layernorm"])
def test_attention_rows_sum_to_one_and_are_causal(kind):
    model = tiny(kind)
    maps = attention_maps(model, PROMPT)
    L = 3 if kind.startswith("gpt") else 1
    H = 1 if kind == "single_head" else 4
    T = len(PROMPT)
    assert maps.shape == (L, H, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(L, H, T))
    above = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert torch.all(maps[..., above] == 0)
    assert torch.all(maps >= 0)


def test_capture_names_and_logits_match_the_fast_path():
    model = tiny()
    got = capture(model, PROMPT)
    assert set(got) == {"embed", "ln_f", "logits"} | {f"attn.{i}" for i in range(3)} | {f"resid.{i}" for i in range(3)}
    with torch.no_grad():
        fast, _ = model(torch.tensor([PROMPT]))  # SDPA path, nothing captured
    torch.testing.assert_close(got["logits"], fast[0], atol=1e-5, rtol=1e-5)
    assert got["resid.2"].shape == (len(PROMPT), 32)


def test_bigram_has_no_attention_and_says_so():
    model = tiny("bigram")
    with pytest.raises(InterpretError, match="bigram model has no attention"):
        attention_maps(model, PROMPT)
    with pytest.raises(InterpretError, match="bigram"):
        logit_lens(model, PROMPT)


def test_prompt_longer_than_the_window_is_refused_and_window_cuts_it():
    model = tiny()
    with pytest.raises(InterpretError, match="at most 16"):
        attention_maps(model, list(range(13)) * 2)
    kept, dropped = window(list(range(20)), 16)
    assert kept == list(range(4, 20)) and dropped == 4


@pytest.mark.parametrize("kind", ["gpt", "multi_head", "gpt_no_layernorm"])
def test_logit_lens_last_layer_is_the_models_own_output(kind):
    model = tiny(kind)
    lens = logit_lens(model, PROMPT, k=4)
    assert lens.ids == PROMPT
    with torch.no_grad():
        logits, _ = model(torch.tensor([PROMPT]))
    probs = torch.softmax(logits[0], -1)
    top_p, top_i = probs.topk(4, dim=-1)
    assert lens.layers[0] == "embed" and lens.layers[-1] == f"resid.{len(lens.layers) - 2}"
    assert torch.equal(lens.top_ids[-1], top_i)
    torch.testing.assert_close(lens.top_probs[-1], top_p, atol=1e-5, rtol=1e-5)
    # the probability of the token that really comes next, at the last layer
    want = probs[torch.arange(len(PROMPT) - 1), torch.tensor(PROMPT[1:])]
    torch.testing.assert_close(lens.target_probs[-1], want, atol=1e-5, rtol=1e-5)
    assert lens.top_probs.shape == (len(lens.layers), len(PROMPT), 4)
    # each row is a distribution's top-k: sorted and at most 1 in total
    assert torch.all(lens.top_probs[..., :-1] >= lens.top_probs[..., 1:])
    assert torch.all(lens.top_probs.sum(-1) <= 1 + 1e-5)


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=0.8, seed=3),
                                      dict(temperature=1.3, top_k=4, seed=7), dict(temperature=1.0, top_p=0.7, seed=11)])
def test_trace_chooses_exactly_what_generate_chooses(settings):
    model = tiny()
    trace = trace_generation(model, PROMPT[:3], 25, k=3, **settings)  # past block_size: the window slides
    assert trace.tokens == generate(model, PROMPT[:3], 25, **settings)
    assert [s.position for s in trace.steps] == list(range(3, 28))


def test_trace_records_the_distribution_before_and_after_filtering():
    model = tiny()
    trace = trace_generation(model, PROMPT[:4], 1, temperature=0.5, top_k=3, seed=0, k=13)
    step = trace.steps[0]
    with torch.no_grad():
        logits, _ = model(torch.tensor([PROMPT[:4]]))
    raw = torch.softmax(logits[0, -1], -1)
    shaped = torch.softmax(filter_logits(logits[0, -1], 0.5, 3), -1)
    assert [i for i, _ in step.before] == raw.argsort(descending=True).tolist()
    assert step.kept == 3 and len(step.after) == 3
    assert dict(step.after) == pytest.approx({i: float(shaped[i]) for i, _ in step.after}, abs=1e-6)
    assert step.chosen in dict(step.after)
    assert step.chosen_before == pytest.approx(float(raw[step.chosen]), abs=1e-6)


def test_trace_stops_after_a_stop_token():
    model = tiny()
    free = trace_generation(model, PROMPT[:3], 10, temperature=0.0)
    stop = free.tokens[2]
    cut = trace_generation(model, PROMPT[:3], 10, temperature=0.0, stop_ids=[stop])
    assert cut.tokens == free.tokens[:free.tokens.index(stop) + 1]


def copy_first_token_model(kind):
    """A 1-layer model trained until the token after the prompt is the prompt's first token: position 0
    decides the output and the other tokens are noise."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(model=kind, vocab_size=8, block_size=6, n_layer=1, n_head=2, n_embd=32,
                                    dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = torch.randint(0, 8, (64, 6), generator=g)
        y = torch.full_like(x, -1)
        y[:, -1] = x[:, 0]
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


_COPIERS: dict = {}


def copier(kind):
    """The copy-first-token model of each kind, trained once per test session."""
    if kind not in _COPIERS:
        _COPIERS[kind] = copy_first_token_model(kind)
    return _COPIERS[kind]


@pytest.mark.parametrize("kind, method", [("gpt", "integrated_gradients"),
                                          ("single_head", "integrated_gradients"), ("single_head", "gradient_x_input"),
                                          ("gpt_no_layernorm", "integrated_gradients"),
                                          ("gpt_no_layernorm", "gradient_x_input")])
def test_saliency_ranks_the_deciding_token_first(kind, method):
    model, loss = copier(kind)
    assert loss < 0.1
    for prompt in ([5, 1, 2, 3, 4, 6], [2, 7, 7, 0, 3, 1], [7, 3, 3, 3, 3, 3]):
        s = saliency(model, prompt, method=method)
        assert s.target == prompt[0] and s.target_prob > 0.9
        assert s.scores.shape == (6,) and torch.isfinite(s.scores).all()
        assert s.ranking[0] == 0


def test_gradient_x_input_is_blind_to_what_layernorm_reads():
    """Why integrated gradients is the default: a pre-LayerNorm block reads a normalised copy of the
    embedding, so the local effect of scaling the deciding token's embedding is ~0, while integrated
    gradients (which walks from a zero embedding) gives it the largest share."""
    model, _ = copier("gpt")
    prompt = [5, 1, 2, 3, 4, 6]
    grad = saliency(model, prompt, method="gradient_x_input").scores
    ig = saliency(model, prompt, method="integrated_gradients").scores
    assert abs(grad[0]) < 0.1 * ig[0]


def test_integrated_gradients_add_up_to_the_change_in_log_probability():
    model = tiny()
    s = saliency(model, PROMPT, target=5, steps=64)
    assert s.delta is not None
    assert float(s.scores.sum()) == pytest.approx(s.delta, abs=0.02 * abs(s.delta) + 1e-3)


def test_saliency_default_target_is_the_top_token_and_bad_targets_are_refused():
    model = tiny()
    with torch.no_grad():
        logits, _ = model(torch.tensor([PROMPT]))
    s = saliency(model, PROMPT)
    assert s.target == int(logits[0, -1].argmax()) and s.ids == PROMPT
    with pytest.raises(InterpretError, match="outside the vocabulary"):
        saliency(model, PROMPT, target=99)
    with pytest.raises(InterpretError, match="unknown saliency method"):
        saliency(model, PROMPT, method="magic")


def test_saliency_of_a_bigram_falls_on_the_last_token_only():
    model = tiny("bigram")
    s = saliency(model, PROMPT)
    assert torch.all(s.scores[:-1] == 0) and s.scores[-1] != 0


def test_single_head_attention_is_the_textbook_formula():
    """Known answer: softmax(q·k / sqrt(d)) with the causal mask, from the model's own weights."""
    model = tiny("single_head")
    res = attention(model, PROMPT)
    assert res.ids == PROMPT
    with torch.no_grad():
        x = model.wte(torch.tensor(PROMPT)) + model.wpe(torch.arange(len(PROMPT)))  # (T, C)
        q, k = model.sa.query(x), model.sa.key(x)
        scores = (q @ k.T) / k.size(-1) ** 0.5
        scores = scores.masked_fill(torch.ones(len(PROMPT), len(PROMPT), dtype=torch.bool).triu(1), float("-inf"))
        want = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(res.maps[0, 0], want, atol=1e-5, rtol=1e-5)


def test_generation_attention_frames_grow_by_one_token():
    model = tiny()
    trace = trace_generation(model, PROMPT[:3], 3, temperature=0.0)
    res = generation_attention(model, trace)
    assert [f.shape[-1] for f in res.frames] == [3, 4, 5, 6]
    torch.testing.assert_close(res.frames[-1], attention_maps(model, PROMPT[:3] + trace.tokens))


def test_trace_windows_are_the_decoders_policy():
    model = tiny()  # block_size 16, keeps 12 when it slides
    trace = trace_generation(model, PROMPT[:3], 20, temperature=0.0)
    assert keep_after_slide(16) == 12
    want = [(0, n) for n in range(3, 17)] + [(5, n) for n in range(17, 22)] + [(10, 22)]
    assert trace.windows == want and trace.last_window == (10, 23)
    assert [b for _, b in trace.windows] == [s.position for s in trace.steps]
    long = list(range(13)) + [1, 2, 3, 4, 5, 6, 7]  # 20 tokens: the model reads the last 16
    assert trace_generation(model, long, 1, temperature=0.0).windows == [(4, 20)]


def test_generation_attention_past_the_window_is_what_the_model_read():
    model = tiny()
    trace = trace_generation(model, PROMPT[:3], 20, temperature=0.0)
    assert trace.tokens == generate(model, PROMPT[:3], 20, temperature=0.0)
    res = generation_attention(model, trace)
    assert res.windows == trace.windows + [trace.last_window] and len(res.frames) == 21
    seq = PROMPT[:3] + trace.tokens
    for (a, b), f in zip(res.windows, res.frames):
        torch.testing.assert_close(f, attention_maps(model, seq[a:b]))


def test_traces_agree_with_and_without_the_cache():
    model = tiny()
    a = trace_generation(model, PROMPT[:3], 20, temperature=0.9, seed=5)
    b = trace_generation(model, PROMPT[:3], 20, temperature=0.9, seed=5, use_cache=False)
    assert a.tokens == b.tokens and a.windows == b.windows
    for x, y in zip(a.steps, b.steps):
        assert [i for i, _ in x.before] == [i for i, _ in y.before]
        assert x.chosen_before == pytest.approx(y.chosen_before, abs=1e-5)
