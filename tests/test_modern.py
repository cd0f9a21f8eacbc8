"""The options after GPT-2, each against a plain reference: rotary (a rotation matrix; q·k sees only distance),
RMSNorm, squared ReLU and SwiGLU (their formulas), QK-norm with rotary (attention written out), no biases,
untied embeddings, Muon (Newton–Schulz vs the SVD; its AdamW half vs torch's), the KV cache with rotary, the
`modern` preset, defaults that stay GPT-2, the modern ladder, and Llama export / import."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_FLAGS
from tinygpt.config import MODEL_KEYS, PRESETS, ConfigError, ModelConfig, TrainConfig, build_configs
from tinygpt.generation.generate import generate
from tinygpt.recipes.ladder import MODERN_RUNGS, RUNG_SETTINGS
from tinygpt.models import build_model
from tinygpt.models.attention import CausalSelfAttention
from tinygpt.models.modern import (RMSNorm, ReluSquared, SwiGLU, apply_rotary, rotary_cos_sin, rotation_matrix,
                                   swiglu_hidden)
from tinygpt.training.optim import NS_CUBIC, Muon, configure_optimizer, newton_schulz

MODERN = {k: v for k, v in PRESETS["modern"].items() if k in MODEL_KEYS}


def modern_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16), **MODERN, **kw})


def test_rotary_equals_an_explicit_rotation_matrix_and_qk_depends_only_on_distance():
    hs, theta = 8, 100.0
    x = torch.randn(5, hs, dtype=torch.float64)
    cos, sin = rotary_cos_sin(0, 5, hs, theta, "cpu")
    fast = apply_rotary(x, cos.double(), sin.double())
    for p in range(5):
        assert torch.allclose(fast[p], rotation_matrix(p, hs, theta) @ x[p], atol=1e-6)
    assert torch.equal(rotation_matrix(0, hs, theta), torch.eye(hs, dtype=torch.float64))
    q, k = torch.randn(hs, dtype=torch.float64), torch.randn(hs, dtype=torch.float64)

    def dot(m: int, n: int) -> float:  # q at position m, k at position n
        return float((rotation_matrix(m, hs, theta) @ q) @ (rotation_matrix(n, hs, theta) @ k))

    assert dot(7, 3) == pytest.approx(dot(4, 0), abs=1e-9) == pytest.approx(dot(40, 36), abs=1e-9)
    assert dot(7, 3) != pytest.approx(dot(7, 2), abs=1e-3)  # but it does see the distance


def test_rmsnorm_squared_relu_and_swiglu_equal_their_formulas():
    x = torch.randn(3, 4, 16)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    assert torch.allclose(norm(x), x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-6) * norm.weight, atol=1e-6)
    assert torch.equal(ReluSquared()(x), torch.where(x > 0, x * x, torch.zeros_like(x)))
    cfg = modern_cfg()
    mlp = SwiGLU(cfg)
    w1, w3, w2 = mlp.c_gate.weight, mlp.c_fc.weight, mlp.c_proj.weight
    want = ((x @ w1.T) * torch.sigmoid(x @ w1.T) * (x @ w3.T)) @ w2.T  # down(silu(gate x) * up x)
    assert torch.allclose(mlp(x), want, atol=1e-6)
    assert w1.shape == (swiglu_hidden(16), 16) and swiglu_hidden(128) == 352 and mlp.c_fc.bias is None


def test_attention_with_qk_norm_and_rotary_equals_it_written_out():
    cfg = modern_cfg(n_embd=16, n_head=2)
    attn = CausalSelfAttention(cfg, rotary=True).eval()
    with torch.no_grad():
        attn.q_norm.weight.copy_(torch.rand(8) + 0.5)
        attn.k_norm.weight.copy_(torch.rand(8) + 0.5)
    x = torch.randn(2, 6, 16)
    q, k, v = (x @ attn.c_attn.weight.T).split(16, dim=-1)
    out = []
    for h in range(2):
        s = slice(8 * h, 8 * h + 8)
        qh, kh = (attn.q_norm(q[..., s]), attn.k_norm(k[..., s]))  # RMSNorm per head, before rotation
        rot = torch.stack([rotation_matrix(p, 8, cfg.rope_theta).float() for p in range(6)])  # (T, hs, hs)
        qh, kh = torch.einsum("tij,btj->bti", rot, qh), torch.einsum("tij,btj->bti", rot, kh)
        scores = (qh @ kh.transpose(1, 2)) / math.sqrt(8)
        scores = scores.masked_fill(torch.triu(torch.ones(6, 6, dtype=torch.bool), 1), float("-inf"))
        out.append(F.softmax(scores, -1) @ v[..., s])
    want = torch.cat(out, -1) @ attn.c_proj.weight.T
    with torch.no_grad():
        fast = attn(x)
        manual, _ = attn.forward_with_weights(x)
    assert torch.allclose(fast, want, atol=1e-5) and torch.allclose(manual, want, atol=1e-5)


@pytest.mark.parametrize("prompt_len", [1, 11])  # 11 + 24 tokens: the window of 16 slides twice
def test_modern_preset_cached_and_uncached_greedy_are_identical(prompt_len):
    """Rotary with the KV cache: new tokens take positions cache.pos onwards, also across window slides."""
    torch.manual_seed(0)
    m = build_model(modern_cfg(init_std=0.3)).eval()
    prompt = torch.randint(0, 13, (prompt_len,), generator=torch.Generator().manual_seed(1)).tolist()
    a = generate(m, prompt, 24, temperature=0, use_cache=True)
    assert a == generate(m, prompt, 24, temperature=0, use_cache=False) and len(set(a)) > 1


def test_modern_preset_switches_every_piece_on_and_defaults_stay_gpt2():
    model, train = build_configs({}, preset="modern", vocab_size=13)
    assert (model.position, model.norm, model.activation, model.qk_norm, model.bias, model.tie_embeddings,
            train.optimizer) == ("rotary", "rmsnorm", "swiglu", True, False, False, "muon")
    m = build_model(dataclasses.replace(model, n_layer=1, n_embd=16, n_head=2))
    names = [n for n, _ in m.named_parameters()]
    assert not any(n.endswith(".bias") for n in names) and "transformer.wpe.weight" not in names
    assert m.lm_head.weight is not m.transformer.wte.weight
    # the default GPT is GPT-2's, key for key, and a config written before these options existed loads
    old = {k: v for k, v in dataclasses.asdict(ModelConfig(vocab_size=13)).items()
           if k not in ("position", "rope_theta", "norm", "qk_norm", "tie_embeddings")}
    gpt = build_model(ModelConfig(**old))
    assert gpt.lm_head.weight is gpt.transformer.wte.weight and isinstance(gpt.transformer.ln_f, torch.nn.LayerNorm)
    assert {n for n, _ in gpt.named_parameters()} == {"transformer.wte.weight", "transformer.wpe.weight",
                                                      "transformer.ln_f.weight", "transformer.ln_f.bias",
                                                      *(f"transformer.h.{i}.{k}" for i in range(4) for k in (
                                                          "ln_1.weight", "ln_1.bias", "attn.c_attn.weight",
                                                          "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
                                                          "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                                                          "mlp.c_proj.weight", "mlp.c_proj.bias"))}


@pytest.mark.parametrize("bad, match", [
    (dict(position="alibi"), "position must be one of"), (dict(norm="batchnorm"), "norm must be one of"),
    (dict(activation="tanh"), "activation must be one of"), (dict(rope_theta=1.0), "rope_theta must be > 1"),
    (dict(position="rotary", n_embd=6, n_head=2), "must be even"),
])
def test_bad_model_options_are_refused_in_one_line(bad, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**bad)
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")


def test_newton_schulz_reaches_the_polar_factor_of_the_svd():
    g = torch.randn(12, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vt
    # the classical iteration converges to it (the SVD's answer) within float32's reach
    assert torch.allclose(newton_schulz(g.float(), steps=40, coeffs=NS_CUBIC).double(), polar, atol=1e-4)
    assert torch.allclose(newton_schulz(g.t().float(), steps=40, coeffs=NS_CUBIC).double(), polar.t(), atol=1e-4)
    # Muon's 5 quintic steps: the same singular vectors, singular values only roughly 1 (its speed/accuracy trade)
    fast = newton_schulz(g.float()).double()
    core = u.t() @ fast @ vt.t()  # diagonal when the singular vectors are the SVD's
    assert (core - torch.diag(torch.diagonal(core))).abs().max() < 0.05
    assert torch.diagonal(core).min() > 0.6 and torch.diagonal(core).max() < 1.25


def test_muon_takes_the_blocks_matrices_and_its_adamw_half_equals_torch_adamw():
    torch.manual_seed(0)
    model = build_model(modern_cfg())
    cfg = TrainConfig(optimizer="muon", learning_rate=1e-2, muon_lr=0.05, weight_decay=0.1)
    opt = configure_optimizer(model, cfg, "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"]}
    assert muon == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")}
    assert "transformer.wte.weight" not in muon and "lm_head.weight" not in muon
    assert [g.get("lr_scale", 1.0) for g in opt.param_groups] == [5.0, 1.0, 1.0]
    # the AdamW half, step for step against torch's AdamW
    w = torch.randn(6, 5, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    ours = Muon([{"params": [w], "weight_decay": 0.1}], lr=1e-2, betas=(0.9, 0.99))
    ref = torch.optim.AdamW([w2], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, eps=1e-8)
    for i in range(3):
        for p, o in ((w, ours), (w2, ref)):
            p.grad = torch.sin(torch.arange(30.0).view(6, 5) * (i + 1))
            o.step()
    assert torch.allclose(w, w2, atol=1e-6)


def test_modern_training_with_muon_learns_and_resumes_exactly(tmp_path, cli, text_file):
    flags = [*TINY_FLAGS, "--preset", "modern", "--eval_interval=4", "--learning_rate=3e-3", "--lr_decay_iters=8",
             "--warmup_iters=2"]
    code, _, err = cli("train", "--data", text_file, "--out", tmp_path / "a", "--max_iters=8", *flags)
    assert code == 0, err
    code, _, err = cli("train", "--data", text_file, "--out", tmp_path / "b", "--max_iters=4", *flags)
    assert code == 0, err
    code, _, err = cli("train", "--out", tmp_path / "b", "--max_iters=8", "--resume", "--quiet")
    assert code == 0, err
    lines = [[json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
    assert lines[0][-1]["train_loss"] == lines[1][-1]["train_loss"]  # 8 ≡ 4 + resume + 4
    assert lines[0][-1]["val_loss"] < lines[0][0]["val_loss"]


def test_modern_ladder_adds_one_piece_per_rung_up_to_the_preset(cli, tmp_path, text_file):
    total: dict = {}
    for name in MODERN_RUNGS:
        added = {k: v for k, v in RUNG_SETTINGS[name].items() if total.get(k) != v and k != "model"}
        assert len(added) == (0 if name == "gpt2" else 1), name
        total = RUNG_SETTINGS[name]
    assert {k: v for k, v in total.items() if k != "model"} == PRESETS["modern"]
    flags = [f for f in TINY_FLAGS if not f.startswith("--eval_interval")]
    out = tmp_path / "ladder"
    code, text, err = cli("ladder", "--modern", "--data", text_file, "--out", out, "--rungs", "gpt2,muon",
                          "--max_iters=2", "--eval_interval=2", *flags)
    assert code == 0, err
    rows = json.loads((out / "ladder.json").read_text())
    assert [r["model"] for r in rows] == ["gpt2", "muon"] and rows[1]["params"] != rows[0]["params"]
    assert "muon" in text and "bits/char" in text


def test_speedrun_preset_is_the_modern_gpt_and_trains_from_the_command_line(cli, tmp_path, text_file):
    model, train = build_configs({}, preset="speedrun_cpu", vocab_size=13)
    assert {k: getattr(model, k, getattr(train, k, None)) for k in PRESETS["modern"]} == PRESETS["modern"]
    assert (model.n_layer, model.n_embd, model.block_size, model.dropout, train.max_iters) == (4, 192, 128, 0.0, 800)
    assert train.lr_decay_iters == train.max_iters  # the schedule ends where the run does
    out = tmp_path / "speedrun"
    code, _, err = cli("train", "--preset", "speedrun_cpu", "--data", text_file, "--out", out, "--quiet",
                       "--max_iters=3", "--lr_decay_iters=3", "--eval_interval=3", "--eval_iters=1", "--n_embd=32",
                       "--batch_size=2", "--block_size=16", "--dtype=float32")
    assert code == 0, err
    saved = json.loads((out / "latest" / "config.json").read_text())
    assert saved["model"]["activation"] == "swiglu" and saved["train"]["optimizer"] == "muon"
    assert saved["model"]["n_layer"] == 4 and saved["step"] == 3
