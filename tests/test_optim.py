"""The optimizer's weight-decay groups: matrices and embeddings decay, biases and LayerNorm gains do not,
and a tied tensor (GPT's lm_head.weight is wte.weight) is optimised once."""
from __future__ import annotations

import pytest
import torch

from tinygpt.config import ModelConfig, TrainConfig
from tinygpt.models import GPT, count_params
from tinygpt.training.optim import configure_optimizer

DECAYED = {"transformer.wte.weight", "transformer.wpe.weight"} | {
    f"transformer.h.{i}.{m}.weight" for i in range(2)
    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8))


def groups_by_name(model, optimizer) -> dict[float, list[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}  # tied tensors are listed once, as wte
    return {g["weight_decay"]: [name_of[id(p)] for p in g["params"]] for g in optimizer.param_groups}


def test_matrices_and_embeddings_decay_biases_and_norms_do_not(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    cfg = TrainConfig(weight_decay=0.1, learning_rate=3e-3, beta1=0.8, beta2=0.95)
    opt = configure_optimizer(model, cfg, "cpu")
    groups = groups_by_name(model, opt)
    assert set(groups) == {0.1, 0.0}
    assert set(groups[0.1]) == DECAYED
    no_decay = set(groups[0.0])
    assert no_decay == {n for n, _ in model.named_parameters()} - DECAYED
    assert all(n.endswith(".bias") or ".ln_" in n for n in no_decay)
    assert {"transformer.ln_f.weight", "transformer.h.0.ln_1.weight", "transformer.h.1.attn.c_attn.bias"} <= no_decay
    # every parameter exactly once across the groups; the tied embedding counted once
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert ids.count(id(model.transformer.wte.weight)) == 1
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == count_params(model)
    assert all(g["lr"] == 3e-3 and g["betas"] == (0.8, 0.95) for g in opt.param_groups)


def test_one_step_with_zero_gradients_only_shrinks_the_decayed_weights(model):
    """AdamW's decay is decoupled: with zero gradients a step multiplies decayed weights by 1 - lr * wd and
    leaves the others as they were."""
    lr, wd = 0.1, 0.5
    opt = configure_optimizer(model, TrainConfig(weight_decay=wd, learning_rate=lr, min_lr=0.0), "cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - lr * wd) if n in DECAYED else before[n]
        assert torch.allclose(p, expected, atol=1e-7), n
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)  # still one tensor
