"""Weight-only int8 and bf16 weights (models/quantize.py): the quantizer's known answer, each int8 layer within
the error its rounding allows, PyTorch's int8 kernel against the dequantize-then-multiply reference, whole models
(GPT-2's and the modern block) close to fp32, the fp32 model left alone, training refused, generation through
the KV cache, `--quantize` on sample, chat, eval and serve, and bench/quantize_quality.py's agreement figures."""
from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import train_tiny
from tinygpt import GPT, ModelConfig
from tinygpt.generation.generate import generate, generate_text
from tinygpt.models.quantize import (Int8Linear, QuantizedError, int8_kernel_runs, int8_matmul,
                                     int8_matmul_reference, quantize, quantize_int8, quantized_mode)
from tinygpt.training.run import load_checkpoint

U_BF16 = 2.0 ** -8  # bf16's unit roundoff: 8 bits of precision, so rounding moves a number by at most 2^-8 of it
MODERN = dict(norm="rmsnorm", activation="swiglu", position="rotary", qk_norm=True, tie_embeddings=False, bias=False)


def tiny(seed: int = 0, **options) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=65, **options)).eval()


def linear(n_in: int, n_out: int, seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out, bias=bias)


# --- one layer -------------------------------------------------------------------------------------------

def test_quantize_int8_known_answer():
    q, s = quantize_int8(torch.tensor([[0.5, -1.0], [0.0, 0.0], [2.54, 0.01]]))
    assert q.dtype == torch.int8 and q.tolist() == [[64, -127], [0, 0], [127, 0]]
    assert torch.allclose(s, torch.tensor([1 / 127, 1.0, 2.54 / 127]))


def test_int8_layer_is_within_half_a_step_of_fp32():
    """Every weight moves by at most s/2 (s = its row's absmax / 127), so each output moves by at most
    sum_k |x_k| * s/2: the reference path is checked against that exact bound (plus fp32 rounding)."""
    lin = linear(48, 20)
    layer = Int8Linear.from_linear(lin)
    layer.reference = True
    x = torch.randn(5, 7, 48)
    with torch.no_grad():
        err = (layer(x) - lin(x)).abs()
    bound = x.abs().sum(-1, keepdim=True) * layer.scales / 2 + 1e-5
    assert (err <= bound).all()
    assert (layer.dequantized() - lin.weight).abs().le(layer.scales[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_kernel_agrees_with_the_reference(rows):
    """The kernel rounds x, the scales and its output to bf16 (each by at most U_BF16 of itself) and adds in
    fp32, so |kernel - reference| <= ((1 + u)^3 - 1) * sum_k |x_k| |w_k| (+ fp32's own rounding)."""
    lin = linear(64, 40, bias=False)
    layer = Int8Linear.from_linear(lin)
    x = torch.randn(rows, 64)
    if not int8_kernel_runs(x, layer.weight):
        pytest.skip("this PyTorch build has no CPU int8 kernel")
    kernel = int8_matmul(x, layer.weight, layer.scales_bf16, layer.scales)
    reference = int8_matmul_reference(x, layer.weight, layer.scales)
    bound = ((1 + U_BF16) ** 3 - 1) * (x.abs() @ layer.dequantized().abs().T) + 1e-5
    assert kernel.dtype == x.dtype and kernel.shape == (rows, 40)
    assert ((kernel - reference).abs() <= bound).all()
    assert not torch.equal(kernel, reference)  # it is the kernel that ran (it rounds; the reference does not)


def test_rows_the_kernel_cannot_read_take_the_reference_path():
    """The CPU kernel reads rows in whole vectors; a layer whose in_features is not a multiple of 16 must never
    reach it (it would read past the rows' ends), and gives the reference's answer exactly."""
    layer = Int8Linear.from_linear(linear(65, 8))
    x = torch.randn(3, 65)
    assert not int8_kernel_runs(x, layer.weight)
    with torch.no_grad():
        y = layer(x)
    assert torch.equal(y, int8_matmul_reference(x, layer.weight, layer.scales) + layer.bias)


def test_a_bf16_view_that_starts_mid_vector_is_read_right():
    """A bf16 input that is a view at an odd offset (a row of a larger tensor) gives the same product as a fresh
    copy of it: the kernel's aligned loads see an aligned copy."""
    layer = Int8Linear.from_linear(linear(32, 16, bias=False))
    big = torch.randn(40).to(torch.bfloat16)
    view = big[3:35].view(1, 32)
    assert torch.equal(layer(view), layer(view.clone()))


# --- whole models ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, MODERN], ids=["gpt2", "modern"])
@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_quantized_logits_are_close_to_fp32(options, mode):
    """Bound: int8 moves each weight by a uniform error of at most s/2, s = absmax/127; a row's absmax is at most
    ~4 standard deviations, so each product's relative error has a standard deviation of at most
    4 / (127 * sqrt(12)) = 0.91 %, plus the kernel's bf16 roundings (3 * 2^-8 / sqrt(3) = 0.68 %); bf16 rounds
    weights and activations (2 * 2^-8 / sqrt(3) = 0.45 %). Independent errors add in quadrature over the 9 products
    a token passes through in 2 layers (sqrt(9) = 3): at most 3.4 % of the logits' RMS; 5 % is asserted."""
    model = tiny(**options)
    q = quantize(model, mode)
    x = torch.randint(0, 65, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(x)[0], q(x)[0].float()
    rel = (a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()
    assert 0 < rel < 0.05, rel
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9  # the most likely next token mostly agrees


def test_every_linear_is_swapped_and_the_tied_head_gets_its_own_int8_copy():
    model = tiny()
    q = quantize(model, "int8")
    int8 = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert len(int8) == 2 * 4 + 1 and not any(isinstance(m, nn.Linear) for m in q.modules())
    assert isinstance(q.lm_head, Int8Linear) and q.lm_head.weight.dtype == torch.int8
    assert q.transformer.wte.weight.dtype == torch.float32  # the input table stays float (one row read per token)
    assert torch.equal(q.lm_head.dequantized(), Int8Linear.from_linear(model.lm_head).dequantized())
    modern = quantize(tiny(**MODERN), "int8")
    assert sum(isinstance(m, Int8Linear) for m in modern.modules()) == 2 * 5 + 1  # SwiGLU's three, attention's two
    assert quantized_mode(q) == "int8" and quantized_mode(model) is None


def test_int8_weights_are_a_quarter_of_fp32():
    model = tiny()
    q = quantize(model, "int8")
    fp32 = sum(m.weight.nbytes for m in model.modules() if isinstance(m, nn.Linear))
    assert sum(m.weight.nbytes for m in q.modules() if isinstance(m, Int8Linear)) * 4 == fp32


def test_a_copy_leaves_the_fp32_model_as_it_was():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for mode in ("int8", "bf16"):
        q = quantize(model, mode)
        assert q is not model
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight and isinstance(model.lm_head, nn.Linear)
    model(torch.zeros(1, 4, dtype=torch.long))  # the fp32 model still trains
    assert quantize(model, None) is model


def test_inplace_converts_the_model_itself():
    model = tiny()
    assert quantize(model, "int8", inplace=True) is model and isinstance(model.lm_head, Int8Linear)
    bf = tiny()
    assert quantize(bf, "bf16", inplace=True) is bf and bf.lm_head.weight.dtype == torch.bfloat16
    assert bf.lm_head.weight is bf.transformer.wte.weight  # bf16 keeps the tie


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_a_quantized_model_refuses_to_train(mode):
    q = quantize(tiny(), mode)
    x = torch.zeros(1, 4, dtype=torch.long)
    q(x)  # inference is fine
    q.train()
    with pytest.raises(QuantizedError, match="cannot be trained") as e:
        q(x, x)
    assert "\n" not in str(e.value)
    assert not any(p.requires_grad for p in q.parameters())


def test_unknown_mode_is_a_one_line_error():
    with pytest.raises(QuantizedError, match="unknown quantization 'int4'.*int8, bf16"):
        quantize(tiny(), "int4")


@pytest.mark.parametrize("options", [{}, MODERN], ids=["gpt2", "modern"])
@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_quantized_generation_through_the_kv_cache_equals_the_uncached_path(options, mode):
    """The KV cache takes the activations' dtype (the embedding's), never the int8 head's."""
    q = quantize(tiny(**options), mode)
    assert q.new_cache(1).k[0].dtype == (torch.bfloat16 if mode == "bf16" else torch.float32)
    prompt = [1, 2, 3, 4]
    cached = generate(q, prompt, 30, temperature=0)  # past block_size (32): the window slides once
    assert cached == generate(q, prompt, 30, temperature=0, use_cache=False)


# --- the command line ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny character run (n_embd 32: the int8 kernel runs)."""
    root = tmp_path_factory.mktemp("quantize")
    return train_tiny(root, "char", 4)


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_sample_quantized_is_the_library_on_the_quantized_model(cli, run, mode):
    model, tok, _ = load_checkpoint(run)
    want = "RO" + "".join(generate_text(quantize(model, mode), tok, "RO", 30, temperature=0)) + "\n"
    code, out, err = cli("sample", run, "--prompt", "RO", "--max_new_tokens", "30", "--greedy", "--quantize", mode,
                         "--device", "cpu")
    assert code == 0 and out == want, err


@pytest.mark.parametrize("command", ["sample", "chat", "eval", "serve"])
def test_an_unknown_quantization_is_a_one_line_error(cli, run, command):
    code, out, err = cli(command, run, "--quantize", "int4")
    assert code == 2 and out == "" and err.startswith("error:") and err.count("\n") == 1
    assert "int4" in err and "int8" in err


def test_eval_quantized_loss_is_close_to_fp32(cli, run):
    """The loss moves (the flag is applied) but by little: the logits move by a few percent at most (above), and
    the loss of a 4-step model on characters moves less than 1 %."""
    losses = {}
    for mode in (None, "int8", "bf16"):
        code, out, err = cli("eval", run, "--json", "--device", "cpu", *(["--quantize", mode] if mode else []))
        assert code == 0, err
        losses[mode] = json.loads(out)["loss"]
    for mode in ("int8", "bf16"):
        assert losses[mode] != losses[None] and abs(losses[mode] - losses[None]) < 0.01 * losses[None], losses


@pytest.mark.slow
def test_chat_quantized_is_chat_session_on_the_quantized_model(cli, tmp_path, monkeypatch, run):
    from tinygpt.generation.chat import ChatSession

    convs = tmp_path / "convs.jsonl"
    convs.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{a}+{b}?"},
                                                      {"role": "assistant", "content": f"{a + b}"}]}) + "\n"
                             for a in range(5) for b in range(5)), encoding="utf-8")
    code, _, err = cli("train", "--init_from", run, "--data", convs, "--out", tmp_path / "chat", "--max_iters=2",
                       "--device=cpu", "--quiet", "--eval_iters=1", "--batch_size=2")
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.StringIO("1+2?\n"))
    code, out, err = cli("chat", tmp_path / "chat", "--max_new_tokens=6", "--device=cpu", "--quantize", "int8")
    assert code == 0, err
    model, tok, _ = load_checkpoint(tmp_path / "chat")
    expected = "".join(ChatSession(quantize(model, "int8"), tok, max_new_tokens=6).reply("1+2?"))
    assert out == " ".join(expected.splitlines()) + "\n"


def test_serve_loads_its_models_quantized(cli, run, monkeypatch):
    pytest.importorskip("starlette")
    import tinygpt.serve.app as app_module

    served = {}
    monkeypatch.setattr(app_module, "serve", lambda app, host, port, ready: served.update(app.state.tinygpt.models))
    code, _, err = cli("serve", run, "--quantize", "int8", "--port", "0")
    assert code == 0, err
    model = served["char"].subject.model
    assert quantized_mode(model) == "int8" and isinstance(model.lm_head, Int8Linear)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_int8_on_cuda_takes_the_reference_path_and_matches_cpu():
    """CUDA builds of PyTorch have no int8 weight kernel: the dequantize-then-multiply path runs there, and gives
    the CPU reference's logits up to fp32 rounding."""
    model = quantize(tiny(), "int8")
    for m in model.modules():
        if isinstance(m, Int8Linear):
            m.reference = True
    x = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        cpu = model(x)[0]
        gpu = model.to("cuda")(x.to("cuda"))[0].cpu()
    assert torch.allclose(cpu, gpu, atol=1e-4, rtol=1e-4)
    assert not int8_kernel_runs(x.to("cuda"), model.lm_head.weight)


# --- bench/quantize_quality.py ------------------------------------------------------------------------------

def _quality_bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "quantize_quality.py"
    spec = importlib.util.spec_from_file_location("quantize_quality", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_quality_agreement_counts_tokens_before_the_first_difference():
    bench = _quality_bench()
    assert bench.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert bench.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert bench.first_difference([1], [1, 2]) == 1
    agr = bench.agreement([[1, 2, 3, 4], [7, 0, 9, 9]], [[1, 2, 3, 4], [7, 8, 9, 9]], forced=7)
    # the second prompt agrees again after its difference: only the token before it counts
    assert (agr.identical, agr.first_difference, agr.forced, agr.total) == (5, [None, 1], 7, 8)
    assert bench.prompt_starts(100, 4, 10) == [0, 22, 45, 67]
    assert bench.first_differences([3, None, 7]) == "3, -, 7"
    assert bench.first_differences([5, None] + list(range(10))) == "median 5, 0 to 9; 1 never"


def test_quality_bench_finds_fp32_in_full_agreement_with_itself(run, capsys):
    """fp32 against itself: loss +0, no difference, forced and text top-1 100 % (the forced reading
    slides its window as generation does)."""
    bench = _quality_bench()
    assert bench.main([str(run), "--tokens", "80", "--prompts", "2", "--prompt_tokens", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split(" | ")[0]: ln for ln in lines if ln.startswith("| ") and "---" not in ln}
    assert set(rows) == {"| weights", "| fp32", "| bf16", "| int8"}
    assert rows["| fp32"].split(" | ")[2:7] == ["+0.00000", "100.0%", "-, -", "100.0%", "100.00%"]
