"""The decoding kernel (models/matvec.py): its products equal the plain PyTorch reference for fp32, bf16 and int8
weights, 1 to MAX_ROWS rows and widths with a tail; a model's linear layers take it only inside decoding_with_matvec
and only where it applies; the engine gives the same tokens with it as without (greedy and seeded sampling,
fp32, bf16 and int8 models); small models never build it."""
import platform

import pytest
import torch
import torch.nn as nn

from tinygpt.config import ModelConfig
from tinygpt.generation.engine import Engine, Sampling
from tinygpt.models import GPT
from tinygpt.models import matvec as mv
from tinygpt.models.quantize import Int8Linear, quantize

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="the kernel is built on Linux only")


@pytest.fixture(scope="module")
def kernels():
    module = mv.kernels()
    assert module is not None, mv.unavailable_reason()  # a C++ compiler and ninja are part of the test set-up
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("K", [16, 48, 208, 768])  # tails of one vector of 16 and of 8, and a width of GPT-2
def test_the_kernel_equals_the_reference(kernels, dtype, K):
    g = torch.Generator().manual_seed(K)
    w = torch.randn(67, K, generator=g)
    scales = None
    if dtype == torch.int8:
        w, scales = torch.randint(-127, 128, (67, K), generator=g, dtype=torch.int8), torch.rand(67, generator=g)
    else:
        w = w.to(dtype)
    for rows in (1, 2, 3, 4, 7, mv.MAX_ROWS):  # one pass over the weights, and several
        x = torch.randn(rows, K, generator=g)
        expected = mv.matvec_reference(x, w, scales)
        got = mv.matvec(x, w, scales)
        assert got.shape == expected.shape and got.dtype == torch.float32
        # the same products summed in another order: equal to within fp32 rounding of the sum of |terms|
        magnitude = mv.matvec_reference(x.abs(), w.float().abs(), scales)
        bound = 1e-5 * magnitude + 1e-6
        if dtype == torch.int8:  # and the input rounded to int16, each row to a 1/65534 of its largest value
            bound += x.abs().amax(1, keepdim=True) / 65534 * mv.matvec_reference(torch.ones(1, K), w.float().abs(),
                                                                                  scales)
        assert ((got - expected).abs() <= bound).all()


def test_a_layer_takes_the_kernel_only_inside_and_only_where_it_applies(kernels):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16, bias=False))
    calls = []
    real = mv.matvec
    x = torch.randn(2, 32)
    with torch.inference_mode():
        expected = model(x)
        with mv.decoding_with_matvec(model):
            mv.matvec = lambda *a: calls.append(a[0].shape) or real(*a)
            try:
                got = model(x)
                model(torch.randn(mv.MAX_ROWS + 1, 32))  # more rows than MAX_ROWS: the ordinary product
            finally:
                mv.matvec = real
    assert calls == [(2, 32), (2, 48)]
    assert torch.allclose(got, expected, atol=1e-5)
    assert all("forward" not in layer.__dict__ for layer in model)  # left as they were
    w = nn.Linear(32, 8).weight
    assert not mv.applies(torch.randn(1, 32), w)  # autograd records this product: not for the kernel
    with torch.no_grad():
        assert mv.applies(torch.randn(1, 32), w) and not mv.applies(torch.randn(1, 30), nn.Linear(30, 8).weight)


def _model(seed=0):
    torch.manual_seed(seed)
    m = GPT(ModelConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=48)).eval()
    with torch.no_grad():  # sharpen the random model so greedy choices are not near-ties
        m.transformer.wte.weight.mul_(20)
    return m


def _tokens(m, prompts, matvec, settings, n=20):
    engine = Engine(m, matvec=matvec)
    rows = [engine.add(p, Sampling(**settings), seed=3 + i) for i, p in enumerate(prompts)]
    for _ in range(n):
        engine.step(rows)
    return [r.new_tokens for r in rows], engine._matvec_for(len(rows))


@pytest.mark.parametrize("precision", [None, "bf16", "int8"])
@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=1.0, top_k=8)], ids=["greedy", "sampled"])
def test_the_engine_gives_the_same_tokens_with_the_kernel(kernels, precision, settings):
    m = quantize(_model(), precision)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10] * 30, [11, 12], [13] * 7]  # [10] * 30 slides its window
    for batch in (prompts[:1], prompts[:4], prompts):  # one row, four (one pass), six (two passes)
        ours, used = _tokens(m, batch, True, settings)
        theirs, _ = _tokens(m, batch, False, settings)
        assert used and ours == theirs


def test_a_small_model_neither_builds_nor_times_the_kernel(monkeypatch):
    monkeypatch.setattr(mv, "kernels", lambda: pytest.fail("a small model asked for the kernel"))
    monkeypatch.setattr(mv, "faster_here", lambda *a: pytest.fail("a small model timed the kernel"))
    m = _model()
    assert sum(layer.weight.nbytes for layer in mv.linear_layers(m)) < mv.MIN_MODEL_BYTES
    engine = Engine(m)
    rows = [engine.add([1, 2, 3], Sampling(temperature=0)), engine.add([4], Sampling(temperature=0))]
    for _ in range(3):
        engine.step(rows)
    assert not mv.worth_using(m, 1) and not mv.worth_using(m, 2)


def test_linear_layers_lists_each_layer_once_and_the_int8_ones():
    m = _model()
    layers = mv.linear_layers(m)
    assert len(layers) == len({id(x) for x in layers}) == 2 * 4 + 1  # 4 per block and the head
    q = quantize(m, "int8")
    assert all(isinstance(x, Int8Linear) for x in mv.linear_layers(q)) and len(mv.linear_layers(q)) == 9


@pytest.mark.parametrize("ours, theirs", [(1.0, 2.0), (2.0, 1.0)])
def test_the_choice_is_the_faster_of_the_two_for_a_layer_that_trains(kernels, monkeypatch, ours, theirs):
    """faster_here times the kernel against the layer's own forward as decoding runs them (no autograd), even for
    weights that require grad, as a freshly built model's do, and takes the faster."""
    import itertools

    costs = itertools.cycle([ours, theirs])  # it alternates: the kernel, then the layer's own product
    monkeypatch.setattr(mv, "_faster", {})
    monkeypatch.setattr(mv, "_seconds", lambda fn: (fn(), next(costs))[1])
    layer = nn.Linear(64, 32)
    assert layer.weight.requires_grad
    assert mv.faster_here(layer) == (ours < theirs)


def test_the_layers_forwards_read_the_weights_they_have_now(kernels):
    """The kernel forwards are made once per model; a weight replaced afterwards (a model moved, or loaded
    again) is the one they use."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 16))
    x = torch.randn(1, 32)
    with torch.inference_mode(), mv.decoding_with_matvec(model):
        model(x)
    model[0].weight = nn.Parameter(torch.randn(16, 32))
    with torch.inference_mode():
        expected = model(x)
        with mv.decoding_with_matvec(model):
            assert torch.allclose(model(x), expected, atol=1e-5)


def test_the_ninja_installed_with_tinygpt_is_found_without_an_activated_environment(monkeypatch):
    """`.venv/bin/tinygpt` runs with the environment's bin folder off PATH: the build still finds its ninja."""
    import os
    import shutil

    ninja = pytest.importorskip("ninja")  # a dependency of tinygpt
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("ninja") is None
    with mv.ninja_on_path():
        assert shutil.which("ninja") == os.path.join(ninja.BIN_DIR, "ninja")
    assert os.environ["PATH"] == "/nonexistent"
