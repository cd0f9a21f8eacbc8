"""Hugging Face Llama interop: a GPT with the modern options becomes a `LlamaForCausalLM` folder (`export_llama`),
and a local Llama folder becomes a tinygpt checkpoint (`import_llama`). One key table, used in both directions.

Which of our options Llama expresses: rotary positions (`position="rotary"`, any rope_theta), RMSNorm, the SwiGLU
MLP (8/3 · n_embd wide, rounded up to 16: `swiglu_hidden`), no biases, tied or untied embeddings. QK-norm is not
Llama's: a model with it is written as Qwen3 (`Qwen3ForCausalLM`: Llama plus q_norm/k_norm before rotary), the
same table with two more keys. Llama cannot express biases, LayerNorm, learned position embeddings or a GELU or
squared-ReLU MLP; such models are refused in one line, as are Llama files we do not compute (grouped-query
attention, rope scaling, other widths or norm epsilons, sliding windows).

Our attention keeps q, k and v in one matrix c_attn; Llama keeps three. The table says which third each is
(`(our key, part)`); rotary turns the same pairs (i, i + head_size/2) in both, so no rows are reordered.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Union

import torch

from tinygpt.config import ConfigError, ModelConfig
from tinygpt.files import atomic_dir
from tinygpt.generation.generate import end_of_text_id
from tinygpt.interop.common import (ExportResult, HFError, ImportResult, all_finite, check_out, hf_tokenizer_files,
                                    read_hf_tokenizer, read_json)
from tinygpt.interop.tensorfiles import TensorReader, write_safetensors
from tinygpt.models import build_model
from tinygpt.models.modern import RMS_EPS, swiglu_hidden
from tinygpt.training.checkpoint import CONFIG, TOKENIZER, WEIGHTS
from tinygpt.version import __version__

Target = Union[str, tuple[str, int]]  # our key, or (our key, which third of it along rows)

# Hugging Face Llama / Qwen3 key ("{}": the layer number) -> our key. Keys whose target our model lacks
# (q_norm, k_norm without QK-norm; lm_head when tied) are left out for that model.
KEY_MAP: dict[str, Target] = {
    "model.embed_tokens.weight": "transformer.wte.weight",
    "model.layers.{}.input_layernorm.weight": "transformer.h.{}.ln_1.weight",
    "model.layers.{}.self_attn.q_proj.weight": ("transformer.h.{}.attn.c_attn.weight", 0),
    "model.layers.{}.self_attn.k_proj.weight": ("transformer.h.{}.attn.c_attn.weight", 1),
    "model.layers.{}.self_attn.v_proj.weight": ("transformer.h.{}.attn.c_attn.weight", 2),
    "model.layers.{}.self_attn.q_norm.weight": "transformer.h.{}.attn.q_norm.weight",  # Qwen3 only
    "model.layers.{}.self_attn.k_norm.weight": "transformer.h.{}.attn.k_norm.weight",  # Qwen3 only
    "model.layers.{}.self_attn.o_proj.weight": "transformer.h.{}.attn.c_proj.weight",
    "model.layers.{}.post_attention_layernorm.weight": "transformer.h.{}.ln_2.weight",
    "model.layers.{}.mlp.gate_proj.weight": "transformer.h.{}.mlp.c_gate.weight",
    "model.layers.{}.mlp.up_proj.weight": "transformer.h.{}.mlp.c_fc.weight",
    "model.layers.{}.mlp.down_proj.weight": "transformer.h.{}.mlp.c_proj.weight",
    "model.norm.weight": "transformer.ln_f.weight",
    "lm_head.weight": "lm_head.weight",  # only when untied (tie_word_embeddings false)
}
PARTS = 3  # q, k, v: the thirds of c_attn
KINDS = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}  # model_type -> architecture


def layer_keys(cfg: ModelConfig) -> dict[str, Target]:
    """KEY_MAP written out for `cfg`, with only the keys its model has.
    layer_keys(cfg)["model.layers.1.self_attn.k_proj.weight"] == ("transformer.h.1.attn.c_attn.weight", 1)."""
    out: dict[str, Target] = {}
    for hf, ours in KEY_MAP.items():
        if ".q_norm." in hf or ".k_norm." in hf:
            if not cfg.qk_norm:
                continue
        if hf == "lm_head.weight" and cfg.tie_embeddings:
            continue
        for i in range(cfg.n_layer) if "{}" in hf else [None]:
            out[hf.format(i)] = (ours[0].format(i), ours[1]) if isinstance(ours, tuple) else ours.format(i)
    return out


# --- configs ---------------------------------------------------------------------------------------

def llama_gaps(cfg: ModelConfig) -> list[str]:
    """What in `cfg` Llama (or Qwen3, for QK-norm) cannot express; empty when it can be exported."""
    gaps = []
    if cfg.model != "gpt":
        gaps.append(f"model {cfg.model!r} (a rung of the ladder)")
    if cfg.position != "rotary":
        gaps.append("learned position embeddings (Llama rotates queries and keys instead)")
    if cfg.norm != "rmsnorm":
        gaps.append("LayerNorm (Llama's norm is RMSNorm)")
    if cfg.activation != "swiglu":
        gaps.append(f"a {cfg.activation} MLP (Llama's MLP is SwiGLU)")
    if cfg.bias:
        gaps.append("biases (Llama's layers have none)")
    return gaps


def llama_config(cfg: ModelConfig, eos_id: int | None) -> dict[str, Any]:
    """A transformers LlamaConfig (Qwen3Config with QK-norm), as config.json, for our modern GPT."""
    kind = "qwen3" if cfg.qk_norm else "llama"
    doc = {
        "architectures": [KINDS[kind]], "model_type": kind, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd, "intermediate_size": swiglu_hidden(cfg.n_embd), "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_head, "head_dim": cfg.head_size,
        "max_position_embeddings": cfg.block_size, "hidden_act": "silu", "rms_norm_eps": RMS_EPS,
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings, "initializer_range": cfg.init_std, "use_cache": True,
        "bos_token_id": eos_id, "eos_token_id": eos_id, "dtype": "float32",
    }
    if kind == "qwen3":
        doc.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layer)
    return doc


def model_config_from_llama(hf: dict[str, Any], where: str = CONFIG) -> ModelConfig:
    """Our ModelConfig for a Llama or Qwen3 config.json; anything they allow that our GPT does not compute is
    refused in one line."""
    kind = hf.get("model_type")
    if kind not in KINDS:
        raise HFError(f"{where} describes a model of type {kind!r}, not Llama or Qwen3")
    try:
        n_embd, n_head = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        n_layer, vocab = int(hf["num_hidden_layers"]), int(hf["vocab_size"])
        width = int(hf.get("intermediate_size") or 0)
    except (KeyError, TypeError, ValueError) as e:
        raise HFError(f"{where}: missing or invalid {e}") from None
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    head_dim = hf.get("head_dim") or (n_embd // n_head if n_head else 0)
    checks = [
        (hf.get("hidden_act", "silu") == "silu", f"hidden_act {hf.get('hidden_act')!r} (our SwiGLU uses silu)"),
        (hf.get("num_key_value_heads") in (None, n_head), "grouped-query attention (fewer key/value heads)"),
        (head_dim * n_head == n_embd, f"head_dim {head_dim} × {n_head} heads ≠ hidden_size {n_embd}"),
        (width == swiglu_hidden(n_embd), f"intermediate_size {width} (ours is {swiglu_hidden(n_embd)} for "
                                         f"hidden_size {n_embd})"),
        (math.isclose(float(hf.get("rms_norm_eps", RMS_EPS)), RMS_EPS, rel_tol=1e-6),
         f"rms_norm_eps {hf.get('rms_norm_eps')} (ours is {RMS_EPS})"),
        (rope.get("rope_type", rope.get("type", "default")) == "default", "rope scaling"),
        (not hf.get("attention_bias") and not hf.get("mlp_bias"), "biases"),
        (not hf.get("use_sliding_window"), "sliding-window attention"),
    ]
    for ok, what in checks:
        if not ok:
            raise HFError(f"{where}: {what} is not supported")
    try:
        return ModelConfig(model="gpt", vocab_size=vocab, block_size=int(hf.get("max_position_embeddings", 2048)),
                           n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0, bias=False,
                           init_std=float(hf.get("initializer_range", 0.02)), activation="swiglu",
                           position="rotary", rope_theta=theta, norm="rmsnorm", qk_norm=kind == "qwen3",
                           tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    except (ConfigError, TypeError, ValueError) as e:
        raise HFError(f"{where}: {e}") from None


# --- export ----------------------------------------------------------------------------------------

def export_llama(model: torch.nn.Module, tok: Any, ckpt: Path, out: Path) -> ExportResult:
    """Write `model` (a modern GPT; checked with llama_gaps by the caller) and its tokenizer as a folder that
    `AutoModelForCausalLM.from_pretrained` loads offline. convert.export_hf calls this for non-GPT-2 models."""
    cfg: ModelConfig = model.config
    tok_docs = hf_tokenizer_files(tok, cfg.block_size, str(ckpt))
    ours = model.state_dict()
    table = layer_keys(cfg)
    specs = []
    for hf, target in table.items():
        key, part = target if isinstance(target, tuple) else (target, None)
        shape = tuple(ours[key].shape)
        specs.append((hf, torch.float32, shape if part is None else (shape[0] // PARTS, *shape[1:])))

    def converted(hf: str) -> torch.Tensor:
        target = table[hf]
        if isinstance(target, tuple):
            return ours[target[0]].detach().chunk(PARTS, dim=0)[target[1]].to(torch.float32).contiguous()
        return ours[target].detach().to(torch.float32)

    with atomic_dir(out) as tmp:
        write_safetensors(tmp / "model.safetensors", specs, converted, metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(llama_config(cfg, end_of_text_id(tok)), indent=2),
                                         encoding="utf-8")
        for name, doc in tok_docs.items():
            (tmp / name).write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
    return ExportResult(out, ckpt, files)


# --- import ----------------------------------------------------------------------------------------

def import_llama(folder: str | Path, out: str | Path) -> ImportResult:
    """Turn a local Llama (or Qwen3) folder into a tinygpt checkpoint at `out`: every check first, then one
    tensor at a time into a temporary directory renamed into place (a failure leaves nothing behind)."""
    folder, out = Path(folder), Path(out)
    check_out(out)
    hf_cfg = read_json(folder / "config.json")
    cfg = model_config_from_llama(hf_cfg, str(folder / "config.json"))
    kind = KINDS[hf_cfg["model_type"]].replace("ForCausalLM", "")
    tok, tok_files = read_hf_tokenizer(folder)
    if tok.vocab_size != cfg.vocab_size:
        raise HFError(f"{folder}: the model has {cfg.vocab_size} token embeddings but the tokenizer "
                      f"({tok_files}) has {tok.vocab_size} tokens; they must be equal")
    table = layer_keys(cfg)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    with TensorReader(folder) as reader:
        names = set(reader.names())
        if cfg.tie_embeddings:
            names.discard("lm_head.weight")  # a tied head some files store anyway
        extra = sorted(names - set(table))
        if extra:
            raise HFError(f"{folder} holds an unexpected tensor {extra[0]} (config.json says {cfg.n_layer} layers "
                          f"of {kind})")
        missing = [hf for hf in table if hf not in names]
        if missing:
            raise HFError(f"{folder} has no tensor {missing[0]}")
        sources: dict[str, list[str]] = {}
        for hf, target in table.items():
            key, part = target if isinstance(target, tuple) else (target, None)
            want = expected[key] if part is None else (expected[key][0] // PARTS, *expected[key][1:])
            if tuple(reader.shape(hf)) != tuple(want):
                raise HFError(f"{folder}: tensor {hf} has shape {list(reader.shape(hf))} but config.json implies "
                              f"{list(want)}")
            sources.setdefault(key, [None] * PARTS if part is not None else [None])[part or 0] = hf
        keys = [k for k in expected if k in sources]  # our order
        specs = [(k, torch.float32, expected[k]) for k in keys]

        def converted(ours: str) -> torch.Tensor:
            parts = [reader.get(hf) for hf in sources[ours]]
            for hf, t in zip(sources[ours], parts):
                if not all_finite(t):
                    raise HFError(f"{folder}: tensor {hf} holds non-finite numbers (a damaged file?)")
            return torch.cat(parts, dim=0).to(torch.float32) if len(parts) > 1 else parts[0].to(torch.float32)

        meta = {"tinygpt_version": __version__, "model": dataclasses.asdict(cfg), "tokenizer": tok.kind,
                "imported_from": {"path": str(folder.resolve()), "format": f"Hugging Face {kind}",
                                  "weights": [f.name for f in reader.files], "tokenizer": tok_files}}
        with atomic_dir(out) as tmp:
            write_safetensors(tmp / WEIGHTS, specs, converted, metadata={"format": "pt"})
            (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
            tok.save(tmp / TOKENIZER)
        files = [f.name for f in reader.files]
    n_params = sum(math.prod(s) for _, _, s in specs)
    return ImportResult(out, cfg, n_params, files, tok_files, kind)


__all__ = ["KEY_MAP", "KINDS", "layer_keys", "llama_gaps", "llama_config", "model_config_from_llama",
           "export_llama", "import_llama"]
