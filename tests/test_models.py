import math

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.models import GPT, BigramLM, build_model, count_params
from tinygpt.models.ablations import VARIANTS, AblatedGPT
from tinygpt.models.attention import CausalSelfAttention, KVCache, causal_mask, manual_attention
from tinygpt.models.attention_kernels import cached_attention_kernels, written_out_attention, written_out_is_faster
from tinygpt.models.fast_dropout import keep_mask


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=11, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("kind", ["gpt", "bigram"])
def test_forward_contract(kind):
    torch.manual_seed(0)
    model = build_model(tiny(model=kind))
    idx = torch.randint(0, 11, (3, 7))
    logits, loss = model(idx)
    assert logits.shape == (3, 7, 11) and loss is None
    logits2, loss = model(idx, idx)
    assert logits2.shape == (3, 7, 11) and loss.ndim == 0
    # the loss is the mean cross-entropy of the logits it returns, over every position
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits2.reshape(-1, 11), idx.reshape(-1)))
    assert torch.equal(logits, logits2)  # the output does not depend on whether targets are given


def test_initial_loss_is_near_uniform():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=50))
    idx, targets = torch.randint(0, 50, (2, 8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(50)) < 0.1


def test_ignore_index_masks_targets():
    torch.manual_seed(0)
    model = GPT(tiny())
    idx = torch.randint(0, 11, (2, 8))
    y = idx.clone()
    y[:, :5] = -1
    logits, loss = model(idx, y)
    ref = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 11), idx[:, 5:].reshape(-1))
    assert torch.allclose(loss, ref, atol=1e-6)


def test_gpt2_names_and_tied_head():
    model = GPT(tiny())
    names = set(dict(model.named_parameters()))
    for n in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
              "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias",
              "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.bias"]:
        assert n in names
    assert model.lm_head.weight is model.transformer.wte.weight
    # 2 layers x 12*C^2 + biases/norms, plus embeddings once (tied head not counted twice)
    C, V, T = 32, 11, 16
    per_layer = 12 * C * C + 13 * C
    assert count_params(model) == 2 * per_layer + V * C + T * C + 2 * C
    assert count_params(model, non_embedding=True) == count_params(model) - T * C


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=8, n_embd=128, n_head=4))
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.001


def test_init_std_sets_the_scale_of_every_gpt_weight():
    torch.manual_seed(0)
    model = GPT(tiny(n_layer=8, n_embd=128, n_head=4, init_std=0.1))
    assert abs(model.transformer.h[0].attn.c_proj.weight.std().item() - 0.1 / math.sqrt(16)) < 0.003
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.1) < 0.003
    assert abs(model.transformer.wte.weight.std().item() - 0.1) < 0.01
    with pytest.raises(ValueError, match="init_std"):
        tiny(init_std=0.0)


def test_causal_mask_known_answer():
    assert causal_mask(2, 3, "cpu").int().tolist() == [[1, 1, 0], [1, 1, 1]]
    assert causal_mask(3, 3, "cpu").int().tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_manual_attention_equals_sdpa():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    out, w = manual_attention(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, ref, atol=1e-5)
    # queries that are the last 3 of 9 positions (the KV-cache case)
    out3, _ = manual_attention(q[:, :, -3:], k, v)
    assert torch.allclose(out3, ref[:, :, -3:], atol=1e-5)


def test_model_manual_path_equals_fast_path_and_capture_is_sane():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 11, (2, 10))
    fast, _ = model(idx)
    cap: dict = {}
    slow, _ = model(idx, capture=cap)
    assert torch.allclose(fast, slow, atol=1e-5)
    for i in range(2):
        w = cap[f"attn.{i}"]
        assert w.shape == (2, 4, 10, 10)
        assert torch.allclose(w.sum(-1), torch.ones(2, 4, 10), atol=1e-5)
        assert torch.all(w.triu(diagonal=1) == 0)
        assert cap[f"resid.{i}"].shape == (2, 10, 32)
    assert torch.allclose(model.lm_head(cap["ln_f"]), fast, atol=1e-5)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 11, (2, 12))
    full, _ = model(idx)
    cache = model.new_cache(2)
    a, _ = model(idx[:, :5], cache=cache)       # prefill 5
    b, _ = model(idx[:, 5:6], cache=cache)      # one token
    c, _ = model(idx[:, 6:], cache=cache)       # several tokens after a prefix
    assert torch.allclose(torch.cat([a, b, c], 1), full, atol=1e-5)
    assert cache.pos == 12


def test_too_long_input_is_an_error():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_bigram_is_a_lookup_table():
    model = BigramLM(tiny(model="bigram"))
    idx = torch.tensor([[3, 3, 5]])
    logits, _ = model(idx)
    assert torch.equal(logits[0, 0], model.wte.weight[3]) and torch.equal(logits[0, 0], logits[0, 1])


def test_matches_hugging_face_gpt2():
    """Same weights in Hugging Face's GPT2LMHeadModel give the same logits (its Conv1D stores W transposed)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tiny(n_embd=32, n_head=4, n_layer=2, vocab_size=37, block_size=16)
    ours = GPT(cfg).eval()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=37, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0, embd_pdrop=0,
        attn_pdrop=0, activation_function="gelu", layer_norm_epsilon=1e-5)).eval()
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    sd = {k: v for k, v in hf.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    with torch.no_grad():
        for k, v in ours.state_dict().items():
            src = sd[k]
            ours.state_dict()[k].copy_(src.t() if k.endswith(transposed) else src)
    idx = torch.randint(0, 37, (2, 16))
    assert torch.allclose(ours(idx)[0], hf(idx).logits, atol=1e-4)


def test_teaching_multi_head_equals_batched_attention_with_copied_weights():
    """The loop over Head modules computes exactly what CausalSelfAttention computes in one batch."""
    from tinygpt.models import CausalSelfAttention, MultiHeadAttention

    torch.manual_seed(0)
    C, nh, hs = 32, 4, 8
    batched = CausalSelfAttention(tiny(n_embd=C, n_head=nh)).eval()
    teach = MultiHeadAttention(nh, C, block_size=16, bias=True).eval()
    W, b = batched.c_attn.weight, batched.c_attn.bias  # rows: [q of all heads | k | v]
    with torch.no_grad():
        for h, head in enumerate(teach.heads):
            for j, lin in enumerate((head.query, head.key, head.value)):
                rows = slice(j * C + h * hs, j * C + (h + 1) * hs)
                lin.weight.copy_(W[rows])
                lin.bias.copy_(b[rows])
        teach.proj.weight.copy_(batched.c_proj.weight)
        teach.proj.bias.copy_(batched.c_proj.bias)
    x = torch.randn(2, 10, C)
    y_teach, w_teach = teach(x)
    y_fast = batched(x)
    y_manual, w_manual = batched.forward_with_weights(x)
    assert torch.allclose(y_teach, y_fast, atol=1e-5)
    assert torch.allclose(w_teach, w_manual, atol=1e-6)


@pytest.mark.parametrize("kind", ["single_head", "multi_head"])
def test_teaching_rungs_follow_the_contract_and_capture(kind):
    torch.manual_seed(0)
    model = build_model(tiny(model=kind)).eval()
    idx = torch.randint(0, 11, (2, 9))
    cap: dict = {}
    logits, _ = model(idx, capture=cap)
    assert logits.shape == (2, 9, 11)
    w = cap["attn.0"]
    assert w.shape == (2, 1 if kind == "single_head" else 4, 9, 9)
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1))) and torch.all(w.triu(1) == 0)


def test_gpt_without_positions_cannot_tell_order():
    """Invariant: with no position embedding, one layer's output at the last position ignores the order of
    the tokens before it (deeper layers see prefixes, which do change); the full GPT does not."""
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    perm = torch.tensor([[3, 1, 5, 2, 4, 6]])
    for kind, same in [("gpt_no_pos", True), ("gpt", False)]:
        torch.manual_seed(0)
        model = build_model(tiny(model=kind, n_layer=1)).eval()
        a, b = model(idx)[0][0, -1], model(perm)[0][0, -1]
        assert torch.allclose(a, b, atol=1e-5) == same, kind


def test_ablations_remove_their_piece():
    names = {k: set(dict(build_model(tiny(model=k)).named_parameters())) for k in
             ["gpt", "gpt_no_pos", "gpt_no_layernorm", "gpt_no_mlp", "gpt_no_residual"]}
    assert "transformer.wpe.weight" not in names["gpt_no_pos"]
    assert not any("ln_" in n for n in names["gpt_no_layernorm"])
    assert not any(".mlp." in n for n in names["gpt_no_mlp"])
    assert names["gpt_no_residual"] == names["gpt"]
    torch.manual_seed(0)
    m = build_model(tiny(model="gpt_no_mlp"))
    cache = m.new_cache(1)  # ablations keep the KV cache
    idx = torch.randint(0, 11, (1, 6))
    assert torch.allclose(m(idx)[0], torch.cat([m(idx[:, :3], cache=cache)[0], m(idx[:, 3:], cache=cache)[0]], 1), atol=1e-5)



@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_gives_the_same_logits_plain_cached_and_captured(variant):
    """The plain pass, the pass through the KV cache and the capturing pass (attention written out) agree."""
    torch.manual_seed(0)
    m = build_model(tiny(model=variant)).eval()
    assert type(m) is (GPT if variant == "gpt" else AblatedGPT)
    idx = torch.randint(0, 11, (2, 9))
    plain = m(idx)[0]
    cap: dict = {}
    assert torch.allclose(m(idx, capture=cap)[0], plain, atol=1e-5) and len(cap) == 2 + 2 * 2
    cache = m.new_cache(2)
    cached = [m(idx[:, :4], cache=cache)[0], m(idx[:, 4:5], cache=cache)[0], m(idx[:, 5:], cache=cache)[0]]
    assert torch.allclose(torch.cat(cached, 1), plain, atol=1e-5)
    cache, cap = m.new_cache(2), {}
    assert torch.allclose(torch.cat([m(idx[:, :4], cache=cache)[0], m(idx[:, 4:], cache=cache, capture=cap)[0]], 1),
                          plain, atol=1e-5)
    assert cap["attn.0"].shape == (2, 4, 5, 9) and cache.pos == 9  # the new queries against every key so far


def test_gpt_builds_only_the_full_model():
    """An ablation's name given to GPT itself is an error, not a full GPT that says it is an ablation."""
    with pytest.raises(ValueError, match="build_model"):
        GPT(tiny(model="gpt_no_mlp"))
    with pytest.raises(ValueError, match="build_model"):
        AblatedGPT(tiny(model="gpt"))


def test_the_mlp_activation_holds_no_weights():
    """The activation (GELU, its tanh approximation, squared ReLU) is `mlp.act`; it has no weights, so the
    checkpoint keys are the same whichever it is, and GPT-2's."""
    want = {f"transformer.h.{i}.mlp.{name}.{w}" for i in range(2) for name in ("c_fc", "c_proj")
            for w in ("weight", "bias")}
    for act in ("gelu", "gelu_tanh", "relu2"):
        model = GPT(tiny(activation=act))
        assert {k for k in model.state_dict() if ".mlp." in k} == want
        assert dict(model.transformer.h[0].mlp.act.state_dict()) == {}

def test_written_out_attention_is_chosen_only_where_measured_faster():
    cpu32, cpu16 = torch.zeros(1, 1, 64, 8), torch.zeros(1, 1, 64, 8, dtype=torch.bfloat16)
    assert not written_out_is_faster(cpu32, 0.0)  # fp32 without dropout: the fused kernel
    assert written_out_is_faster(cpu32, 0.2)  # with dropout: the faster mask
    assert written_out_is_faster(cpu16, 0.0)  # bf16, few positions
    assert not written_out_is_faster(torch.zeros(1, 1, 1024, 8, dtype=torch.bfloat16), 0.0)
    assert not written_out_is_faster(torch.zeros(1, 1, 64, 8, device="meta"), 0.2)  # other devices: fused
    with torch.autocast("cpu", torch.bfloat16):  # the products' dtype counts, not q's (QK-norm gives fp32)
        assert written_out_is_faster(cpu32, 0.0)


def test_cached_attention_leaves_out_cudnn_on_cuda_only():
    """Generation through the KV cache on CUDA: the kernels enabled now, less cuDNN's (it re-plans for each new
    key length); a choice made outside stays made, and PyTorch's state comes back afterwards. Elsewhere nothing
    changes. (Switching backends needs no GPU; tests/test_cuda.py checks the kernels that actually run.)"""
    b = torch.backends.cuda

    def state():
        return b.cudnn_sdp_enabled(), b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled()

    before = state()
    assert before[0]  # PyTorch's default: cuDNN allowed
    with cached_attention_kernels(torch.device("cuda")):
        assert state() == (False, True, True, True)
    with cached_attention_kernels(torch.device("cpu")):
        assert state() == before
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):  # the user's own choice
        with cached_attention_kernels(torch.device("cuda")):
            assert state() == (False, False, True, False)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):  # cuDNN alone: nothing else to run, so it stays
        with cached_attention_kernels(torch.device("cuda")):
            assert state() == (True, False, False, False)
    assert state() == before


def test_only_a_cached_forward_pass_enters_the_cached_attention_context(monkeypatch):
    """Once per forward pass through the cache (not per layer, not without a cache), with the input's device."""
    import tinygpt.models.gpt as gpt_mod
    entered = []
    real = gpt_mod.cached_attention_kernels
    monkeypatch.setattr(gpt_mod, "cached_attention_kernels", lambda device: entered.append(device) or real(device))
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=16, block_size=16, n_layer=3, n_head=2, n_embd=8)).eval()
    idx = torch.randint(0, 16, (1, 5))
    with torch.no_grad():
        m(idx)
        assert entered == []
        cache = KVCache(3, 1, 2, 16, 4, "cpu", torch.float32)
        m(idx, cache=cache)
        m(idx[:, :1], cache=cache)
    assert entered == [torch.device("cpu")] * 2


def _attention_layer(dropout: float) -> CausalSelfAttention:
    torch.manual_seed(0)
    return CausalSelfAttention(ModelConfig(vocab_size=8, block_size=32, n_layer=1, n_head=4, n_embd=32,
                                           dropout=dropout))


def test_training_attention_in_bf16_matches_the_fp32_reference():
    """The written-out bf16 path (training mode) against the fused fp32 kernel: outputs and gradients."""
    layer = _attention_layer(0.0).train()
    x = torch.randn(3, 20, 32)

    def run(dtype):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        with torch.autocast("cpu", torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = layer(xi)
        y.float().pow(2).sum().backward()
        return y.float(), xi.grad, layer.c_attn.weight.grad.clone()

    ref, fast = run(torch.float32), run(torch.bfloat16)
    for a, b in zip(ref, fast):
        assert torch.allclose(a, b, atol=0.03 * a.abs().max().item()), (a - b).abs().max()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_written_out_attention_equals_manual_attention(dtype, tol):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=dtype, requires_grad=True) for _ in range(3))
    ref, _ = manual_attention(q, k, v)
    out = written_out_attention(q, k, v)
    assert out.dtype == dtype and torch.allclose(out.float(), ref.float(), atol=tol)
    g = torch.randn_like(out)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    grads = torch.autograd.grad(out, (q, k, v), g)
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a.float(), b.float(), atol=5 * tol)


def test_written_out_attention_with_dropout_drops_weights_with_keep_mask():
    """With dropout: manual_attention's weights times the mask keep_mask draws, rescaled; the layer takes this
    path in training on CPU."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    torch.manual_seed(7)
    out = written_out_attention(q, k, v, 0.25)
    torch.manual_seed(7)
    keep, scale = keep_mask((6, 16, 16), 0.25)  # drawn over (B·nh, T, T)
    _, weights = manual_attention(q, k, v)
    assert torch.allclose(out, (weights * keep.view(2, 3, 16, 16) * scale) @ v, atol=1e-5)
    # the layer: attention dropout first, then the residual dropout, from the same generator
    layer = _attention_layer(0.25).train()
    x = torch.randn(2, 16, 32)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    q, k, v = layer.c_attn(x).split(32, dim=2)
    q, k, v = (t.view(2, 16, 4, 8).transpose(1, 2) for t in (q, k, v))
    keep, scale = keep_mask((8, 16, 16), 0.25)
    _, weights = manual_attention(q, k, v)
    ref = ((weights * keep.view(2, 4, 16, 16) * scale) @ v).transpose(1, 2).reshape(2, 16, 32)
    ref = layer.resid_dropout(layer.c_proj(ref))
    assert torch.allclose(y, ref, atol=1e-5)
    assert not torch.allclose(y, layer.eval()(x))  # dropout did act
