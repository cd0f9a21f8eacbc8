"""training/steady_heap.py: freed memory is reused instead of faulted in again, and training is unchanged by it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.models import build_model
from tinygpt.training.steady_heap import _glibc, steady_heap

glibc_only = pytest.mark.skipif(_glibc() is None, reason="glibc only")


@glibc_only
def test_steady_heap_reuses_freed_memory_instead_of_faulting_it_in_again():
    """Counted in a process of its own: page faults are counted for the whole process, so another thread (a test
    server left from an earlier test, say) allocating at the same moment would be counted too."""
    script = textwrap.dedent("""
        import resource
        import torch
        from tinygpt.training.steady_heap import steady_heap

        def faults_of_second_allocation():
            torch.empty(16 << 20).fill_(1.0)  # 64 MB, freed at once
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.empty(16 << 20).fill_(1.0)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        default = faults_of_second_allocation()
        with steady_heap("cpu"):
            faults_of_second_allocation()  # the heap grows once
            steady = faults_of_second_allocation()
        print(default, steady, faults_of_second_allocation())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    default, steady, after = map(int, done.stdout.split())
    assert default > 8000  # glibc's default: a fresh mmap, 16k pages faulted in
    assert steady < 500
    assert after > 8000  # the defaults are back


def _train(steps: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.randint(0, 13, (4, 16))
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.state_dict()


def test_training_inside_the_steady_heap_equals_training_outside_it():
    """Only where memory comes from changes: the same steps give the same weights, bit for bit."""
    reference = _train()
    with steady_heap("cpu"):
        fast = _train()
    assert reference.keys() == fast.keys() and all(torch.equal(reference[k], fast[k]) for k in reference)
