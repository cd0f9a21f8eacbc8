"""models/fast_dropout.py: the cheaper CPU mask against nn.Dropout, its reference."""
import math

import pytest
import torch
import torch.nn as nn

from tinygpt.models.fast_dropout import WORD, Dropout, dropout, keep_mask


def rounded(p: float) -> float:
    return round(p * WORD) / WORD


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_p(p):
    torch.manual_seed(0)
    n = 1 << 21
    keep, scale = keep_mask((n,), p)
    q = rounded(p)
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - q) < 6 * math.sqrt(q * (1 - q) / n)
    assert scale == 1 / (1 - q)  # survivors scaled by the exact inverse of the rounded keep probability
    assert abs(q - p) <= 0.5 / WORD


def test_neighbouring_elements_are_independent():
    """Four elements share one 64-bit draw: pairs and quadruples inside it must still be independent."""
    torch.manual_seed(1)
    n = 1 << 22
    keep, _ = keep_mask((n // 4, 4), 0.5)
    k = keep.float()
    tol = 6 * math.sqrt(0.25 / (n // 4))
    assert abs((k[:, 0] * k[:, 1]).mean().item() - 0.25) < tol
    assert abs((k[:, 2] * k[:, 3]).mean().item() - 0.25) < tol
    assert abs(k.prod(dim=1).mean().item() - 0.0625) < tol
    assert abs((k[:-1, 3] * k[1:, 0]).mean().item() - 0.25) < tol  # across two draws


def test_output_is_zero_or_the_scaled_input_and_the_gradient_follows_the_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)  # an odd size: the last draw is only partly used
    y = dropout(x, 0.3)
    scale = 1 / (1 - rounded(0.3))
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.8
    assert torch.equal(y[kept], x.detach()[kept] * scale)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, torch.where(kept, g * scale, torch.zeros_like(g)))


def test_agrees_with_nn_dropout_in_expectation_and_variance():
    """Same distribution as the reference: mean x, variance x² p / (1 - p), the same share of zeros."""
    torch.manual_seed(3)
    x = torch.full((1 << 20,), 2.0)
    ours, ref = dropout(x, 0.2), nn.Dropout(0.2).train()(x)
    for y in (ours, ref):
        assert abs(y.mean().item() - 2.0) < 0.01
        assert abs(y.var().item() - 4 * 0.2 / 0.8) < 0.02
    assert abs((ours == 0).float().mean() - (ref == 0).float().mean()) < 0.003


def test_bf16_input_keeps_its_dtype_and_mean():
    torch.manual_seed(4)
    x = torch.ones(1 << 20, dtype=torch.bfloat16)
    y = dropout(x, 0.1)
    assert y.dtype == torch.bfloat16
    assert abs(y.float().mean().item() - 1.0) < 0.01


def test_seeded_masks_repeat_and_differ_between_seeds():
    x = torch.ones(1000)
    torch.manual_seed(5)
    a = dropout(x, 0.5)
    torch.manual_seed(5)
    b = dropout(x, 0.5)
    torch.manual_seed(6)
    c = dropout(x, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_edges_and_evaluation_mode():
    x = torch.randn(10, requires_grad=True)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    y = dropout(x, 1.0)
    assert torch.equal(y, torch.zeros(10))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(10))
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, -0.1)
    m = Dropout(0.5).eval()
    assert m(x) is x and "p=0.5" in repr(m)
    assert dict(m.state_dict()) == {}  # no weights: checkpoints are unchanged by the swap
