"""Hugging Face Llama in and out, offline on tiny random models: a modern GPT exports as LlamaForCausalLM
(Qwen3ForCausalLM with QK-norm) with equal logits in fp32 and imports back equal; a random Llama made by
transformers imports with equal logits; what Llama cannot express is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_fixtures import no_leftovers, small_bpe
from tinygpt.training.checkpoint import save_checkpoint
from tinygpt.config import MODEL_KEYS, PRESETS, ModelConfig
from tinygpt.interop.common import HFError
from tinygpt.interop.convert import export_hf, import_hf
from tinygpt.interop.llama import layer_keys, llama_config
from tinygpt.models import build_model
from tinygpt.training.run import load_checkpoint
from tinygpt.tokenizers.interop import save_hf

transformers = pytest.importorskip("transformers")
MODERN = {k: v for k, v in PRESETS["modern"].items() if k in MODEL_KEYS}


def _modern_run(tmp_path: Path, tok, **kw) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**MODERN, **dict(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32,
                                          rope_theta=500.0), **kw})
    model = build_model(cfg).eval()
    with torch.no_grad():  # gains start at one: randomise them so a swapped norm would show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model, save_checkpoint(tmp_path / "run" / "best", model, tok, {})


def _logits(model, idx) -> torch.Tensor:
    with torch.no_grad():
        out = model(idx)
    return out[0] if isinstance(out, tuple) else out.logits


@pytest.mark.parametrize("options, arch", [({}, "LlamaForCausalLM"),
                                           ({"qk_norm": False, "tie_embeddings": True}, "LlamaForCausalLM"),
                                           ({"qk_norm": True}, "Qwen3ForCausalLM")])
def test_modern_gpt_exports_as_llama_with_equal_logits_and_imports_back(tmp_path, options, arch):
    tok = small_bpe()
    model, _ = _modern_run(tmp_path, tok, **{"qk_norm": False, **options})
    res = export_hf(tmp_path / "run", tmp_path / "exported")
    assert res.files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported", dtype=torch.float32).eval()
    assert type(back).__name__ == arch
    idx = torch.randint(0, tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    ours = _logits(model, idx)
    assert ours.std() > 0.1 and torch.allclose(ours, _logits(back, idx), atol=1e-5, rtol=0)
    imported = import_hf(tmp_path / "exported", tmp_path / "imported")
    assert imported.format == arch.replace("ForCausalLM", "")
    again, tok2, _ = load_checkpoint(tmp_path / "imported")
    assert again.config == model.config and tok2.encode("The fox") == tok.encode("The fox")
    assert torch.allclose(_logits(again, idx), ours, atol=1e-6, rtol=0)


def test_a_random_llama_made_by_transformers_imports_with_equal_logits(tmp_path):
    tok = small_bpe()
    cfg = ModelConfig(**{**MODERN, "qk_norm": False, "vocab_size": tok.vocab_size, "block_size": 16, "n_layer": 2,
                         "n_head": 4, "n_embd": 32})
    torch.manual_seed(1)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_config(cfg, None))).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    save_hf(tok, tmp_path / "hf" / "tokenizer.json")
    assert import_hf(tmp_path / "hf", tmp_path / "imported").format == "Llama"
    ours, _, _ = load_checkpoint(tmp_path / "imported")
    idx = torch.randint(0, tok.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(_logits(ours, idx), _logits(hf, idx), atol=1e-5, rtol=0)
    assert set(layer_keys(cfg)) == {n for n in hf.state_dict()}  # the table covers every Llama weight, no more


@pytest.mark.parametrize("options, match", [
    ({"bias": True}, "with biases \\(Llama's layers have none\\)"),
    ({"norm": "layernorm"}, "LayerNorm \\(Llama's norm is RMSNorm\\)"),
    ({"position": "learned"}, "learned position embeddings"),
    ({"activation": "gelu"}, "a gelu MLP \\(Llama's MLP is SwiGLU\\)"),
    ({"activation": "relu2"}, "a relu2 MLP"),
])
def test_export_refuses_what_llama_cannot_express(tmp_path, options, match):
    _modern_run(tmp_path, small_bpe(), **options)
    with pytest.raises(HFError, match=match) as e:
        export_hf(tmp_path / "run", tmp_path / "exported")
    assert "\n" not in str(e.value) and no_leftovers(tmp_path, tmp_path / "exported")


@pytest.mark.parametrize("change, match", [({"num_key_value_heads": 1}, "grouped-query attention"),
                                           ({"intermediate_size": 64}, "intermediate_size 64"),
                                           ({"rms_norm_eps": 1e-5}, "rms_norm_eps"),
                                           ({"hidden_act": "gelu"}, "hidden_act 'gelu'")])
def test_import_refuses_llamas_we_do_not_compute(tmp_path, change, match):
    _modern_run(tmp_path, small_bpe(), qk_norm=False)
    export_hf(tmp_path / "run", tmp_path / "exported")
    path = tmp_path / "exported" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(HFError, match=match) as e:
        import_hf(tmp_path / "exported", tmp_path / "imported")
    assert "\n" not in str(e.value) and not (tmp_path / "imported").exists()
