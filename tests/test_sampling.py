import math

import pytest
import torch

from tinygpt.generation.sampling import filter_logits, sample_next


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.5]])
    out = filter_logits(logits, top_k=2)
    kept = torch.isfinite(out)
    assert kept.sum().item() == 2
    assert kept[0, 1] and (kept[0, 2] or kept[0, 3]) and not kept[0, 0]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()
    # the most likely token survives any p
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum() == 1


def test_temperature_scales_logits():
    logits = torch.tensor([[2.0, 1.0]])
    assert torch.allclose(filter_logits(logits, temperature=0.5), torch.tensor([[4.0, 2.0]]))


def test_greedy_and_sampling_respect_the_filter():
    logits = torch.tensor([[0.0, 5.0, 4.9, -1.0]])
    assert sample_next(logits, temperature=0).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert draws == {1, 2}


def test_sampling_frequencies_follow_softmax():
    logits = torch.tensor([[math.log(0.7), math.log(0.3)]])
    g = torch.Generator().manual_seed(0)
    n = 4000
    ones = sum(sample_next(logits, 1.0, generator=g).item() for _ in range(n))
    assert abs(ones / n - 0.3) < 0.03


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        filter_logits(torch.zeros(1, 3), temperature=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        filter_logits(torch.zeros(1, 3), top_p=0)
