"""Exact evaluation over a whole token stream: every token but the first is predicted exactly once."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn

from tinygpt.training.evaluate import evaluate_stream


def token_loss(pos: torch.Tensor) -> torch.Tensor:
    """The loss the fake model charges for predicting the token at stream position `pos`."""
    return (pos % 7).double() * 0.25 + pos.double() * 0.01


class RecordingModel(nn.Module):
    """Sees a stream whose ids are their own positions, so targets tell which positions were predicted.
    Its loss is the mean of token_loss over the targets, like a real model's mean cross-entropy."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen: list[int] = []
        self.contexts_ok = True

    def forward(self, x, targets=None):
        assert x.shape == targets.shape
        self.seen += targets.flatten().tolist()
        # the input at each position is the token right before its target, and windows are contiguous
        self.contexts_ok &= bool(torch.equal(x, targets - 1))
        self.contexts_ok &= bool((x[:, 1:] - x[:, :-1] == 1).all())
        return None, token_loss(targets).mean().float()


@pytest.mark.parametrize("length", [2, 3, 5, 8, 9, 12, 13, 17, 33])  # n = length - 1 predicted tokens
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_every_token_but_the_first_is_predicted_exactly_once(length, batch_size):
    block = 4
    model = RecordingModel()
    loss, count = evaluate_stream(model, np.arange(length, dtype=np.uint16), block, batch_size)
    assert Counter(model.seen) == Counter(range(1, length))
    assert count == length - 1
    assert model.contexts_ok
    brute = token_loss(torch.arange(1, length)).mean().item()  # the per-token mean, one token at a time
    assert loss == pytest.approx(brute, rel=1e-5)


def test_known_loss_of_a_uniform_model():
    """A model that predicts every token with probability 1/V has loss ln V on any stream."""
    V = 5

    class Uniform(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x, targets=None):
            logits = torch.zeros(*x.shape, V)
            return logits, nn.functional.cross_entropy(logits.view(-1, V), targets.reshape(-1))

    loss, count = evaluate_stream(Uniform(), np.array([0, 1, 2, 3, 4, 0, 1]), block_size=3, batch_size=2)
    assert count == 6 and loss == pytest.approx(np.log(V), rel=1e-6)


def test_too_short_a_stream_is_refused():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        evaluate_stream(RecordingModel(), np.array([3]), 4, 2)
