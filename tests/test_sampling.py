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


# --- penalties: the vectorised code against the rule written out token by token ---------------------

def _penalize_by_hand(logits, seen, generated, r, f, p):
    out = [list(map(float, row)) for row in logits.tolist()]
    for b, row in enumerate(out):
        for t in {int(i) for i in seen[b]}:
            row[t] = row[t] / r if row[t] > 0 else row[t] * r
        for t in {int(i) for i in generated[b]}:
            c = sum(1 for i in generated[b] if int(i) == t)
            row[t] -= f * c + p
    return torch.tensor(out)


def test_penalties_match_the_rule_written_out():
    from tinygpt.generation.sampling import penalize
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, generator=g) * 3
    seen = [[1, 2, 2, 5], [0], []]
    generated = [[2, 2, 5], [], []]
    for r, f, p in [(1.3, 0.0, 0.0), (1.0, 0.7, 0.0), (1.0, 0.0, -0.4), (0.8, 1.5, 0.5), (1.0, 0.0, 0.0)]:
        got = penalize(logits, seen, generated, r, f, p)
        assert torch.allclose(got, _penalize_by_hand(logits, seen, generated, r, f, p), atol=1e-6), (r, f, p)


def test_a_repetition_penalty_above_one_always_lowers_a_seen_token():
    from tinygpt.generation.sampling import penalize
    logits = torch.tensor([[2.0, -2.0, 0.5]])
    got = penalize(logits, [[0, 1]], [[]], repetition_penalty=2.0)
    assert got.tolist() == [[1.0, -4.0, 0.5]]
    assert torch.equal(penalize(logits, [[0, 1]], [[0]]), logits)  # all off: unchanged


def test_penalty_settings_are_checked():
    from tinygpt.generation.sampling import check_settings
    for kwargs, words in [(dict(repetition_penalty=0.0), "repetition_penalty"),
                          (dict(repetition_penalty=float("nan")), "repetition_penalty"),
                          (dict(frequency_penalty=2.5), "frequency_penalty"),
                          (dict(presence_penalty=-3.0), "presence_penalty")]:
        with pytest.raises(ValueError, match=words):
            check_settings(1.0, **kwargs)
    check_settings(1.0, repetition_penalty=1.2, frequency_penalty=-2.0, presence_penalty=2.0)
